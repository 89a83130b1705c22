"""The writes of a loop turn's requests go to Redis in one round trip (``cluster/turns.py``),
each request getting its own commands' results, on a real Redis server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from redis.exceptions import ConnectionError, ResponseError

from starlette_cometd.cluster.connection import Connection, connect
from starlette_cometd.cluster.turns import Turns
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


@pytest.fixture
async def opened(redis_server: RedisServer) -> AsyncIterator[Opened]:
    """A node's connection to the test's Redis, and turns on it."""
    connection = await connect(redis_server.url)
    counted = Counted(connection.redis)
    yield Opened(connection, counted, Turns(counted))
    await connection.aclose()


async def test_one_round_trip_per_loop_turn_in_order(opened: Opened) -> None:
    connection, counted, turns = opened.connection, opened.counted, opened.turns
    first, second, third = turns.pipeline(), turns.pipeline(), turns.pipeline()
    first.set("k", 1)
    second.incr("k").incr("k")
    third.get("k")
    script = connection.script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    await script(keys=["k"], args=[10], client=third)
    assert len(third) == 2
    results = await asyncio.gather(first.execute(), second.execute(), third.execute())
    assert list(results) == [[True], [2, 3], [b"3", 13]]
    assert counted.pipelines == 1
    # A turn's requests that come while a round trip is under way go together in the next.
    pending = [turns.pipeline().incr("n") for _ in range(5)]
    replies = await asyncio.gather(*(batch.execute() for batch in pending))
    assert sorted(r[0] for r in replies) == [1, 2, 3, 4, 5]
    assert counted.pipelines == 2
    assert await turns.pipeline().execute() == []  # nothing to send: no round trip
    assert counted.pipelines == 2


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
