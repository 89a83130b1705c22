"""The lean Redis client a node uses on one server for its round trips and its logs' reads
(``cluster/resp.py``), against a real Redis server, and against a fake one for what a real one
never sends."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError, DataError, NoScriptError, ResponseError, TimeoutError

from starlette_cometd.cluster import resp
from starlette_cometd.cluster.connection import connect, torn_down
from starlette_cometd.cluster.resp import RespClient
from support.redis_servers import RedisServer


async def _command(redis: Redis, *args: str) -> Any:
    execute: Any = redis.execute_command  # untyped in redis-py
    return await execute(*args)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def lean(redis_url: str) -> AsyncIterator[RespClient]:
    client = RespClient(redis_url)
    yield client
    await client.aclose()


async def test_many_commands_in_one_round_trip_each_its_reply(lean: RespClient) -> None:
    """Ten thousand replies, which arrive in many reads, each reach their command."""
    count = 10_000
    pipe = lean.pipeline()
    for n in range(count):
        pipe.incrby("k", n)
    replies = await pipe.execute()
    assert replies == [n * (n + 1) // 2 for n in range(count)]


async def test_errors_are_redis_py_s_and_a_command_s_alone(lean: RespClient, redis: Redis) -> None:
    await redis.rpush("list", "x")
    pipe = lean.pipeline().incr("list").evalsha("0" * 40, 0).incr("fine")
    wrong, unknown, fine = await pipe.execute(raise_on_error=False)
    assert isinstance(wrong, ResponseError) and "WRONGTYPE" in str(wrong)
    assert isinstance(unknown, NoScriptError)
    assert fine == 1
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await lean.pipeline().incr("list").execute()


async def test_hgetall_as_redis_py_gives_it(lean: RespClient, redis: Redis) -> None:
    await redis.hset("h", mapping={"b": "cookie", "s": b"\xff[]"})
    await redis.set("string", "x")
    found, missing, wrong = (
        await lean.pipeline()
        .hgetall("h")
        .hgetall("none")
        .hgetall("string")
        .execute(raise_on_error=False)
    )
    assert found == await redis.hgetall("h") == {b"b": b"cookie", b"s": b"\xff[]"}
    assert missing == await redis.hgetall("none") == {}
    assert isinstance(wrong, ResponseError)


async def test_what_cannot_be_sent_is_a_redis_error_and_sends_nothing(lean: RespClient) -> None:
    """redis-py's keyword arguments, or an argument Redis has no type for: a ``DataError``
    (a Redis error, which the node answers as such), and the connection carries on."""
    with pytest.raises(DataError, match="keyword"):
        lean.pipeline().set("k", 1, px=5)
    with pytest.raises(DataError, match="cannot be sent"):
        await lean.round_trip([("SET", "k", None)])  # type: ignore[list-item]
    assert await lean.pipeline().incr("k").execute() == [1]


async def test_a_url_with_options_the_lean_client_lacks_goes_by_redis_py(redis_url: str) -> None:
    lean = await connect(redis_url)
    with_options = await connect(f"{redis_url}?socket_timeout=3")
    try:
        assert isinstance(lean.requests, RespClient) and isinstance(lean.reader, RespClient)
        assert with_options.requests is with_options.redis
        assert not isinstance(with_options.reader, RespClient)
    finally:
        await lean.aclose()
        await with_options.aclose()


async def test_a_round_trip_given_up_does_not_take_the_next_one_s_replies(
    lean: RespClient, redis: Redis
) -> None:
    """Its caller cancelled while Redis was busy: its reply, when it comes, is passed over."""
    busy = asyncio.create_task(_command(redis, "DEBUG", "SLEEP", "0.3"))
    await asyncio.sleep(0.05)
    given_up = asyncio.ensure_future(lean.pipeline().incr("k").execute())
    await asyncio.sleep(0.05)
    given_up.cancel()
    assert await lean.pipeline().incr("k").execute() == [2]
    await busy


async def test_a_connection_redis_closes_fails_what_waits_then_a_new_one_is_opened(
    lean: RespClient, redis: Redis
) -> None:
    waiting = asyncio.ensure_future(lean.round_trip([("BLPOP", "nothing", 5)]))
    await asyncio.sleep(0.1)
    assert await redis.client_kill_filter(_type="normal", skipme=True) >= 1
    with pytest.raises(ConnectionError, match="lost"):
        await asyncio.wait_for(waiting, 2)
    assert await lean.pipeline().incr("k").execute() == [1]


async def test_redis_away_then_back(redis_server: RedisServer, lean: RespClient) -> None:
    assert await lean.call("PING") == b"PONG"
    await asyncio.to_thread(redis_server.stop)
    with pytest.raises(ConnectionError):
        await lean.call("PING")
    with pytest.raises(ConnectionError, match="Error connecting"):
        await lean.call("PING")
    await asyncio.to_thread(redis_server.start)
    assert await lean.call("PING") == b"PONG"


async def test_a_frozen_redis_fails_what_waits_in_time_then_a_new_connection_works(
    redis_server: RedisServer, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis stops answering, its connections open (SIGSTOP): a round trip fails after the
    reply wait, as Redis away, and its reply, when Redis answers again, is not taken for the
    next one's. A blocking read may block its whole time before the wait starts."""
    monkeypatch.setattr(resp, "REPLY_WAIT", 1.0)
    lean, reader = RespClient(redis_url), RespClient(redis_url, exclusive=True)
    try:
        assert await lean.call("SET", "k", "before") == b"OK"
        assert await reader.xread({"log": "0-0"}, block=1500) is None  # blocked past the wait
        await asyncio.to_thread(redis_server.freeze)
        try:
            with pytest.raises(TimeoutError, match="did not answer in time"):
                await lean.call("SET", "k", "frozen")
            with pytest.raises(TimeoutError, match="did not answer in time"):
                await reader.xread({"log": "0-0"}, block=100)
        finally:
            await asyncio.to_thread(redis_server.thaw)
        # On the old connection, INCR would have been given SET's late "OK".
        assert await lean.pipeline().incr("n").execute() == [1]
        assert await reader.xread({"log": "0-0"}, block=100) is None
    finally:
        await lean.aclose()
        await reader.aclose()


# A process that sends GET while Redis sleeps, so that the reply comes while it is stopped.
PAUSED_CLIENT = """
import asyncio, sys, uvloop
from starlette_cometd.cluster import resp
resp.REPLY_WAIT = 0.5

async def main(url):
    lean, other = resp.RespClient(url), resp.RespClient(url)
    await lean.call("SET", "k", "v")
    await other.call("PING")
    sleeping = asyncio.ensure_future(other.call("DEBUG", "SLEEP", "0.3"))
    await asyncio.sleep(0.05)
    pending = asyncio.ensure_future(lean.call("GET", "k"))
    await asyncio.sleep(0)
    print("sent", flush=True)
    replies = await asyncio.gather(pending, sleeping, return_exceptions=True)
    print(repr(replies), flush=True)

(uvloop.run if sys.argv[2] == "uvloop" else asyncio.run)(main(sys.argv[1]))
"""


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
async def test_replies_that_came_while_the_process_was_stopped_are_taken(
    redis_url: str, loop: str
) -> None:
    """The process stops (SIGSTOP, a frozen VM) past its round trips' reply wait while Redis
    answers them. When it goes on, its timers may fire before the loop reads what came
    meanwhile: the replies are read and taken, not timed out as Redis away."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PAUSED_CLIENT, redis_url, loop, stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    try:
        assert await asyncio.wait_for(child.stdout.readline(), 10) == b"sent\n"
        child.send_signal(signal.SIGSTOP)
        await asyncio.sleep(1.5)  # the reply waits are 0.5 s; Redis answers after 0.3 s
        child.send_signal(signal.SIGCONT)
        out = await asyncio.wait_for(child.stdout.read(), 10)
    finally:
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        await child.wait()
    assert out.decode().strip() == "[b'v', b'OK']"


def test_only_a_closed_transport_s_runtime_error_is_a_connection_torn_down() -> None:
    """uvloop's write on a closed transport is Redis away; another RuntimeError is a bug, and
    is not hidden as one."""
    closed = "unable to perform operation on <TCPTransport closed=True>; the handler is closed"
    assert torn_down(RuntimeError(closed)) is True
    assert torn_down(AttributeError("'NoneType' object has no attribute 'write'")) is True
    assert torn_down(RuntimeError("Event loop is closed")) is False
    assert torn_down(NotImplementedError()) is False


async def test_the_url_s_user_password_and_database(
    redis_server: RedisServer, redis: Redis
) -> None:
    await _command(redis, "ACL", "SETUSER", "node", "on", ">secret", "~*", "+@all")
    client = RespClient(f"redis://node:secret@127.0.0.1:{redis_server.port}/3")
    refused = RespClient(f"redis://node:wrong@127.0.0.1:{redis_server.port}/3")
    try:
        assert await client.pipeline().incr("k").execute() == [1]
        assert await redis.get("k") is None  # database 0
        in_three = Redis(port=redis_server.port, db=3)
        assert await in_three.get("k") == b"1"
        await in_three.aclose()
        with pytest.raises(ConnectionError, match="refused the node"):
            await refused.call("PING")
    finally:
        await client.aclose()
        await refused.aclose()


async def test_xread_as_redis_py_gives_it(redis_url: str, redis: Redis) -> None:
    reader = RespClient(redis_url, exclusive=True)
    try:
        await redis.xadd("log", {"c": "/a", "m": b"\x00\xff"}, id="0-1")
        await redis.xadd("log", {"garbage": ""}, id="0-2")
        expected = await redis.xread({"log": "0-0"}, count=10)
        assert await reader.xread({"log": "0-0"}, count=10) == expected
        assert await reader.xread({"log": "0-2"}, count=10, block=50) is None
        # Blocking reads wait side by side, each on a connection of its own.
        later = [asyncio.ensure_future(reader.xread({"log": "0-2"}, block=2000)) for _ in range(3)]
        await asyncio.sleep(0.1)
        await redis.xadd("log", {"c": "/b"}, id="0-3")
        for read in await asyncio.gather(*later):
            assert read == [[b"log", [(b"0-3", {b"c": b"/b"})]]]
    finally:
        await reader.aclose()


async def test_a_client_closed_refuses_to_send(lean: RespClient) -> None:
    assert await lean.call("PING") == b"PONG"
    await lean.aclose()
    with pytest.raises(ConnectionError, match="closed its connections"):
        await lean.call("PING")


class FakeRedis:
    """A server that answers each read with ``answer``, counting its connections."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.connections = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        while await reader.read(65536):
            writer.write(self.answer)
        writer.close()

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
            await writer.wait_closed()


@pytest.mark.parametrize(
    ("answer", "problem"),
    [(b"hello\r\n", "not RESP"), (b"+OK\r\n+OK\r\n", "replied to nothing asked")],
)
async def test_what_no_redis_sends_fails_the_connection_not_the_node(
    answer: bytes, problem: str
) -> None:
    """The connection is closed (what waits on it fails as Redis away) and the next call
    opens another."""
    fake = FakeRedis(answer)
    server = await asyncio.start_server(fake.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = RespClient(f"redis://127.0.0.1:{port}/0")
    try:
        for connections in (1, 2):
            if problem == "not RESP":
                with pytest.raises(ConnectionError, match=problem):
                    await client.call("PING")
            else:  # the first reply is PING's; the second, which nothing asked, ends it
                assert await client.call("PING") == b"OK"
                await asyncio.sleep(0.05)
            assert fake.connections == connections
    finally:
        await client.aclose()
        server.close()
        await fake.close()
