"""WebSocket framing (RFC 6455) for the native WebSocket: the upgrade reply, server frames, and
a reader that turns client bytes into whole messages and control frames. No extension is
negotiated, so reserved bits are errors."""

from __future__ import annotations

import base64
import hashlib

from .http_wire import Header

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets built without its C speedups
    from websockets.utils import apply_mask

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
# Close codes.
GOING_AWAY, PROTOCOL_ERROR, INVALID_DATA, TOO_BIG, INTERNAL_ERROR = 1001, 1002, 1007, 1009, 1011
# The codes a peer may put in a close frame (RFC 6455 7.4 and the IANA registry): 1004-1006
# and 1015 are reserved or only for reporting, 1016-2999 are unassigned, 3000-4999 are for
# libraries and applications.
_SENDABLE_CODES = frozenset(
    (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014)
)


def upgrade_reply(headers: list[Header], set_cookie: str | None = None) -> bytes | None:
    """The ``101 Switching Protocols`` head for a WebSocket upgrade request (with a
    ``set-cookie`` header, if given), or ``None`` if the request is not one this protocol
    takes (version 13 with a key)."""
    key = version = None
    offered: bytes | None = None
    for name, value in headers:
        if name == b"sec-websocket-key":
            key = value.strip()
        elif name == b"sec-websocket-version":
            version = value.strip()
        elif name == b"sec-websocket-protocol" and offered is None:
            offered = value.split(b",")[0].strip()
    if key is None or version != b"13" or len(key) != 24:
        return None
    accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
    head = [
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n",
        b"sec-websocket-accept: " + accept + b"\r\n",
    ]
    if offered:
        # As on the ASGI path: the client's first subprotocol is echoed.
        head.append(b"sec-websocket-protocol: " + offered + b"\r\n")
    if set_cookie is not None:
        head.append(b"set-cookie: " + set_cookie.encode("latin-1") + b"\r\n")
    head.append(b"\r\n")
    return b"".join(head)


def frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked, final server frame."""
    length = len(payload)
    if length < 126:
        return bytes((0x80 | opcode, length)) + payload
    if length < 65536:
        return bytes((0x80 | opcode, 126)) + length.to_bytes(2, "big") + payload
    return bytes((0x80 | opcode, 127)) + length.to_bytes(8, "big") + payload


def payload_length(buffer: bytes | bytearray) -> tuple[int, int] | None:
    """A frame's payload length and where its header's length fields end (before any mask),
    once the buffer holds them; ``None`` until then."""
    if len(buffer) < 2:
        return None
    length, start = buffer[1] & 0x7F, 2
    if length == 126:
        if len(buffer) < 4:
            return None
        return int.from_bytes(buffer[2:4], "big"), 4
    if length == 127:
        if len(buffer) < 10:
            return None
        return int.from_bytes(buffer[2:10], "big"), 10
    return length, start


def close_frame(code: int) -> bytes:
    return frame(CLOSE, code.to_bytes(2, "big"))


class FrameError(Exception):
    """The client broke the protocol; the socket closes with ``code``."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class FrameReader:
    """Client bytes in, ``(opcode, payload)`` out: data messages with their fragments joined
    (opcode TEXT or BINARY), and control frames as they come. A message larger than
    ``max_size`` is refused before its payload is buffered."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buffer = bytearray()
        self._fragments: list[bytes] | None = None
        self._fragments_opcode = TEXT
        self._fragments_size = 0

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next(self) -> tuple[int, bytes] | None:
        """The next complete message or control frame, or ``None`` until more bytes arrive.
        Raises :class:`FrameError` on a protocol violation."""
        while True:
            parsed = self._next_frame()
            if parsed is None:
                return None
            message = self._assemble(*parsed)
            if message is not None:
                return message

    def _next_frame(self) -> tuple[int, bool, bytes] | None:
        buffer = self._buffer
        header = payload_length(buffer)
        if header is None:
            return None
        length, start = header
        first, second = buffer[0], buffer[1]
        opcode = first & 0x0F
        if first & 0x70 or not second & 0x80:
            # Reserved bits without an extension, or an unmasked client frame.
            raise FrameError(PROTOCOL_ERROR)
        if opcode >= CLOSE and (length > 125 or not first & 0x80):
            raise FrameError(PROTOCOL_ERROR)
        if self._fragments_size + length > self.max_size:
            raise FrameError(TOO_BIG)
        end = start + 4 + length
        if len(buffer) < end:
            return None
        payload = apply_mask(bytes(buffer[start + 4 : end]), bytes(buffer[start : start + 4]))
        del buffer[:end]
        return opcode, bool(first & 0x80), payload

    def _assemble(self, opcode: int, final: bool, payload: bytes) -> tuple[int, bytes] | None:
        if opcode in (TEXT, BINARY):
            if self._fragments is not None:
                raise FrameError(PROTOCOL_ERROR)
            if final:
                return _checked(opcode, payload)
            self._fragments, self._fragments_opcode = [payload], opcode
            self._fragments_size = len(payload)
            return None
        if opcode == CONTINUATION:
            if self._fragments is None:
                raise FrameError(PROTOCOL_ERROR)
            self._fragments.append(payload)
            self._fragments_size += len(payload)
            if not final:
                return None
            body = b"".join(self._fragments)
            self._fragments, self._fragments_size = None, 0
            return _checked(self._fragments_opcode, body)
        if opcode == CLOSE:
            check_close(payload)
            return opcode, payload
        if opcode in (PING, PONG):
            return opcode, payload
        raise FrameError(PROTOCOL_ERROR)


def _checked(opcode: int, message: bytes) -> tuple[int, bytes]:
    """A whole data message; a text one must be UTF-8 (else the socket closes with 1007)."""
    if opcode == TEXT:
        try:
            message.decode()
        except UnicodeDecodeError:
            raise FrameError(INVALID_DATA) from None
    return opcode, message


def check_close(payload: bytes) -> None:
    """A close frame's payload is empty, or a code a peer may send and a UTF-8 reason; anything
    else is a protocol error (1002)."""
    if not payload:
        return
    if len(payload) < 2:
        raise FrameError(PROTOCOL_ERROR)
    code = int.from_bytes(payload[:2], "big")
    if code not in _SENDABLE_CODES and not 3000 <= code < 5000:
        raise FrameError(PROTOCOL_ERROR)
    try:
        payload[2:].decode()
    except UnicodeDecodeError:
        raise FrameError(PROTOCOL_ERROR) from None
