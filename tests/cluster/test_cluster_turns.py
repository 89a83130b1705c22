"""The writes of a loop turn's requests go to Redis in one round trip (``cluster/turns.py``),
each request getting its own commands' results, and their log appends in one script call per
log, on a real Redis server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from redis.exceptions import ConnectionError, ResponseError

from starlette_cometd.cluster.connection import Connection, connect
from starlette_cometd.cluster.keys import PUBLISH
from starlette_cometd.cluster.turns import APPENDS_PER_CALL, Turns
from support.redis_servers import RedisServer


class Counted:
    """The connection's client, counting the pipelines sent through it."""

    def __init__(self, redis: Any) -> None:
        self._redis = redis
        self.pipelines = 0

    def pipeline(self, transaction: bool = False) -> Any:
        self.pipelines += 1
        return self._redis.pipeline(transaction=transaction)


@dataclass
class Opened:
    connection: Connection
    counted: Counted
    turns: Turns


@pytest.fixture(params=["lean", "redis-py"])
async def opened(
    redis_server: RedisServer, request: pytest.FixtureRequest
) -> AsyncIterator[Opened]:
    """A node's connection to the test's Redis, and turns on it: by the lean client a node
    uses on one server (resp.py), and by redis-py, which it uses on a Redis Cluster."""
    connection = await connect(redis_server.url)
    counted = Counted(connection.requests if request.param == "lean" else connection.redis)
    yield Opened(connection, counted, Turns(counted, connection.script(PUBLISH)))
    await connection.aclose()


async def test_one_round_trip_per_loop_turn_in_order(opened: Opened) -> None:
    connection, counted, turns = opened.connection, opened.counted, opened.turns
    first, second, third = turns.pipeline(), turns.pipeline(), turns.pipeline()
    first.incrby("k", 1)
    second.incr("k").incr("k")
    third.get("k")
    script = connection.script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    await script(keys=["k"], args=[10], client=third)
    assert len(third) == 2
    results = await asyncio.gather(first.execute(), second.execute(), third.execute())
    assert list(results) == [[1], [2, 3], [b"3", 13]]
    assert counted.pipelines == 1
    # A turn's requests that come while a round trip is under way go together in the next.
    pending = [turns.pipeline().incr("n") for _ in range(5)]
    replies = await asyncio.gather(*(batch.execute() for batch in pending))
    assert sorted(r[0] for r in replies) == [1, 2, 3, 4, 5]
    assert counted.pipelines == 2
    assert await turns.pipeline().execute() == []  # nothing to send: no round trip
    assert counted.pipelines == 2


async def script_calls(connection: Connection) -> int:
    stats: Any = await connection.redis.info("commandstats")
    return int(stats.get("cmdstat_eval", {}).get("calls", 0))


async def test_a_turn_s_log_appends_go_in_one_script_call_per_log_in_order(
    opened: Opened,
) -> None:
    connection, turns = opened.connection, opened.turns
    redis = connection.redis
    await redis.config_resetstat()
    # Three requests, each appending to log "a" and one of them to log "b" too; then one
    # whose other command comes between its appends, which keep their order around it.
    batches = [turns.pipeline() for _ in range(4)]
    for n, batch in enumerate(batches[:3]):
        batch.append_entry("head-a", "log-a", 100, ("/a", f"m{n}".encode(), "", ""))
    batches[1].append_entry("head-b", "log-b", 100, ("/b", b"b0", "x", "to"))
    batches[3].append_entry("head-a", "log-a", 100, ("/a", b"m3", "", ""))
    batches[3].incr("between")
    batches[3].append_entry("head-a", "log-a", 100, ("/a", b"m4", "", ""))
    results = await asyncio.gather(*(batch.execute() for batch in batches))
    # One call for a (m0 to m3: the last request's first append joins the run) and one for b,
    # then INCR, then one for m4.
    assert await script_calls(connection) == 3
    assert results[3][1] == 1
    assert [len(found) for found in results] == [1, 2, 1, 3]
    entries = await redis.xrange("log-a")
    assert [(entry_id, fields[b"m"]) for entry_id, fields in entries] == [
        (f"0-{n + 1}".encode(), f"m{n}".encode()) for n in range(5)
    ]
    assert await redis.hget("head-a", "offset") == b"5"
    [(_, b_fields)] = await redis.xrange("log-b")
    assert b_fields == {b"c": b"/b", b"m": b"b0", b"x": b"x", b"t": b"to"}
    # The log's epoch is made by its first call and kept by the next.
    epoch = await redis.hget("head-a", "epoch")
    assert epoch and results[0][0] == results[3][0] == [epoch, 4]
    assert results[3][2] == [epoch, 5]


async def test_a_flood_of_appends_is_cut_into_calls_of_a_bounded_size(opened: Opened) -> None:
    """However many messages one turn's requests publish, no script call holds Redis for more
    than APPENDS_PER_CALL of them; the log has them all, in order."""
    connection, turns = opened.connection, opened.turns
    await connection.redis.config_resetstat()
    count = 2 * APPENDS_PER_CALL + 1
    batches = [turns.pipeline() for _ in range(count)]
    for n, batch in enumerate(batches):
        batch.append_entry("head-f", "log-f", count, ("/f", str(n).encode(), "", ""))
    results = await asyncio.gather(*(batch.execute() for batch in batches))
    assert await script_calls(connection) == 3
    assert [found[0][1] for found in results] == [APPENDS_PER_CALL] * APPENDS_PER_CALL + [
        2 * APPENDS_PER_CALL
    ] * APPENDS_PER_CALL + [count]
    entries = await connection.redis.xrange("log-f")
    assert [fields[b"m"] for _, fields in entries] == [str(n).encode() for n in range(count)]


async def test_an_append_refused_is_its_log_s_requests_alone(opened: Opened) -> None:
    connection, turns = opened.connection, opened.turns
    await connection.redis.set("log-bad", "not a stream")
    bad, good, mixed = turns.pipeline(), turns.pipeline(), turns.pipeline()
    bad.append_entry("head-bad", "log-bad", 100, ("/a", b"m", "", ""))
    good.append_entry("head-good", "log-good", 100, ("/a", b"m", "", ""))
    mixed.incr("n").append_entry("head-bad", "log-bad", 100, ("/a", b"m", "", ""))
    found = await asyncio.gather(
        bad.execute(raise_on_error=False),
        good.execute(),
        mixed.execute(raise_on_error=False),
    )
    assert isinstance(found[0][0], ResponseError) and "WRONGTYPE" in str(found[0][0])
    assert found[1][0][1] == 1
    assert found[2][0] == 1 and isinstance(found[2][1], ResponseError)


async def test_a_command_refused_is_its_request_s_alone(opened: Opened) -> None:
    connection, turns = opened.connection, opened.turns
    await connection.redis.rpush("list", "x")
    bad, good = turns.pipeline(), turns.pipeline()
    bad.incr("list").incr("fine")
    good.incr("other")
    bad_results, good_results = await asyncio.gather(
        bad.execute(raise_on_error=False), good.execute()
    )
    assert isinstance(bad_results[0], ResponseError) and bad_results[1] == 1
    assert good_results == [1]
    raising = turns.pipeline().incr("list")
    with pytest.raises(ResponseError):
        await raising.execute()


async def test_redis_away_fails_every_request_of_the_turn_then_recovers(
    opened: Opened, redis_server: RedisServer
) -> None:
    turns = opened.turns
    await asyncio.to_thread(redis_server.stop)
    batches = [turns.pipeline().incr("k") for _ in range(3)]
    outcomes = await asyncio.gather(*(batch.execute() for batch in batches), return_exceptions=True)
    assert all(isinstance(outcome, ConnectionError) for outcome in outcomes), outcomes
    await asyncio.to_thread(redis_server.start)
    assert await turns.pipeline().incr("k").execute() == [1]


async def test_a_round_trip_cancelled_as_the_node_stops_fails_its_requests(
    opened: Opened,
) -> None:
    connection, turns = opened.connection, opened.turns
    # A slow Redis: the round trip is under way when the node stops.
    slow = asyncio.create_task(connection.redis.execute_command("DEBUG", "SLEEP", "0.5"))
    await asyncio.sleep(0.05)
    waiting = asyncio.ensure_future(turns.pipeline().incr("k").execute())
    await asyncio.sleep(0.05)
    assert turns.tasks
    for task in turns.tasks:
        task.cancel()
    with pytest.raises(ConnectionError, match="closed its connections"):
        await waiting
    await slow


async def test_a_round_trip_cancelled_before_it_started_fails_its_requests(
    opened: Opened,
) -> None:
    """The node stops in the loop turn a request queued its writes: the round trip's task is
    cancelled before its first step took them, and the request meets Redis as away rather
    than wait for ever; nothing was sent, and the next round trip goes."""
    turns = opened.turns
    waiting = turns.send(turns.pipeline().incr("k").commands)
    assert turns.tasks
    for task in turns.tasks:
        task.cancel()
    with pytest.raises(ConnectionError, match="closed its connections"):
        await waiting
    assert await turns.pipeline().incr("k").execute() == [1]
