"""CORS for browsers on other origins. The CometD JavaScript client sends its XHRs with
credentials, so a listed origin is echoed with ``Access-Control-Allow-Credentials``; ``*``
admits any other origin, never with credentials."""

from __future__ import annotations

from starlette.datastructures import Headers

Header = tuple[bytes, bytes]

ALLOWED_METHODS = b"POST, GET, OPTIONS"
DEFAULT_ALLOWED_HEADERS = b"content-type"
MAX_AGE = b"86400"


class Cors:
    def __init__(self, origins: tuple[str, ...] | list[str]) -> None:
        self.origins = frozenset(o.rstrip("/") for o in origins if o != "*")
        self.any_origin = "*" in origins

    @property
    def enabled(self) -> bool:
        return bool(self.origins) or self.any_origin

    def headers(self, request: Headers) -> list[Header]:
        """Headers for a response to ``request``; none when it has no allowed ``Origin``."""
        origin = request.get("origin")
        if origin is None or not self.enabled:
            return []
        if origin in self.origins:
            return [
                (b"access-control-allow-origin", origin.encode()),
                (b"access-control-allow-credentials", b"true"),
                (b"vary", b"Origin"),
            ]
        if self.any_origin:
            return [(b"access-control-allow-origin", b"*")]
        return []

    def preflight(self, request: Headers) -> list[Header] | None:
        """Headers answering a preflight ``OPTIONS``, or ``None`` to refuse it."""
        allowed = self.headers(request)
        if not allowed:
            return None
        asked = request.get("access-control-request-headers")
        return [
            *allowed,
            (b"access-control-allow-methods", ALLOWED_METHODS),
            (b"access-control-allow-headers", asked.encode() if asked else DEFAULT_ALLOWED_HEADERS),
            (b"access-control-max-age", MAX_AGE),
        ]
