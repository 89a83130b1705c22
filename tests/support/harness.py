"""A harness for the native protocols without sockets: the protocol class that
``native_http_protocol`` makes, constructed as uvicorn constructs it, on a :class:`MockTransport`
that records every write and every call. A test feeds bytes to ``data_received`` by hand, in
whatever pieces it likes, drives ``pause_writing``/``resume_writing`` itself and turns the
real event loop with :func:`turns` where the protocol defers work with ``call_soon``. Nothing
sleeps; every wait is a bounded number of loop turns.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from uvicorn.server import ServerState

from starlette_cometd import (
    CometdRoute,
    LongPollingServiceContext,
    LongPollingServiceContextBuilder,
    RouterBuilder,
    native_http_protocol,
)
from starlette_cometd.transports.native_http import CometdHttpProtocol
from support.bayeux import connect_message
from support.faults import OutputReader

Message = dict[str, Any]
PEER = ("127.0.0.1", 54321)
SERVER = ("127.0.0.1", 8000)


async def turns(count: int = 3) -> None:
    """Lets the loop run ``count`` times: callbacks the protocol scheduled with ``call_soon``
    run, and so do tasks that need a turn or two."""
    for _ in range(count):
        await asyncio.sleep(0)


async def turns_until(condition: Callable[[], bool], what: str, limit: int = 200) -> None:
    """Turns the loop until ``condition`` holds, at most ``limit`` times (for uvicorn's own
    protocol, whose app runs in a task that takes a few turns)."""
    for _ in range(limit):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"not after {limit} loop turns: {what}")


class MockTransport(asyncio.Transport):
    """One connection's transport, by hand. Records what is written and whether reading is
    paused; ``close`` and ``abort`` tell the protocol on the next loop turn, as asyncio's
    transports do; :meth:`reset` is the peer going away at once."""

    def __init__(self) -> None:
        super().__init__()
        self.protocol: asyncio.BaseProtocol | None = None
        self.writes: list[bytes] = []
        self._taken = 0
        self.reading = True
        self.reading_changes: list[bool] = []  # every pause_reading/resume_reading, in order
        self.closing = False
        self.eof = False  # the server shut its write side
        self.aborted = False
        self.lost = False
        self.late_writes: list[bytes] = []  # written after the protocol learnt of the loss

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.eof and not self.lost:
            raise RuntimeError("Cannot call write() after write_eof()")  # as asyncio's
        if self.lost:
            self.late_writes.append(bytes(data))
        else:
            self.writes.append(bytes(data))

    def take(self) -> bytes:
        """Everything written since the last ``take``."""
        data = b"".join(self.writes[self._taken :])
        self._taken = len(self.writes)
        return data

    @property
    def pending(self) -> int:
        """How many writes have not been taken yet."""
        return len(self.writes) - self._taken

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            asyncio.get_running_loop().call_soon(self._lose, None)

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def reset(self) -> None:
        """The peer reset the connection: the protocol hears of it now."""
        self.closing = True
        self._lose(ConnectionResetError("reset by peer"))

    def _lose(self, exc: Exception | None) -> None:
        if not self.lost:
            self.lost = True
            assert self.protocol is not None
            self.protocol.connection_lost(exc)

    def is_closing(self) -> bool:
        return self.closing

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    @property
    def finished(self) -> bool:
        """The server has written its last byte: closed, or shut its write side."""
        return self.closing or self.eof

    def pause_reading(self) -> None:
        self.reading = False
        self.reading_changes.append(False)

    def resume_reading(self) -> None:
        self.reading = True
        self.reading_changes.append(True)

    def is_reading(self) -> bool:
        return self.reading

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None
        return self.protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": PEER, "sockname": SERVER}.get(name, default)

    def get_write_buffer_size(self) -> int:
        return 0


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    raw: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Connection:
    """One client connection to the protocol, driven by hand."""

    def __init__(self, protocol: CometdHttpProtocol) -> None:
        self.transport = MockTransport()
        self.transport.protocol = protocol
        self.http = protocol
        self._reader = OutputReader()
        protocol.connection_made(self.transport)

    @property
    def protocol(self) -> asyncio.Protocol:
        """The protocol reading the connection now (it changes at an upgrade or hand-over)."""
        protocol = self.transport.get_protocol()
        assert isinstance(protocol, asyncio.Protocol)
        return protocol

    def feed(self, data: bytes, piece: int | None = None) -> None:
        """Client bytes to the current protocol: at once, or ``piece`` bytes at a time."""
        step = piece or max(len(data), 1)
        for start in range(0, len(data), step):
            self.protocol.data_received(data[start : start + step])

    def responses(self) -> list[Response]:
        """The whole HTTP responses written since the last call."""
        found: list[Response] = []
        for output in self._reader.feed(self.transport.take()):
            assert output.kind == "http", output
            lines = output.raw[: len(output.head)].decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            found.append(Response(int(lines[0].split()[1]), headers, output.body, output.raw))
        return found

    def response(self) -> Response:
        """The one whole response written since the last call."""
        [response] = self.responses()
        return response


def request_bytes(
    method: str,
    path: str,
    body: bytes = b"",
    *,
    cookie: str | None = None,
    headers: dict[str, str] | None = None,
    version: str = "1.1",
) -> bytes:
    head = f"{method} {path} HTTP/{version}\r\nhost: test\r\n"
    if body or method == "POST":
        head += f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
    if cookie is not None:
        head += f"cookie: BAYEUX_BROWSER={cookie}\r\n"
    for name, value in (headers or {}).items():
        head += f"{name}: {value}\r\n"
    return (head + "\r\n").encode() + body


def post(*messages: Message, cookie: str | None = None, path: str = "/cometd") -> bytes:
    """A Bayeux POST of ``messages``, as bytes."""
    return request_bytes("POST", path, json.dumps(list(messages)).encode(), cookie=cookie)


HANDSHAKE: Message = {
    "channel": "/meta/handshake",
    "version": "1.0",
    "supportedConnectionTypes": ["long-polling", "websocket"],
}


class Harness:
    """A context, its CometD app, and the native protocol class, constructed with uvicorn's
    ``Config`` and ``ServerState`` as uvicorn does. A plain Starlette route, ``/hello``, sits
    beside the endpoint, for requests handed over to uvicorn's own protocol."""

    def __init__(self, builder: LongPollingServiceContextBuilder) -> None:
        self.context: LongPollingServiceContext = builder.build()
        self.app = RouterBuilder().build(self.context)

        async def hello(request: Request) -> PlainTextResponse:
            return PlainTextResponse(f"hello {request.method} {len(await request.body())}")

        starlette = Starlette(
            routes=[
                Route("/hello", hello, methods=["GET", "POST"]),
                CometdRoute("/cometd", self.app),
            ]
        )
        self.config = uvicorn.Config(starlette, lifespan="off", log_level="warning")
        self.config.load()
        self.state = ServerState()
        self.protocol_class = native_http_protocol(self.app, "/cometd")
        self.connections: list[Connection] = []

    def connect(self) -> Connection:
        protocol = self.protocol_class(
            config=self.config,
            server_state=self.state,
            app_state={},
            _loop=asyncio.get_running_loop(),
        )
        connection = Connection(protocol)
        self.connections.append(connection)
        return connection

    async def session(self, connection: Connection | None = None) -> tuple[str, str]:
        """Handshakes and connects once (answered at once) over HTTP; returns the client id
        and the browser cookie."""
        connection = connection or self.connect()
        connection.feed(post(HANDSHAKE))
        handshake = connection.response()
        [reply] = handshake.json()
        assert reply["successful"] is True, reply
        cookie = handshake.headers["set-cookie"].split(";")[0].split("=", 1)[1]
        client_id: str = reply["clientId"]
        connection.feed(post(connect_message(client_id, timeout=0), cookie=cookie))
        [connected] = connection.response().json()
        assert connected["successful"] is True, connected
        return client_id, cookie


@asynccontextmanager
async def native(builder: LongPollingServiceContextBuilder | None = None) -> AsyncIterator[Harness]:
    """A :class:`Harness` for the block; its connections are closed and its context with them."""
    harness = Harness(builder or LongPollingServiceContextBuilder().timeout(5))
    try:
        yield harness
    finally:
        for connection in harness.connections:
            if not connection.transport.lost:
                connection.transport.close()
        await turns()
        await harness.context.close()
        for connection in harness.connections:
            assert connection.transport.late_writes == [], "written after the connection was lost"


# --- WebSocket frames as a client writes them, and as the server writes them ----------------

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's example key
WS_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def upgrade_request(
    path: str = "/cometd", protocols: str | None = None, cookie: str | None = None
) -> bytes:
    """A WebSocket upgrade; ``cookie``: a ``BAYEUX_BROWSER`` value to send with it."""
    headers = {
        "upgrade": "websocket",
        "connection": "Upgrade",
        "sec-websocket-key": WS_KEY,
        "sec-websocket-version": "13",
    }
    if protocols is not None:
        headers["sec-websocket-protocol"] = protocols
    if cookie is not None:
        headers["cookie"] = f"BAYEUX_BROWSER={cookie}"
    return request_bytes("GET", path, headers=headers)


def client_frame(
    opcode: int,
    payload: bytes,
    *,
    final: bool = True,
    masked: bool = True,
    rsv: int = 0,
    mask: bytes | None = None,
) -> bytes:
    """A frame as a client writes it: masked (unless told otherwise), with the shortest
    length encoding."""
    first = (0x80 if final else 0) | rsv | opcode
    length = len(payload)
    if length < 126:
        head = bytes((first, (0x80 if masked else 0) | length))
    elif length < 65536:
        head = bytes((first, (0x80 if masked else 0) | 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((first, (0x80 if masked else 0) | 127)) + length.to_bytes(8, "big")
    if not masked:
        return head + payload
    key = mask or os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def text(*messages: Message) -> bytes:
    """A batch of Bayeux messages in one masked text frame."""
    return client_frame(TEXT, json.dumps(list(messages)).encode())


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """The whole frames in ``data`` (server frames: final, unmasked), as (opcode, payload)."""
    reader = OutputReader()
    reader.websocket = True
    frames = []
    for output in reader.feed(data):
        assert output.kind == "frame" and output.raw[0] & 0x80, "one final frame per message"
        frames.append((output.opcode, output.body))
    return frames


def batches(data: bytes) -> list[list[Message]]:
    """The Bayeux batches in the text frames in ``data``."""
    found = []
    for opcode, payload in server_frames(data):
        assert opcode == TEXT, (opcode, payload)
        found.append(json.loads(payload))
    return found
