"""What every HTTP path writes and reads the same way: the reply headers, the error bodies and
the one pass over a request's raw headers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..cookies import cookie_value

Header = tuple[bytes, bytes]
NO_CACHE: Header = (b"cache-control", b"no-cache, no-store")
JSON_TYPE: Header = (b"content-type", b"application/json;charset=utf-8")
SCRIPT_TYPE: Header = (b"content-type", b"text/javascript;charset=utf-8")
NO_SNIFF: Header = (b"x-content-type-options", b"nosniff")


class BadRequest(Exception):
    """A request refused before it reaches the core, with its status and Bayeux error body."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.body = error_body(error, detail)


def error_body(error: str, detail: str) -> bytes:
    # error and detail are literals of this package, never request data.
    return f'[{{"successful":false,"error":"{error}","detail":"{detail}"}}]'.encode()


def too_large(limit: int) -> BadRequest:
    return BadRequest(
        413, "413::request_too_large", f"the request body is larger than {limit} bytes"
    )


SERVER_STOPPING = error_body("503::server_stopping", "the server is stopping")


def scan_headers(
    headers: Sequence[Header], cookie_name: str
) -> tuple[int | None, str | None, bool]:
    """The declared body length, the browser cookie and whether an ``Expect`` header is
    present, in one pass over the raw headers (the hot path; Starlette's ``Headers`` decodes
    every header on each lookup)."""
    length: int | None = None
    cookie: str | None = None
    expects = False
    for name, value in headers:
        if name == b"content-length" and value.isdigit():
            length = int(value)
        elif name == b"cookie" and cookie is None:
            cookie = cookie_value(value.decode("latin-1"), cookie_name)
        elif name == b"expect":
            expects = True
    return length, cookie, expects


def peer_address(transport: Any) -> str | None:
    """The client's IP address on a connection (``None`` for a Unix socket), for the limit
    on sessions per address."""
    peer = transport.get_extra_info("peername")
    return peer[0] if isinstance(peer, tuple) and peer and isinstance(peer[0], str) else None


def client_address(scope: Any) -> str | None:
    """The client's IP address of an ASGI connection, as the server (or its proxy-headers
    middleware) reports it."""
    client = scope.get("client")
    return client[0] if client else None
