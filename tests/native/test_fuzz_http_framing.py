"""Fuzzing the native protocol's HTTP/1.1 framing (issue 10): seeded random and mutated byte
streams (support.http_fuzz), written in random pieces to the native server and, byte for byte,
to the same app on plain uvicorn.

What must hold: every response is well-formed HTTP with a status below 500; no stream gets more
final responses than it has request lines; where both servers take the stream whole (neither
refuses its framing), the native server answers exactly as many requests, with the same
statuses and the same bodies from the route beside the endpoint, as uvicorn (a request
smuggled through one of them would change the count); nothing is logged at ERROR; and a
healthy client is served afterwards.

Replay a failure with ``FUZZ_SEED=<seed>``; ``FUZZ_SECONDS`` fuzzes longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass

import httpx

from starlette_cometd import LongPollingServiceContextBuilder
from support.bayeux import connect_message, handshake
from support.fuzz import case_rng, describe, error_records, seconds, seed
from support.http_fuzz import Malformed, Response, Stream, StreamMaker, read_responses
from support.raw_http import RawConnection
from support.servers import NativeServer, native_server

CONCURRENT = 6
MIN_STREAMS = 60  # however slow the machine
IDLE = 0.2  # no byte for this long: the server has answered what it will
PATIENCE = 5.0  # how long to wait for answers when the two servers disagree (a loaded CI)
HOLD = 0.4  # how long the native server holds a connect
# Statuses that refuse a request's framing or size: the rest of the stream is not read alike
# by the two servers (the native one has limits uvicorn lacks, such as on heads).
REFUSALS = {408, 411, 413, 414, 417, 431, 501, 505}


@dataclass
class Received:
    data: bytes = b""
    closed: bool = False

    def responses(self) -> tuple[list[Response], bytes]:
        return read_responses(self.data)


async def write_stream(writer: asyncio.StreamWriter, stream: Stream) -> None:
    """Writes the stream in its pieces, letting the server read between them."""
    starts = [0, *stream.cuts]
    ends = [*stream.cuts, len(stream.data)]
    for start, end in zip(starts, ends, strict=True):
        writer.write(stream.data[start:end])
        with contextlib.suppress(TimeoutError):
            # A server that stopped reading (after a refusal) need not take the rest.
            await asyncio.wait_for(writer.drain(), 1)
        await asyncio.sleep(0.001 if end % 3 else 0)
    if stream.end == "eof" and writer.can_write_eof():
        writer.write_eof()


async def read_more(reader: asyncio.StreamReader, received: Received, idle: float) -> None:
    """Reads until the server closes or says nothing for ``idle`` seconds."""
    while not received.closed:
        try:
            data = await asyncio.wait_for(reader.read(65536), idle)
        except TimeoutError:
            return
        except ConnectionError:
            data = b""
        received.data += data
        received.closed = not data


@dataclass
class Exchange:
    """One stream on one connection to one server."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    received: Received


async def start(port: int, stream: Stream) -> Exchange | None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        with contextlib.suppress(OSError):  # the server closed early: what it wrote is read
            await write_stream(writer, stream)
        if stream.end == "abort":
            writer.transport.abort()
            return None
        exchange = Exchange(reader, writer, Received())
        await read_more(reader, exchange.received, IDLE)
    except BaseException:
        writer.close()
        raise
    return exchange


def final(responses: list[Response]) -> list[Response]:
    return [response for response in responses if response.status >= 200]


Summary = tuple[int, bytes | None]


def summary(responses: list[Response]) -> list[Summary]:
    """Statuses, and the bodies of the route beside the endpoint (the endpoint's hold ids)."""
    return [(r.status, r.body if r.body.startswith(b"hello ") else None) for r in final(responses)]


def agree(ours: list[Summary], reference: list[Summary], reference_closed: bool) -> bool:
    """The native server answered as uvicorn did. uvicorn may close a connection with replies
    still owed (a bad request pipelined behind an HTTP/1.0 one): then it answered a prefix."""
    if reference_closed:
        return ours[: len(reference)] == reference
    return ours == reference


def refused(responses: list[Response]) -> bool:
    return any(
        r.status in REFUSALS or (r.status == 400 and not r.body.startswith(b"[")) for r in responses
    )


class Check:
    def __init__(self, stream: Stream, number: int) -> None:
        self.stream = stream
        self.number = number

    def fail(self, problem: str) -> AssertionError:
        data = self.stream.data
        shown = data if len(data) <= 3000 else data[:3000] + b"...(%d bytes)" % len(data)
        where = f"stream #{self.number} (cut at {self.stream.cuts[:20]}, end {self.stream.end})"
        return AssertionError(
            f"replay with FUZZ_SEED={seed()}, {where}: {problem}\ninput: {shown!r}"
        )

    def parse(self, received: Received, who: str) -> tuple[list[Response], bytes]:
        try:
            return received.responses()
        except Malformed as error:
            raise self.fail(
                f"{who}: malformed response ({error}): {received.data[:500]!r}"
            ) from None


async def fuzz_one(native: NativeServer, plain: NativeServer, stream: Stream, number: int) -> None:
    check = Check(stream, number)
    mine, theirs = await asyncio.gather(start(native.port, stream), start(plain.port, stream))
    if mine is None or theirs is None:
        for exchange in (mine, theirs):
            if exchange is not None:
                exchange.writer.close()
        return  # the client reset the connection: nothing to read
    try:
        ours, rest = check.parse(mine.received, "native")
        reference, _ = check.parse(theirs.received, "uvicorn")
        comparable = stream.end == "open" and not refused(ours) and not refused(reference)
        deadline = time.monotonic() + PATIENCE
        while (
            rest or (comparable and summary(ours) != summary(reference))
        ) and time.monotonic() < deadline:
            # Slower answers (uvicorn's app runs in tasks): give both servers more time.
            await asyncio.gather(
                read_more(mine.reader, mine.received, 0.2),
                read_more(theirs.reader, theirs.received, 0.2),
            )
            ours, rest = check.parse(mine.received, "native")
            reference, _ = check.parse(theirs.received, "uvicorn")
            if mine.received.closed and theirs.received.closed:
                break
        if rest:
            raise check.fail(f"native: a response cut short: {rest[:300]!r}")
        if any(response.status >= 500 for response in ours):
            raise check.fail(f"native: {[r.status for r in ours]}: {ours}")
        answers = final(ours)
        if answers and refused(answers[-1:]):
            answers.pop()  # to the bytes after the last request, which it could not read
        if len(answers) > stream.requests and not stream.tunnels:
            raise check.fail(f"native: {len(answers)} responses to {stream.requests} requests")
        comparable = stream.end == "open" and not refused(ours) and not refused(reference)
        if comparable and not agree(summary(ours), summary(reference), theirs.received.closed):
            raise check.fail(f"native answered {summary(ours)}, uvicorn {summary(reference)}")
    finally:
        mine.writer.close()
        theirs.writer.close()


class Sessions:
    """Sessions of the native server, so that a stream may start with a connect it holds
    (the requests behind it wait, pipelined); uvicorn gets the same bytes, for a session it
    does not know, and answers them at once, with as many responses."""

    def __init__(self) -> None:
        self.connects: list[bytes] = []

    async def start(self, server: NativeServer, count: int) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            url = f"http://127.0.0.1:{server.port}/cometd"
            for _ in range(count):
                http.cookies.clear()
                client_id = await handshake(http, url)
                connect = json.dumps([connect_message(client_id)]).encode()
                cookie = http.cookies["BAYEUX_BROWSER"]
                self.connects.append(RawConnection.post_bytes("/cometd", connect, cookie))


async def healthy_client(server: NativeServer) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        base = f"http://127.0.0.1:{server.port}"
        handshake = [{"channel": "/meta/handshake", "supportedConnectionTypes": ["long-polling"]}]
        response = await http.post(f"{base}/cometd", json=handshake)
        assert response.status_code == 200 and response.json()[0]["successful"] is True
        response = await http.post(f"{base}/hello", content=b"abc")
        assert (response.status_code, response.text) == (200, "hello POST 3")


async def test_fuzzed_http_streams() -> None:
    builder = LongPollingServiceContextBuilder().timeout(HOLD)
    rng = case_rng("http-framing")
    maker = StreamMaker(rng)
    deadline = time.monotonic() + seconds(4.0)
    number = 0
    sessions = Sessions()
    with error_records() as errors:
        async with native_server(builder) as native, native_server(builder, native=False) as plain:
            await sessions.start(native, CONCURRENT)
            while time.monotonic() < deadline or number < MIN_STREAMS:
                streams = [
                    maker.stream(sessions.connects[i] if rng.random() < 0.25 else b"")
                    for i in range(CONCURRENT)
                ]
                await asyncio.gather(
                    *(fuzz_one(native, plain, s, number + i) for i, s in enumerate(streams))
                )
                number += CONCURRENT
            await healthy_client(native)
    assert not errors, (f"replay with FUZZ_SEED={seed()}", describe(errors))


def test_the_response_reader_is_strict() -> None:
    """The fuzz test's reader of responses refuses what is not well-formed."""
    ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    responses, rest = read_responses(ok + chunked + b"HTTP/1.1 100 Continue\r\n\r\n" + ok[:20])
    assert [(r.status, r.body) for r in responses] == [(200, b"ok"), (200, b"ok"), (100, b"")]
    assert rest == ok[:20]
    for bad in [
        b"HTTP/1.1 200 OK\r\n\r\n",  # no framing
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\nok",
        b"HTTP/1.1 2000 OK\r\ncontent-length: 0\r\n\r\n",
        b"hello",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nz\r\n",
        b"HTTP/1.1 200 OK\r\nbad header\r\ncontent-length: 0\r\n\r\n",
    ]:
        try:
            read_responses(bad)
        except Malformed:
            continue
        raise AssertionError(f"read as well-formed: {bad!r}")
