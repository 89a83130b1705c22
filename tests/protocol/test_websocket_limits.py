"""What one WebSocket may make the server hold, and the framing rules it must follow, on both
stacks (ASGI under uvicorn, and the native protocol), over real connections.

Clients here that must misbehave (never read, flood pings, send frames a library refuses to
send) are raw sockets speaking RFC 6455 by hand. What the server holds for a connection is
measured on the server's own objects (they live in this process): the bytes waiting in the
transports' write buffers and in our sockets' queues of reply frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import random
import socket as socketlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import websockets

from starlette_cometd import LongPollingServiceContextBuilder
from starlette_cometd.transports.asgi_websocket import WebSocketConnection
from starlette_cometd.transports.native_websocket import NativeWebSocket
from starlette_cometd.transports.ws_frames import FrameError, FrameReader
from support import fuzz
from support.client_steps import until
from support.servers import ServeFactory, Server

MiB = 1024 * 1024
DEFAULT_BACKLOG = 4 * MiB
TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA
UPGRADE = (
    b"GET /cometd HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
    b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n"
)
HANDSHAKE = json.dumps(
    [{"channel": "/meta/handshake", "supportedConnectionTypes": ["websocket"]}]
).encode()


def client_frame(
    opcode: int, payload: bytes, fin: bool = True, mask: bytes = b"\x1f\x2e\x3d\x4c"
) -> bytes:
    """One masked client frame."""
    first = (0x80 if fin else 0) | opcode
    length = len(payload)
    if length < 126:
        head = bytes((first, 0x80 | length))
    elif length < 65536:
        head = bytes((first, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((first, 0x80 | 127)) + length.to_bytes(8, "big")
    masked = (
        bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        if length < 4096
        else _mask(payload, mask)
    )
    return head + mask + masked


def _mask(payload: bytes, mask: bytes) -> bytes:
    repeated = (mask * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(payload), "big"
    )


async def read_frame(reader: asyncio.StreamReader, timeout: float = 10) -> tuple[int, bytes]:
    """One unmasked server frame: (opcode, payload)."""
    head = await asyncio.wait_for(reader.readexactly(2), timeout)
    assert not head[1] & 0x80, "server frames are not masked"
    length = head[1] & 0x7F
    if length == 126:
        length = int.from_bytes(await reader.readexactly(2), "big")
    elif length == 127:
        length = int.from_bytes(await reader.readexactly(8), "big")
    payload = await asyncio.wait_for(reader.readexactly(length), timeout)
    return head[0] & 0x0F, payload


async def read_close(reader: asyncio.StreamReader, timeout: float = 10) -> int:
    """Skips frames until the server's close; returns its code."""
    while True:
        opcode, payload = await read_frame(reader, timeout)
        if opcode == CLOSE:
            return int.from_bytes(payload[:2], "big")


@asynccontextmanager
async def raw_socket(
    server: Server, receive_buffer: int | None = None
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A WebSocket opened by hand; ``receive_buffer`` shrinks the client's kernel buffer, so
    that a client that does not read stops taking bytes soon."""
    sock = socketlib.socket()
    if receive_buffer is not None:
        sock.setsockopt(socketlib.SOL_SOCKET, socketlib.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        writer.write(UPGRADE)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 101 "), head
        yield reader, writer
    finally:
        writer.transport.abort()


def held_bytes(server: Server) -> int:
    """What the server holds for its WebSockets' clients: bytes in the transports' write
    buffers and reply frames queued in our sockets."""
    total = 0
    for sock in list(server.context._sockets):
        if isinstance(sock, NativeWebSocket):
            transport = sock._transport
            if transport is not None:
                total += transport.get_write_buffer_size()
            total += sum(len(f) for f in sock._pending or () if isinstance(f, bytes))
        elif isinstance(sock, WebSocketConnection):
            total += sum(len(f) for f in sock._frames if isinstance(f, bytes))
    # Under plain ASGI, uvicorn's own WebSocket protocols hold the transports.
    for obj in gc.get_objects():
        if type(obj).__name__ == "WebSocketsSansIOProtocol":
            transport = getattr(obj, "transport", None)
            if transport is not None and not transport.is_closing():
                total += transport.get_write_buffer_size()
    return total


async def settled(server: Server, seconds: float = 8) -> int:
    """Waits until what the server holds stops growing (the server has stopped reading a
    flood), within ``seconds``; returns the largest figure seen."""
    deadline = time.monotonic() + seconds
    peak, last, steady = 0, -1, 0
    while time.monotonic() < deadline and steady < 5:
        await asyncio.sleep(0.1)
        now = held_bytes(server)
        peak = max(peak, now)
        steady = steady + 1 if now == last else 0
        last = now
    return peak


def amplifying_batch(size: int) -> bytes:
    """A batch of empty messages, each answered by an error far longer than itself."""
    count = size // 3
    return b"[" + b",".join([b"{}"] * count) + b"]"


async def send_unread_batches(writer: asyncio.StreamWriter, count: int, size: int) -> None:
    body = amplifying_batch(size)
    for _ in range(count):
        writer.write(client_frame(TEXT, body))
    # The server may stop reading: the client's buffer holds the rest, which is fine.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(writer.drain(), 2)


def stack(request: pytest.FixtureRequest) -> str:
    """Which stack the ``serve`` fixture runs this test on: "asgi" or "native"."""
    name: str = request.node.callspec.params["serve"]
    return name


async def healthy_roundtrip(server: Server) -> None:
    """A well-behaved client still handshakes over its own socket."""
    url = server.ip_url.replace("http://", "ws://")
    async with websockets.connect(url, open_timeout=5) as ws:
        await ws.send(HANDSHAKE.decode())
        [reply] = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert reply["successful"] is True


# --- Items 6 and 10: what a client that does not read can make the server hold ------------


async def test_unread_replies_are_bounded_in_bytes(serve: ServeFactory) -> None:
    """40 batches of 100 kB, each answered by about 2 MB of errors, from a client that never
    reads: the server holds at most its backlog budget plus one reply, not every reply."""
    server = await serve()
    reply_size = 2 * MiB  # about 20 bytes of error per 1 byte of "{}," (checked below)
    async with raw_socket(server, receive_buffer=4096) as (reader, writer):
        await send_unread_batches(writer, 40, 100_000)
        peak = await settled(server)
        assert peak <= DEFAULT_BACKLOG + 2 * reply_size, f"{peak / MiB:.1f} MiB held"
        # The socket still works once its client reads: the replies come, in full.
        opcode, payload = await read_frame(reader)
        assert opcode == TEXT and len(payload) <= reply_size
        assert json.loads(payload)[0]["successful"] is False
    await healthy_roundtrip(server)


async def test_unread_replies_are_freed_when_the_client_leaves(serve: ServeFactory) -> None:
    """A client sends batches without reading, then drops the connection: the socket ends
    (nothing waits for a writer that is gone, so a shutdown is not held up) and what it held
    is freed."""
    server = await serve()
    for _ in range(2):
        async with raw_socket(server, receive_buffer=4096) as (_, writer):
            # More replies than the 64 frames the ASGI reader once waited on a writer for.
            await send_unread_batches(writer, 80, 20_000)
            await settled(server, 3)
            assert server.context._sockets
    await until(lambda: not server.context._sockets, "every socket has ended", 5)
    assert held_bytes(server) == 0
    await healthy_roundtrip(server)


# Native only: under plain ASGI uvicorn answers pings itself, out of the application's reach.
@pytest.mark.parametrize("serve", ["native"], indirect=True)
async def test_ping_flood_from_a_client_that_does_not_read(serve: ServeFactory) -> None:
    """Pongs are output like any other: a client flooding pings without reading gets at most
    the latest pong while its socket is backed up, and the server holds little."""
    server = await serve()
    ping = client_frame(PING, b"p" * 125)
    async with raw_socket(server, receive_buffer=4096) as (reader, writer):
        deadline = time.monotonic() + 5
        sent = 0
        while sent < 200_000 and time.monotonic() < deadline:
            writer.write(ping * 2000)
            sent += 2000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(writer.drain(), 1)
        peak = await settled(server, 4)
        assert peak <= MiB, f"{peak / MiB:.1f} MiB held after {sent} pings"
        # Once the client reads, its pongs come (some coalesced), and the socket still works.
        opcode, payload = await read_frame(reader)
        assert (opcode, payload) == (PONG, b"p" * 125)
    await healthy_roundtrip(server)


async def test_messages_over_max_body_size_close_with_1009(serve: ServeFactory) -> None:
    server = await serve(LongPollingServiceContextBuilder().max_body_size(1000))
    url = server.ip_url.replace("http://", "ws://")
    async with websockets.connect(url, open_timeout=5, max_size=None) as ws:
        await ws.send(json.dumps([{"channel": "/meta/handshake", "data": "x" * 2000}]))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    async with websockets.connect(url, open_timeout=5) as ws:
        await ws.send(HANDSHAKE.decode())  # at the limit's right side: served
        [reply] = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert reply["successful"] is True


# --- Item 12: an oversized frame gets its 1009 close, not a reset -------------------------


async def test_oversized_frame_gets_its_close_not_a_reset(serve: ServeFactory) -> None:
    """A 4 MB frame over a 1 MB limit: the client, still sending it, reads the 1009 close."""
    server = await serve()
    async with raw_socket(server) as (reader, writer):
        frame = client_frame(TEXT, b"[" + b" " * (4 * MiB) + b"]")

        async def send_it() -> None:
            with contextlib.suppress(ConnectionError):
                for start in range(0, len(frame), 65536):
                    writer.write(frame[start : start + 65536])
                    await writer.drain()

        sending = asyncio.get_running_loop().create_task(send_it())
        try:
            assert await read_close(reader) == 1009
        finally:
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sending
    await healthy_roundtrip(server)


# --- Item 15: RFC 6455's rules on text and close frames ------------------------------------


async def expect_close(server: Server, *frames: bytes) -> int:
    async with raw_socket(server) as (reader, writer):
        for frame in frames:
            writer.write(frame)
        return await read_close(reader)


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return code.to_bytes(2, "big") + reason


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535])
async def test_close_codes_that_may_not_be_sent_close_with_1002(
    serve: ServeFactory, code: int
) -> None:
    server = await serve()
    assert await expect_close(server, client_frame(CLOSE, close_payload(code))) == 1002


async def test_close_and_text_frames_follow_rfc_6455(
    serve: ServeFactory, request: pytest.FixtureRequest
) -> None:
    server = await serve()
    # On the ASGI stack these rules are uvicorn's (its websockets library answers 1007 for a
    # close reason that is not UTF-8, 1002 for a bad fragment): either failure code will do.
    native = stack(request) == "native"
    invalid = {1002, 1007}
    # A close payload of one byte, or a reason that is not UTF-8: 1002.
    assert await expect_close(server, client_frame(CLOSE, b"\x03")) == 1002
    bad_reason = await expect_close(server, client_frame(CLOSE, close_payload(1000, b"\xff")))
    assert bad_reason == 1002 if native else bad_reason in invalid
    # Codes a peer may send are echoed.
    for code in (1000, 1001, 1003, 1007, 1011, 1014, 3000, 4999):
        assert await expect_close(server, client_frame(CLOSE, close_payload(code, b"bye"))) == code
    # A text message that is not UTF-8 (whole, or only once its fragments are joined): 1007.
    assert await expect_close(server, client_frame(TEXT, b'["\xff"]')) == 1007
    euro = "€".encode()
    split = [client_frame(TEXT, b'["' + euro[:1], fin=False), client_frame(0, euro[1:2])]
    cut_short = await expect_close(server, *split, client_frame(0, b'"]'))
    assert cut_short == 1007 if native else cut_short in invalid
    # A character split across fragments is fine when the message is whole.
    async with raw_socket(server) as (reader, writer):
        body = json.dumps([{"channel": "/meta/handshake", "ext": {"€": 1}}], ensure_ascii=False)
        data = body.encode()
        cut = data.index(euro) + 1
        writer.write(client_frame(TEXT, data[:cut], fin=False) + client_frame(0, data[cut:]))
        opcode, payload = await read_frame(reader)
        assert opcode == TEXT and json.loads(payload)[0]["channel"] == "/meta/handshake"


# --- Fuzzing the framing ---------------------------------------------------------------------

ALLOWED_CLOSE = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}


def random_frames(rng: random.Random) -> bytes:
    """A few frames, valid or mutated: random opcodes, bits, lengths, payloads, truncation."""
    out = bytearray()
    for _ in range(rng.randint(1, 6)):
        opcode = rng.choice([0, 1, 1, 1, 2, 3, 8, 9, 9, 10, 11, 15])
        payload_kind = rng.random()
        if payload_kind < 0.3:
            payload = json.dumps([{"channel": "/meta/handshake"}]).encode()
        elif payload_kind < 0.5:
            payload = rng.randbytes(rng.randint(0, 200))
        elif payload_kind < 0.6:
            payload = close_payload(rng.randint(0, 5000), rng.randbytes(rng.randint(0, 3)))
        else:
            payload = bytes(
                rng.choice(b'[]{}":,\xc3\xa9\xff ab') for _ in range(rng.randint(0, 300))
            )
        frame = bytearray(client_frame(opcode, payload, fin=rng.random() < 0.8))
        for _ in range(rng.choice([0, 0, 1, 2])):
            frame[rng.randrange(len(frame))] ^= 1 << rng.randrange(8)
        if rng.random() < 0.1:
            frame = frame[: rng.randrange(len(frame) + 1)]
        out += frame
    return bytes(out)


async def test_fuzzed_frames(serve: ServeFactory, caplog: pytest.LogCaptureFixture) -> None:
    """Seeded random and mutated frames for a few seconds: every socket answers or closes with
    a code a server may send, nothing raises on the server, and a healthy client on its own
    socket keeps being served."""
    server = await serve(LongPollingServiceContextBuilder().max_body_size(4096))
    seed = fuzz.seed()
    rng = random.Random(seed)
    caplog.set_level(logging.ERROR)
    url = server.ip_url.replace("http://", "ws://")
    deadline = time.monotonic() + fuzz.seconds(3.0)
    rounds = 0
    async with websockets.connect(url, open_timeout=5) as healthy:
        while time.monotonic() < deadline:
            data = random_frames(rng)
            async with raw_socket(server) as (reader, writer):
                writer.write(data)
                with contextlib.suppress(
                    TimeoutError, asyncio.IncompleteReadError, ConnectionError
                ):
                    while True:
                        opcode, payload = await read_frame(reader, 0.3)
                        assert opcode in (TEXT, CLOSE, PONG), (seed, rounds, opcode)
                        if opcode == CLOSE:
                            code = int.from_bytes(payload[:2], "big") if payload else 1000
                            assert code in ALLOWED_CLOSE or 3000 <= code < 5000, (seed, rounds)
                            break
            rounds += 1
            if rounds % 20 == 0:
                await healthy.send(HANDSHAKE.decode())
                [reply] = json.loads(await asyncio.wait_for(healthy.recv(), 5))
                assert reply["successful"] is True
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, (seed, [r.getMessage() for r in errors])
    assert rounds > 20


def test_fuzzed_bytes_into_the_frame_reader() -> None:
    """Random bytes in random slices: the reader yields messages or raises FrameError, never
    anything else, and never holds more than its limit in a message."""
    rng = random.Random(7)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        reader = FrameReader(1000)
        data = random_frames(rng) if rng.random() < 0.7 else rng.randbytes(rng.randint(0, 400))
        try:
            while data:
                cut = rng.randint(1, len(data))
                reader.feed(data[:cut])
                data = data[cut:]
                while (item := reader.next()) is not None:
                    opcode, payload = item
                    assert opcode in (TEXT, BINARY, CLOSE, PING, PONG)
                    assert len(payload) <= 1000
        except FrameError as error:
            assert error.code in ALLOWED_CLOSE
