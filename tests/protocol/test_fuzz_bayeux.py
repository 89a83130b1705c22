"""Fuzzing the Bayeux layer (issue 10): seeded random and mutated batches (support.bayeux_fuzz)
for a few seconds per case, over long-polling, callback-polling and WebSocket, on both stacks,
with and without application hooks.

What must hold: no 5xx; every 200 is a JSON array of Bayeux replies and delivered messages, one
reply per message the batch held (over WebSocket, once held connects are answered); a body
that is no batch gets a clear 4xx; nothing is logged at ERROR; and a healthy pair of clients
started before the fuzzing (one publishing, one subscribed) gets every message, in order.

Replay a failure with the seed it prints: ``FUZZ_SEED=<seed> pytest tests/protocol/
test_fuzz_bayeux.py -k <case>``; ``FUZZ_SECONDS`` fuzzes longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Coroutine, Iterable
from typing import Any
from urllib.parse import quote_from_bytes, unquote

import httpx
import pytest
import websockets

from starlette_cometd import LongPollingServiceContextBuilder
from starlette_cometd._core import read_batch
from support.app_hooks import Marking, register_hooks
from support.bayeux import connect_message, handshake, post, subscribe
from support.bayeux_fuzz import BatchMaker, check_messages, replies
from support.fuzz import case_rng, describe, error_records, seconds, seed, strict_loads
from support.servers import ServeFactory, Server

WORKERS = 3
MAX_BODY = 256 * 1024  # small enough that the odd huge message goes over it
HOLD = 0.3  # the server's connect timeout: held connects end soon
MIN_BATCHES = 30  # sent in all, however slow the machine
MIN_PAIR = 5  # messages the healthy pair exchanges meanwhile


class Failure(AssertionError):
    pass


class Fuzzer:
    """What every worker shares: how to replay the case, and how many batches were sent."""

    def __init__(self, server: Server, transport: str, replay: str, pair: HealthyPair) -> None:
        self.server = server
        self.transport = transport
        self.replay = replay
        self.pair = pair
        self.sent = 0
        self.deadline = time.monotonic() + seconds(2.0)

    def going(self) -> bool:
        """Fuzzing goes on for its time, and on a slow machine until enough was done (the
        healthy pair too), within a bound."""
        now = time.monotonic()
        if now < self.deadline:
            return True
        done = self.sent >= MIN_BATCHES and self.pair.sent >= MIN_PAIR
        return not done and now < self.deadline + 30

    def fail(self, worker: int, body: bytes, problem: str) -> Failure:
        shown = body if len(body) <= 3000 else body[:3000] + b"...(%d bytes)" % len(body)
        return Failure(
            f"{self.replay}, worker {worker}, batch #{self.sent}: {problem}\ninput: {shown!r}"
        )


def expected_replies(body: bytes) -> int | None:
    """How many replies the server owes a body: one per message, or ``None`` when it is not a
    batch (one error reply, with a 400 over HTTP)."""
    batch = read_batch(body)
    return None if batch is None else len(batch)


def check_body(fuzzer: Fuzzer, worker: int, body: bytes, reply: bytes) -> list[Any]:
    """The reply parsed and checked for shape; raises what is wrong."""
    try:
        messages = strict_loads(reply)
    except ValueError as error:
        problem = f"a reply that is not JSON ({error}): {reply[:500]!r}"
        raise fuzzer.fail(worker, body, problem) from None
    problems = check_messages(messages)
    if problems:
        raise fuzzer.fail(worker, body, "; ".join(problems[:5]))
    result: list[Any] = messages
    return result


def learn_sessions(maker: BatchMaker, messages: list[Any]) -> None:
    """The client ids the server gave this client, for its next batches."""
    for item in messages:
        if isinstance(item, dict) and item.get("channel") == "/meta/handshake":
            client_id = item.get("clientId")
            if item.get("successful") is True and isinstance(client_id, str):
                maker.sessions = [*maker.sessions[-20:], client_id]


# --- Over HTTP ---------------------------------------------------------------------------------


async def http_worker(fuzzer: Fuzzer, worker: int, maker: BatchMaker) -> None:
    server = fuzzer.server
    jsonp = fuzzer.transport == "callback-polling"
    async with httpx.AsyncClient(timeout=10) as http:
        while fuzzer.going():
            body = maker.batch()
            fuzzer.sent += 1
            if maker.rng.random() < 0.1:
                http.cookies.clear()  # a client without its session's cookie
            try:
                if jsonp:
                    query = quote_from_bytes(body, safe="")
                    if len(query) > 60_000:
                        continue  # longer than httpx lets a URL be
                    response = await http.get(f"{server.url}?jsonp=cb&message={query}")
                    seen = unquote(query).encode()  # the server decodes the parameter so
                else:
                    response = await http.post(server.url, content=body)
                    seen = body
            except httpx.HTTPError as error:
                raise fuzzer.fail(worker, body, f"no answer: {error!r}") from None
            status, reply = response.status_code, response.content
            if status >= 500:
                raise fuzzer.fail(worker, body, f"HTTP {status}: {reply[:500]!r}")
            if status in (413, 431):
                continue  # too large: a clear refusal
            owed = expected_replies(seen)
            if jsonp:
                # The core's answers, errors too, call the callback.
                if not (reply.startswith(b"cb(") and reply.endswith(b");")):
                    raise fuzzer.fail(worker, body, f"not a callback: {reply[:200]!r}")
                reply = reply[3:-2]
            elif not response.headers.get("content-type", "").startswith("application/json"):
                raise fuzzer.fail(worker, body, f"HTTP {status} not JSON: {response.headers}")
            messages = check_body(fuzzer, worker, body, reply)
            if status != (200 if owed is not None else 400):
                raise fuzzer.fail(
                    worker, body, f"HTTP {status} for {owed} messages: {reply[:300]!r}"
                )
            if replies(messages) != (1 if owed is None else owed):
                raise fuzzer.fail(
                    worker,
                    body,
                    f"{replies(messages)} replies for {owed} messages: {messages!r:.500}",
                )
            learn_sessions(maker, messages)


# --- Over WebSocket ----------------------------------------------------------------------------


class SocketReplies:
    """Reads a fuzzed socket: checks every frame, counts replies, learns sessions."""

    def __init__(self, fuzzer: Fuzzer, worker: int, maker: BatchMaker, ws: Any) -> None:
        self.fuzzer, self.worker, self.maker, self.ws = fuzzer, worker, maker, ws
        self.count = 0
        self.last_body = b""
        self.arrived = asyncio.Event()

    async def read(self) -> None:
        async for frame in self.ws:
            data = frame if isinstance(frame, bytes) else frame.encode()
            messages = check_body(self.fuzzer, self.worker, self.last_body, data)
            self.count += replies(messages)
            learn_sessions(self.maker, messages)
            self.arrived.set()

    async def until(self, count: int, timeout: float) -> bool:
        """Waits for ``count`` replies in all; false if they do not come in time."""
        end = time.monotonic() + timeout
        while self.count < count and time.monotonic() < end:
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), end - time.monotonic())
        return self.count >= count


async def ws_worker(fuzzer: Fuzzer, worker: int, maker: BatchMaker) -> None:
    url = fuzzer.server.ip_url.replace("http://", "ws://")
    while fuzzer.going():
        maker.sessions = []  # sessions are bound to the socket that made them
        async with websockets.connect(url, open_timeout=5, max_size=None) as ws:
            reader = SocketReplies(fuzzer, worker, maker, ws)
            reading = asyncio.get_running_loop().create_task(reader.read())
            try:
                await fuzz_socket(fuzzer, worker, maker, reader, reading)
            finally:
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                    await reading


async def fuzz_socket(
    fuzzer: Fuzzer,
    worker: int,
    maker: BatchMaker,
    reader: SocketReplies,
    reading: asyncio.Task[None],
) -> None:
    """Sends batches on one socket until the fuzzing ends, or until one too large for the server
    (which closes the socket with 1009); then checks every reply owed came, once."""
    ws = reader.ws
    owed = 0
    while fuzzer.going():
        if reading.done():
            reading.result()  # a reply that failed its check raises here
            closed = ws.protocol.close_rcvd
            raise fuzzer.fail(worker, reader.last_body, f"the socket closed: {closed}")
        body = maker.batch()
        fuzzer.sent += 1
        reader.last_body = body
        try:
            await ws.send(body.decode() if is_utf8(body) else body)
        except websockets.ConnectionClosed as error:
            raise fuzzer.fail(worker, body, f"the socket closed: {error}") from None
        if len(body) > MAX_BODY:
            await asyncio.wait({reading}, timeout=5)
            close = ws.protocol.close_rcvd
            if close is None or close.code != 1009:
                raise fuzzer.fail(worker, body, f"too large, yet the socket closed so: {close}")
            return
        count = expected_replies(body)
        owed += 1 if count is None else count
        # Pace the batches by their replies (a held connect's comes later).
        await reader.until(owed, 0.05)
    await ws.send('[{"channel":"/meta/handshake","id":"last"}]')
    owed += 1
    if not await reader.until(owed, 5) or reader.count > owed:
        raise fuzzer.fail(worker, reader.last_body, f"{reader.count} replies for {owed} messages")


def is_utf8(body: bytes) -> bool:
    try:
        body.decode()
    except UnicodeDecodeError:
        return False
    return True


# --- The healthy pair ----------------------------------------------------------------------------


class HealthyPair:
    """A subscriber and a publisher over long-polling, each its own browser, started before
    the fuzzing: the subscriber must get every message the publisher sent, in order."""

    CHANNEL = "/healthy/pair"

    def __init__(self, server: Server) -> None:
        self.url = server.url
        self.subscriber_http = httpx.AsyncClient(timeout=10)
        self.publisher_http = httpx.AsyncClient(timeout=10)
        self.subscriber = self.publisher = ""
        self.sent = 0
        self.received: list[Any] = []
        self.stopping = False
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> list[str]:
        """Starts both; returns their client ids (which no other client may use)."""
        self.subscriber = await handshake(self.subscriber_http, self.url)
        await subscribe(self.subscriber_http, self.url, self.subscriber, self.CHANNEL)
        self.publisher = await handshake(self.publisher_http, self.url)
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self._listen()), loop.create_task(self._publish())]
        return [self.subscriber, self.publisher]

    async def _listen(self) -> None:
        while True:
            for reply in await post(
                self.subscriber_http, self.url, connect_message(self.subscriber)
            ):
                if reply["channel"] == self.CHANNEL:
                    self.received.append(reply["data"])
                else:
                    assert reply["successful"] is True, reply

    async def _publish(self) -> None:
        while not self.stopping:
            message = {"channel": self.CHANNEL, "clientId": self.publisher, "data": self.sent}
            [reply] = await post(self.publisher_http, self.url, message)
            assert reply["successful"] is True, reply
            self.sent += 1
            await asyncio.sleep(0.02)

    async def finish(self) -> None:
        """Stops publishing; checks that everything sent arrived, in order."""
        self.stopping = True
        listening, publishing = self.tasks
        try:
            await publishing
            end = time.monotonic() + 10
            while len(self.received) < self.sent and time.monotonic() < end:
                if listening.done():
                    listening.result()
                await asyncio.sleep(0.05)
            assert self.received == list(range(self.sent)), (self.sent, self.received)
        finally:
            await self.close()

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.subscriber_http.aclose()
        await self.publisher_http.aclose()


async def all_or_none(work: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Runs the workers together; the first failure stops the others and is raised."""
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(one) for one in work]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.mark.parametrize("hooks", [False, True], ids=["fast", "hooked"])
@pytest.mark.parametrize("transport", ["long-polling", "callback-polling", "websocket"])
async def test_fuzzed_batches(
    serve: ServeFactory, request: pytest.FixtureRequest, transport: str, hooks: bool
) -> None:
    builder = LongPollingServiceContextBuilder().timeout(HOLD).max_body_size(MAX_BODY)
    server = await serve(builder)
    if hooks:
        register_hooks(server.context, Marking())
    case = request.node.callspec.id
    rng = case_rng(case)
    replay = f"replay with FUZZ_SEED={seed()} -k '{case}'"
    print(replay)
    pair = HealthyPair(server)
    fuzzer = Fuzzer(server, transport, replay, pair)
    healthy = await pair.start()
    worker = ws_worker if transport == "websocket" else http_worker
    # The fuzzing clients know the healthy pair's ids, but not its cookies: refused.
    others = healthy
    makers = [
        BatchMaker(random.Random(rng.getrandbits(32)), transport, others) for _ in range(WORKERS)
    ]
    with error_records() as errors:
        try:
            await all_or_none(worker(fuzzer, index, maker) for index, maker in enumerate(makers))
        except BaseException:
            await pair.close()
            raise
        await pair.finish()
    assert not errors, (replay, describe(errors))
    assert fuzzer.sent >= MIN_BATCHES and pair.sent >= MIN_PAIR, (fuzzer.sent, pair.sent)
