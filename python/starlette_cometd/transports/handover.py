"""The bytes the native HTTP protocol hands to uvicorn's own protocol once a connection carries
a request it does not serve itself.

A request read by the native parser is written out again (its head, then its body, re-chunked
when it came chunked: the parser has removed the framing); bytes that arrive between requests
are passed on as they are. Every byte of a request therefore reaches uvicorn either re-framed or
raw, never half of each, so a chunk split across reads cannot be misread and a chunk's data can
never be taken for a request of its own.
"""

from __future__ import annotations

from .http_wire import Header

_CRLF = b"\r\n"


class Forwarder:
    """Bytes waiting for uvicorn's protocol, in order."""

    __slots__ = ("_buffer", "_chunked")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._chunked = False

    @property
    def size(self) -> int:
        return len(self._buffer)

    def head(self, method: bytes, url: bytes, version: str, headers: list[Header]) -> None:
        """A request head the parser read."""
        parts = [method, b" ", url, b" HTTP/", version.encode(), _CRLF]
        self._chunked = False
        for name, value in headers:
            if name == b"transfer-encoding" and b"chunked" in value.lower():
                self._chunked = True
            parts += [name, b": ", value, _CRLF]
        parts.append(_CRLF)
        self._buffer += b"".join(parts)

    def body(self, data: bytes) -> None:
        """A piece of the body the parser read, without its framing: framed again."""
        if self._chunked:
            self._buffer += b"%x\r\n%s\r\n" % (len(data), data)
        else:
            self._buffer += data

    def end(self) -> None:
        """The request the parser read is complete."""
        if self._chunked:
            self._buffer += b"0\r\n\r\n"
            self._chunked = False

    def raw(self, data: bytes) -> None:
        """Bytes the parser did not read: passed on as they are."""
        self._buffer += data

    def take(self) -> bytes:
        data = bytes(self._buffer)
        self._buffer.clear()
        return data
