"""Faults injected into a running server, the same on both stacks (``serve(faults=...)``).

On the ASGI stack a fault is middleware between uvicorn and the CometD app. The native protocol
never calls the ASGI app for what it serves itself, so there a fault sits between the protocol
and its connection's transport instead: every protocol that serves the connection (the native
HTTP one, the native WebSocket it upgrades to, or uvicorn's own after a hand-over) writes
through a :class:`Link` that the fault chooses. A link sees bytes, so :class:`OutputReader`
cuts what the server writes back into whole HTTP responses and WebSocket frames.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from collections import deque
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as AsgiMessage

from starlette_cometd.transports.native_http import CometdHttpProtocol
from starlette_cometd.transports.ws_frames import payload_length

TEXT_FRAME = 0x1
# A close frame with status 1011 (internal error), as a server writes it.
CLOSE_1011 = b"\x88\x02\x03\xf3"


class Faults:
    """One server's faults, on either stack. The base class injects none."""

    def asgi(self, app: ASGIApp) -> ASGIApp:
        """The CometD app as the ASGI stack's uvicorn calls it."""
        return app

    def link(self, transport: asyncio.Transport, protocol: asyncio.BaseProtocol) -> Link:
        """The transport as the native stack's protocols on one connection see it."""
        return Link(transport, protocol)


def with_faults(protocol: type[CometdHttpProtocol], faults: Faults) -> type[CometdHttpProtocol]:
    """``protocol`` (from ``native_http_protocol``) with every connection behind a link of
    ``faults``."""
    attributes = {"faults": faults}
    return type(protocol.__name__, (_FaultyConnection, protocol), attributes)


class _FaultyConnection(CometdHttpProtocol):
    faults: ClassVar[Faults]
    _link: Link

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._link = self.faults.link(cast(asyncio.Transport, transport), self)
        super().connection_made(self._link)

    def data_received(self, data: bytes) -> None:
        self._link.received(data)
        super().data_received(data)


class Link(asyncio.Transport):
    """A connection's real transport, as the native stack's protocols see it: every call goes
    to the real one; subclasses change :meth:`write`. It knows which protocol reads the
    connection now (for flow control), and sees the client's bytes while the native HTTP
    protocol reads them (not once a WebSocket or uvicorn's own protocol does)."""

    def __init__(self, transport: asyncio.Transport, protocol: asyncio.BaseProtocol) -> None:
        super().__init__()
        self.transport = transport
        self.protocol = protocol

    def received(self, data: bytes) -> None:
        """Bytes from the client, just before the native HTTP protocol reads them."""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.transport.write(data)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol
        self.transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.protocol

    def close(self) -> None:
        self.transport.close()

    def abort(self) -> None:
        self.transport.abort()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def pause_reading(self) -> None:
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.transport.resume_reading()

    def is_reading(self) -> bool:
        return self.transport.is_reading()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)

    def get_write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.transport.set_write_buffer_limits(high, low)

    def can_write_eof(self) -> bool:
        return self.transport.can_write_eof()

    def write_eof(self) -> None:
        self.transport.write_eof()


# --- What the server writes, cut into responses and frames ----------------------------------


@dataclass
class Output:
    """One whole HTTP response (``kind="http"``), one WebSocket frame (``"frame"``), or bytes
    that could not be framed (``"raw"``), as the server wrote them."""

    kind: str
    raw: bytes
    head: bytes = b""  # the response's head, lower-cased; or the frame's header
    body: bytes = b""  # the response's body; or the frame's payload
    opcode: int = -1  # frames only


class OutputReader:
    """Cuts the bytes a server writes on one connection into whole HTTP responses and, after a
    101, WebSocket frames. A response without a ``content-length`` (chunked, or read until
    the connection closes) ends the reading: it and everything after it pass as ``"raw"``.
    Where the 101 agreed on ``permessage-deflate`` (uvicorn's own WebSocket does, the native
    one never), a compressed frame's ``body`` is its text, inflated."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.websocket = False
        self._opaque = False
        self._inflater: Any = None  # zlib's decompressor type is not public

    def feed(self, data: bytes | bytearray | memoryview) -> list[Output]:
        if self._opaque:
            return [Output("raw", bytes(data))]
        self._buffer += data
        outputs: list[Output] = []
        while not self._opaque:
            output = self._next_frame() if self.websocket else self._next_response()
            if output is None:
                break
            outputs.append(output)
        if self._opaque and self._buffer:
            outputs.append(Output("raw", bytes(self._buffer)))
            self._buffer.clear()
        return outputs

    def _next_response(self) -> Output | None:
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(buffer[: end + 4]).lower()
        status = int(head.split(b" ", 2)[1])
        length: int | None = 0
        if status == 101:
            self.websocket = True
            if b"permessage-deflate" in head:
                # One decompressor for the connection: the server may keep its context.
                self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        elif status >= 200 and status not in (204, 304):
            length = None
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip() == b"content-length":
                    length = int(value)
        if length is None:
            self._opaque = True
            return None
        size = end + 4 + length
        if len(buffer) < size:
            return None
        raw = bytes(buffer[:size])
        del buffer[:size]
        return Output("http", raw, head, raw[end + 4 :])

    def _next_frame(self) -> Output | None:
        buffer = self._buffer
        header = payload_length(buffer)
        if header is None:
            return None
        length, start = header
        assert not buffer[1] & 0x80, "a server never masks its frames"
        if len(buffer) < start + length:
            return None
        raw = bytes(buffer[: start + length])
        del buffer[: start + length]
        body = raw[start:]
        if raw[0] & 0x40 and self._inflater is not None:  # RSV1: compressed
            body = self._inflater.decompress(body + b"\x00\x00\xff\xff")
        return Output("frame", raw, raw[:start], body, raw[0] & 0x0F)


# --- Replies carrying deliveries, lost ------------------------------------------------------


class LoseDeliveries(Faults):
    """Loses chosen ``/meta/connect`` replies carrying messages on ``channel``: those whose
    ordinal among such replies (from 1) is in ``lose``, counted over the whole server.

    Over HTTP, ``how="500"`` answers HTTP 500 instead, and ``how="cut"`` sends the headers and
    half the body, then the connection closes. Over WebSocket, the socket is closed (code 1011)
    instead of the frame being written, and the server's later writes to that socket are
    dropped, as if the network had gone.
    """

    def __init__(self, lose: set[int], how: str, channel: str) -> None:
        self.lose = lose
        self.how = how
        self.channel = channel
        self.carrying = 0
        #: The data of the messages each lost reply carried.
        self.lost: list[list[Any]] = []

    def should_lose(self, body: bytes | str) -> bool:
        try:
            batch = json.loads(body)
        except ValueError:
            return False
        if not isinstance(batch, list):
            return False
        messages = [m for m in batch if isinstance(m, dict)]
        connect = any(m.get("channel") == "/meta/connect" for m in messages)
        carried = [
            m.get("data")
            for m in messages
            if m.get("channel") == self.channel and "successful" not in m
        ]
        if not (connect and carried):
            return False
        self.carrying += 1
        if self.carrying not in self.lose:
            return False
        self.lost.append(carried)
        return True

    def asgi(self, app: ASGIApp) -> ASGIApp:
        return _LoseOnAsgi(self, app)

    def link(self, transport: asyncio.Transport, protocol: asyncio.BaseProtocol) -> Link:
        return _LosingLink(self, transport, protocol)


class _LoseOnAsgi:
    """:class:`LoseDeliveries` as ASGI middleware."""

    def __init__(self, fault: LoseDeliveries, app: ASGIApp) -> None:
        self.fault = fault
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.app(scope, receive, self._http(send))
        elif scope["type"] == "websocket":
            await self.app(scope, receive, self._websocket(send))
        else:
            await self.app(scope, receive, send)

    def _http(self, send: Send) -> Send:
        start: AsgiMessage | None = None
        gone = False

        async def faulty(message: AsgiMessage) -> None:
            nonlocal start, gone
            if gone:
                return
            if message["type"] == "http.response.start":
                start = message  # held back until the body says what it is
                return
            if message["type"] == "http.response.body" and start is not None:
                body: bytes = message.get("body", b"")
                if not message.get("more_body", False) and self.fault.should_lose(body):
                    gone = True
                    if self.fault.how == "500":
                        text = b"injected fault"
                        headers = [(b"content-length", str(len(text)).encode())]
                        await send(
                            {"type": "http.response.start", "status": 500, "headers": headers}
                        )
                        await send({"type": "http.response.body", "body": text})
                    else:
                        await send(start)
                        half = {"type": "http.response.body", "body": body[: len(body) // 2]}
                        await send({**half, "more_body": True})
                    return
                await send(start)
                start = None
            await send(message)

        return faulty

    def _websocket(self, send: Send) -> Send:
        gone = False

        async def faulty(message: AsgiMessage) -> None:
            nonlocal gone
            if gone:
                return
            if message["type"] == "websocket.send":
                text = message.get("text")
                if text is not None and self.fault.should_lose(text):
                    gone = True
                    await send({"type": "websocket.close", "code": 1011})
                    return
            await send(message)

        return faulty


class _LosingLink(Link):
    """:class:`LoseDeliveries` on one native connection: each response or text frame is held
    back until whole, then written, or lost."""

    def __init__(
        self, fault: LoseDeliveries, transport: asyncio.Transport, protocol: asyncio.BaseProtocol
    ) -> None:
        super().__init__(transport, protocol)
        self.fault = fault
        self._reader = OutputReader()
        self._gone = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        for output in self._reader.feed(data):
            if self._gone:
                return
            if output.kind == "http" and self.fault.should_lose(output.body):
                self._lose_response(output)
            elif (
                output.kind == "frame"
                and output.opcode == TEXT_FRAME
                and self.fault.should_lose(output.body)
            ):
                # Closed with 1011 instead; the client's close ends the connection.
                self._gone = True
                self.transport.write(CLOSE_1011)
            else:
                self.transport.write(output.raw)

    def _lose_response(self, output: Output) -> None:
        if self.fault.how == "500":
            # One whole response for another: the connection stays as the server left it.
            text = b"injected fault"
            close = b"connection: close\r\n" if b"connection: close" in output.head else b""
            head = b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: %d\r\n" % len(text)
            self.transport.write(head + close + b"\r\n" + text)
            return
        # The head and half the body, then the connection is gone.
        self._gone = True
        self.transport.write(output.raw[: len(output.head) + len(output.body) // 2])
        self.transport.close()


# --- A slow link ----------------------------------------------------------------------------


class SlowSockets(Faults):
    """Delays every frame written to WebSockets opened with ``?slow`` by ``delay`` seconds: a
    client on a slow link. The delay is the point: the server must not buffer for it without
    bound, nor slow other clients down."""

    def __init__(self, delay: float = 0.05) -> None:
        self.delay = delay

    def asgi(self, app: ASGIApp) -> ASGIApp:
        delay = self.delay

        async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "websocket" or b"slow" not in scope.get("query_string", b""):
                await app(scope, receive, send)
                return

            async def slow_send(message: AsgiMessage) -> None:
                if message["type"] == "websocket.send":
                    await asyncio.sleep(delay)  # the slow link itself
                await send(message)

            await app(scope, receive, slow_send)

        return wrapped

    def link(self, transport: asyncio.Transport, protocol: asyncio.BaseProtocol) -> Link:
        return _SlowLink(self.delay, transport, protocol)


class _SlowLink(Link):
    """On a socket opened with ``?slow``, once upgraded, each write waits ``delay`` behind the
    one before it, and the protocol is told to pause writing while any write waits, as a real
    transport does when its buffer is full."""

    def __init__(
        self, delay: float, transport: asyncio.Transport, protocol: asyncio.BaseProtocol
    ) -> None:
        super().__init__(transport, protocol)
        self.delay = delay
        self._request_line = bytearray()
        self._slow = False
        self._upgraded = False
        self._waiting: deque[bytes] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False

    def received(self, data: bytes) -> None:
        if b"\r\n" not in self._request_line:
            self._request_line += data
            line = bytes(self._request_line).split(b"\r\n", 1)[0]
            self._slow = b"?slow" in line or b"&slow" in line

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._upgraded = True
        super().set_protocol(protocol)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not (self._slow and self._upgraded):
            self.transport.write(data)
            return
        self._waiting.append(bytes(data))
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.delay, self._trickle)
            cast(asyncio.Protocol, self.protocol).pause_writing()

    def _trickle(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            self._waiting.clear()
            return
        self.transport.write(self._waiting.popleft())
        if self._waiting:
            self._timer = asyncio.get_running_loop().call_later(self.delay, self._trickle)
        elif self._closing:
            self.transport.close()
        else:
            cast(asyncio.Protocol, self.protocol).resume_writing()

    def is_closing(self) -> bool:
        return self._closing or self.transport.is_closing()

    def close(self) -> None:
        # As a real transport: what is written goes out first.
        if self._timer is None:
            self.transport.close()
        else:
            self._closing = True

    def abort(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._waiting.clear()
        self.transport.abort()
