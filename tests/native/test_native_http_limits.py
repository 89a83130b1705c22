"""What one connection can make the native HTTP protocol hold, and how it answers what it will
not take: write flow control with a client that never reads, a bounded buffer for requests
waiting behind a held connect, chunked bodies handed to uvicorn intact (no smuggling), a 413
that arrives instead of a reset, read and keep-alive timeouts, and a bound on request heads."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette_cometd import LongPollingServiceContextBuilder
from starlette_cometd.transports.native_http import MAX_FORWARD_BUFFER
from support.bayeux import connect_message
from support.client_steps import until
from support.raw_http import HANDSHAKE, RawConnection, browser_cookie, raw
from support.servers import NativeServer, native_server

# Pauses between writes in this module separate what the server reads in one go: they are the
# point of the tests that use them (a head and part of a chunk in one read, the rest in another).
SEGMENT_GAP = 0.05


@asynccontextmanager
async def native(
    builder: LongPollingServiceContextBuilder | None = None,
) -> AsyncIterator[NativeServer]:
    """The native server, with connects held long enough for what these tests do meanwhile."""
    async with native_server(builder or LongPollingServiceContextBuilder().timeout(20)) as server:
        yield server


async def hold_a_connect(conn: RawConnection) -> str:
    """Handshakes and leaves a connect held on ``conn``; returns the client id."""
    await conn.send(conn.post_bytes("/cometd", HANDSHAKE))
    _, headers, body = await conn.response()
    client_id: str = json.loads(body)[0]["clientId"]
    cookie = browser_cookie(headers)
    connect = json.dumps(
        [{"channel": "/meta/connect", "clientId": client_id, "connectionType": "long-polling"}]
    ).encode()
    await conn.send(conn.post_bytes("/cometd", connect, cookie))
    await conn.response()  # the first connect is answered at once
    await conn.send(conn.post_bytes("/cometd", connect, cookie))
    return client_id


async def test_a_client_that_never_reads_stops_being_served_and_read() -> None:
    # Each request is 64 KiB of empty messages, each answered by an error: 1.1 MB of replies.
    body = b"[" + b",".join([b"{}"] * 21_000) + b"]"
    async with native() as server, raw(server.port) as conn:
        sender = asyncio.ensure_future(conn.send(conn.post_bytes("/cometd", body) * 40))
        await until(lambda: server.server.server_state.total_requests >= 1, "a reply is written")
        await asyncio.sleep(0.5)  # give an unbounded server time to answer everything
        [protocol] = server.protocols()
        served = server.server.server_state.total_requests
        buffered = protocol._transport.get_write_buffer_size() if protocol._transport else 0
        # Replies stop once the socket's buffers are full: nowhere near the 40 (44 MB) asked.
        assert served < 20, served
        assert buffered < 3 * 1_100_000, buffered
        # Once the client reads, every reply arrives, in order.
        statuses = []
        for _ in range(40):
            status, _, reply = await conn.response()
            statuses.append(status)
            assert json.loads(reply)[0]["error"] == "400::channel_missing"
        await asyncio.wait_for(sender, 10)
        assert statuses == [200] * 40


async def test_requests_behind_a_held_connect_are_buffered_within_a_bound() -> None:
    size = 24 * 1024 * 1024
    async with native() as server, raw(server.port) as conn:
        client_id = await hold_a_connect(conn)
        await until(lambda: server.context.stats()["held"] == 1, "the connect is held")
        head = f"POST /hello HTTP/1.1\r\nhost: x\r\ncontent-length: {size}\r\n\r\n".encode()
        chunk = b"x" * (1024 * 1024)
        written = 0

        async def stream() -> None:
            nonlocal written
            await conn.send(head)
            for _ in range(size // len(chunk)):
                await conn.send(chunk)
                written += len(chunk)

        sender = asyncio.ensure_future(stream())
        await asyncio.sleep(1)
        [protocol] = server.protocols()
        forward = protocol._forward
        # The server stopped reading: what it holds for uvicorn stays near the bound, and the
        # client could not push the whole body into it.
        assert forward is not None and forward.size <= MAX_FORWARD_BUFFER + 512 * 1024
        assert written < size, written
        # The held connect is answered, then uvicorn reads the rest and answers it.
        await server.context.send_to_client("/x", client_id, "wake")
        status, _, reply = await conn.response()
        assert status == 200 and json.loads(reply)[0] == {"channel": "/x", "data": "wake"}
        await asyncio.wait_for(sender, 30)
        status, _, reply = await conn.response()
        assert (status, reply) == (200, f"hello POST {size}".encode())


async def send_in_reads(conn: RawConnection, *pieces: bytes) -> None:
    for piece in pieces:
        await conn.send(piece)
        await asyncio.sleep(SEGMENT_GAP)


async def test_a_chunk_split_across_reads_reaches_uvicorn_intact() -> None:
    # Expect: 100-continue sends the endpoint's request to uvicorn; the client does not wait
    # for the 100 and its head arrives with half of the chunk.
    batch = HANDSHAKE
    head = (
        b"POST /cometd HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"expect: 100-continue\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    chunk = b"%x\r\n%s\r\n0\r\n\r\n" % (len(batch), batch)
    async with native() as server, raw(server.port) as conn:
        await send_in_reads(conn, head + chunk[:10], chunk[10:])
        continued = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), 10)
        assert continued.startswith(b"HTTP/1.1 100 "), continued
        status, _, reply = await conn.response()
        assert status == 200
        assert json.loads(reply)[0]["successful"] is True
        assert server.context.stats()["sessions"] == 1


async def test_chunk_data_that_looks_like_a_request_is_not_a_request() -> None:
    smuggled = b"0\r\n\r\nPOST /hello HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n"
    head = b"POST /hello HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
    chunk = b"%x\r\n%s\r\n0\r\n\r\n" % (len(smuggled), smuggled)
    async with native() as server, raw(server.port) as conn:
        # A native request first, so that the upload is handed to uvicorn mid-connection, in
        # the middle of its chunk.
        await conn.send(conn.post_bytes("/cometd", HANDSHAKE))
        await conn.response()
        await send_in_reads(conn, head + chunk[:7], chunk[7:])
        status, _, reply = await conn.response()
        assert (status, reply) == (200, f"hello POST {len(smuggled)}".encode())
        # Exactly one response: the chunk's data was data.
        with contextlib.suppress(TimeoutError):
            extra = await asyncio.wait_for(conn.reader.read(1), 0.5)
            assert extra == b"", extra


async def test_chunked_uploads_beside_the_endpoint_arrive_whole() -> None:
    rng = random.Random(7)
    payload = bytes(rng.getrandbits(8) for _ in range(1_000_000))
    async with native() as server:
        for _ in range(3):
            async with raw(server.port) as conn:
                # A native request first, so the upload is handed over mid-connection.
                await conn.send(conn.post_bytes("/cometd", HANDSHAKE))
                await conn.response()
                pieces = [
                    b"%x\r\n%s\r\n" % (len(payload[i : i + 65536]), payload[i : i + 65536])
                    for i in range(0, len(payload), 65536)
                ]
                stream = b"POST /hello HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
                stream += b"".join(pieces) + b"0\r\n\r\n"
                cuts = sorted(rng.sample(range(1, len(stream)), 6))
                parts = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
                await send_in_reads(conn, *parts)
                status, _, reply = await conn.response()
                assert (status, reply) == (200, f"hello POST {len(payload)}".encode())


async def test_an_oversized_body_gets_its_413_not_a_reset() -> None:
    builder = LongPollingServiceContextBuilder().max_body_size(64 * 1024)
    async with native(builder) as server:
        for _ in range(5):
            async with raw(server.port) as conn:
                body = b"[" + b" " * (4 * 1024 * 1024) + b"]"
                conn.writer.write(conn.post_bytes("/cometd", body))
                status, headers, reply = await conn.response()
                assert status == 413 and headers["connection"] == "close"
                assert json.loads(reply)[0]["error"] == "413::request_too_large"


async def test_slow_requests_time_out_and_idle_connections_close() -> None:
    builder = LongPollingServiceContextBuilder().request_timeout(0.5)
    async with native(builder) as server:
        server.server.config.timeout_keep_alive = 1
        # A head that never ends, and a body that never ends: 408, then the connection closes.
        for partial in (
            b"POST /cometd HTTP/1.1\r\nhost: x\r\n",
            b"POST /cometd HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n[{",
        ):
            async with raw(server.port) as conn:
                await conn.send(partial)
                status, _, _ = await conn.response()
                assert status == 408
                assert await asyncio.wait_for(conn.reader.read(), 5) == b""
        # After a normal reply, an idle keep-alive connection closes after its timeout.
        async with raw(server.port) as conn:
            await conn.send(conn.post_bytes("/cometd", HANDSHAKE))
            status, headers, _ = await conn.response()
            assert status == 200 and "connection" not in headers
            assert await asyncio.wait_for(conn.reader.read(), 5) == b""


async def test_a_huge_request_head_is_refused() -> None:
    async with native() as server, raw(server.port) as conn:
        filler = b"".join(b"x-filler-%d: %s\r\n" % (i, b"y" * 1000) for i in range(100))
        await conn.send(b"POST /cometd HTTP/1.1\r\nhost: x\r\n" + filler + b"\r\n")
        status, _, _ = await conn.response()
        assert status == 431
        assert await asyncio.wait_for(conn.reader.read(), 5) == b""


async def test_a_header_that_never_ends_is_refused_once_past_the_head_limit() -> None:
    """The parser buffers a header until its line ends, so counting complete headers alone
    would let one endless header grow without bound: the head is counted per read, and is
    refused at most one read (256 KiB with uvloop) past the limit."""
    async with native() as server, raw(server.port) as conn:
        await conn.send(b"POST /cometd HTTP/1.1\r\nhost: x\r\nx-endless: ")
        for _ in range(256):
            await conn.send(b"y" * 4096)
        status, _, _ = await conn.response()
        assert status == 431
        assert await asyncio.wait_for(conn.reader.read(), 5) == b""


async def test_pipelined_requests_do_not_count_against_the_next_head() -> None:
    """A read may hold whole requests before the start of a head it cuts: only the head's own
    bytes count towards its limit."""
    async with native() as server, raw(server.port) as conn:
        padded = b'[{"channel":"/meta/handshake","version":"1.0","ext":{"pad":"%s"}}]'
        first = conn.post_bytes("/cometd", padded % (b"y" * 100_000))
        second = conn.post_bytes("/cometd", HANDSHAKE)
        await conn.send(first + second[:20])
        await asyncio.sleep(0.05)
        await conn.send(second[20:])
        for _ in range(2):
            status, _, _ = await conn.response()
            assert status == 200


async def test_bytes_after_a_connection_close_request_are_ignored_as_uvicorn_does() -> None:
    """Found by the framing fuzz test: bytes pipelined after a request that asks to close the
    connection made the native parser fail ("Data after Connection: close"), and the request
    waiting for its reply (handed to uvicorn mid-body, or a held connect) lost it. uvicorn's
    parser ignores such bytes; so does the native one now, and the request is answered."""
    garbage = b"]POST /hello HTTP/1.1\r\nhost: x\r\n\r\n"
    async with native() as server:
        # Handed to uvicorn (for its Expect) in the middle of the body.
        async with raw(server.port) as conn:
            head = (
                b"POST /cometd HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\n"
                b"connection: close\r\ncontent-length: %d\r\n\r\n" % len(HANDSHAKE)
            )
            await send_in_reads(conn, head + HANDSHAKE[:10], HANDSHAKE[10:] + garbage)
            continued = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), 10)
            assert continued.startswith(b"HTTP/1.1 100 "), continued
            status, _, reply = await conn.response()
            assert status == 200 and json.loads(reply)[0]["successful"] is True
            assert await asyncio.wait_for(conn.reader.read(), 5) == b""
        # A held connect that asks to close, with the bytes in the same read.
        async with raw(server.port) as conn:
            await conn.send(conn.post_bytes("/cometd", HANDSHAKE))
            _, headers, body = await conn.response()
            client_id = json.loads(body)[0]["clientId"]
            connect = json.dumps([connect_message(client_id)]).encode()
            cookie = browser_cookie(headers)
            await conn.send(conn.post_bytes("/cometd", connect, cookie))
            await conn.response()  # the first connect is answered at once
            closing = conn.post_bytes("/cometd", connect, cookie).replace(
                b"host: x\r\n", b"host: x\r\nconnection: close\r\n"
            )
            await conn.send(closing + garbage)
            await until(lambda: server.context.stats()["held"] == 1, "the connect is held")
            await server.context.send_to_client("/x", client_id, "after")
            status, _, reply = await conn.response()
            assert status == 200 and json.loads(reply)[0] == {"channel": "/x", "data": "after"}
