"""The ``BAYEUX_BROWSER`` cookie: reading it from a request and writing its header."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Literal

from starlette.datastructures import Headers


def browser_cookie(headers: Headers, name: str) -> str | None:
    """The value of the browser cookie, if the request carries one."""
    for header in headers.getlist("cookie"):
        value = cookie_value(header, name)
        if value is not None:
            return value
    return None


def cookie_value(header: str, name: str) -> str | None:
    """The value of cookie ``name`` in one ``Cookie`` header."""
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value.strip().strip('"')
    return None


def is_browser_id(value: str) -> bool:
    """Whether ``value`` has the form of the ids the server issues: 40 lowercase hex digits."""
    return len(value) == 40 and all(c in "0123456789abcdef" for c in value)


def new_browser_id() -> str:
    """A fresh cookie value: 160 random bits, in the form of the core's ids."""
    return secrets.token_hex(20)


@dataclass(frozen=True, slots=True)
class CookieOptions:
    """How the ``BAYEUX_BROWSER`` cookie is set."""

    name: str = "BAYEUX_BROWSER"
    path: str = "/"
    same_site: Literal["lax", "strict", "none"] | None = "lax"
    secure: bool = False
    http_only: bool = True

    def header(self, value: str) -> str:
        parts = [f"{self.name}={value}", f"Path={self.path}"]
        if self.http_only:
            parts.append("HttpOnly")
        if self.same_site is not None:
            parts.append(f"SameSite={self.same_site.capitalize()}")
        if self.secure:
            parts.append("Secure")
        return "; ".join(parts)
