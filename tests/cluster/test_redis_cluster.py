"""The Redis engine on a Redis Cluster (issue 11): three redis-server processes joined into one
cluster on loopback ports, three server processes each told of a different node of it, behind
the round-robin proxy. The logs' partitions land on different shards, every request may reach
another process, and a shard stopped is an outage the clients are told of, then recover from.
On both stacks: the standalone server's processes (native) and nodes on uvicorn's own protocol
(asgi)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
import redis

from starlette_cometd import (
    EngineUnavailableError,
    LongPollingServiceContextBuilder,
    RemovalReason,
    SessionRemoved,
)
from starlette_cometd.cluster.connection import connect
from starlette_cometd.cluster.keys import Keys, partition_tags
from support.cluster import (
    Client,
    Cluster,
    asgi_cluster,
    cli_cluster,
    gather_until,
    leave_without_ending,
)
from support.drivers import require
from support.redis_servers import RedisCluster, RedisServer, redis_missing

PARTITIONS = 3
# Channels that fall in every one of the three partitions.
CHANNELS = [f"/chat/{n}" for n in range(6)]


def start(stack: str, urls: list[str]) -> AbstractAsyncContextManager[Cluster]:
    if stack == "native":
        return cli_cluster(urls, 3, "--redis-partitions", str(PARTITIONS))
    return asgi_cluster(urls, 3, partitions=PARTITIONS)


@pytest.fixture(params=["native", "asgi"])
def stack(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def cluster(stack: str, redis_cluster_urls: list[str]) -> AsyncIterator[Cluster]:
    async with start(stack, redis_cluster_urls) as running:
        yield running


@pytest.fixture
def own_redis_cluster(tmp_path: Path) -> RedisCluster:
    """A Redis Cluster of the test's own, which it may stop nodes of (started by the test)."""
    require("redis-server", redis_missing())
    return RedisCluster(tmp_path / "redis-cluster")


def keys_by_node(redis_cluster: RedisCluster) -> list[set[str]]:
    """The keys each node of the Redis Cluster holds, asked of each."""
    held = []
    for node in redis_cluster.nodes:
        with node.client() as client:
            held.append({key.decode() for key in client.scan_iter(count=1000)})
    return held


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "not in time"
        await asyncio.sleep(0.1)


def test_the_channels_of_the_tests_fall_in_every_partition() -> None:
    keys = Keys("cometd", PARTITIONS)
    assert {keys.partition(channel) for channel in CHANNELS} == set(range(PARTITIONS))


async def test_each_request_may_reach_another_process_and_the_keys_spread_over_the_shards(
    cluster: Cluster, redis_cluster: RedisCluster
) -> None:
    subscriber, publisher = Client(cluster.url), Client(cluster.url)
    # Handshake on one process, subscribe on the next, connect on the third.
    assert (await subscriber.handshake())["successful"] is True
    [subscribed] = await subscriber.subscribe("/chat/*")
    assert subscribed["successful"] is True, subscribed
    reply, _ = await subscriber.connect()
    assert reply["successful"] is True, reply
    assert len(set(cluster.proxy.routed)) == 3
    assert (await publisher.handshake())["successful"] is True
    for n in range(30):
        published = await publisher.publish(CHANNELS[n % len(CHANNELS)], {"n": n})
        assert published["successful"] is True, published
    received = await gather_until(subscriber, 30)
    numbers = [m["data"]["n"] for m in received]
    assert sorted(numbers) == list(range(30)), "each once"
    # In order per channel (channels of different partitions are ordered apart).
    for channel in CHANNELS:
        sent = [n for n in range(30) if CHANNELS[n % len(CHANNELS)] == channel]
        assert [m["data"]["n"] for m in received if m["channel"] == channel] == sent
    # Every shard holds the log of one partition; the sessions are where their slots are.
    held = keys_by_node(redis_cluster)
    logs = [{key for key in keys if key.endswith(":log")} for keys in held]
    assert [len(node_logs) for node_logs in logs] == [1, 1, 1], logs
    for client_id in (subscriber.client_id, publisher.client_id):
        key = f"cometd:{{s:{client_id}}}"
        [owner] = [n for n, keys in enumerate(held) if key in keys]
        with redis_cluster.nodes[owner].client() as client:
            slot = client.cluster("KEYSLOT", key)
            assert client.cluster("COUNTKEYSINSLOT", slot) >= 1


async def test_a_session_moving_between_processes_is_served_by_one_at_a_time(
    redis_cluster_urls: list[str],
) -> None:
    """Each connect on another process takes the session over; the process that had it is told
    (on the sharded control channel) and lets it go."""
    async with asgi_cluster(redis_cluster_urls, 3, partitions=PARTITIONS) as cluster:
        client = Client(cluster.url)
        await client.handshake()
        await client.subscribe("/chat/*")
        for _ in range(4):
            reply, _ = await client.connect()
            assert reply["successful"] is True, reply

            async def served_once() -> bool:
                serving = [c for c in cluster.contexts if c.session_info(client.client_id)]
                return len(serving) == 1

            await until(served_once)


async def test_an_expired_session_is_removed_once_in_the_cluster(
    redis_cluster_urls: list[str],
) -> None:
    def short() -> LongPollingServiceContextBuilder:
        return LongPollingServiceContextBuilder().timeout(0.5).max_interval(0.5)

    async with asgi_cluster(redis_cluster_urls, 3, short, partitions=PARTITIONS) as cluster:
        receivers = [context.rx() for context in cluster.contexts]
        client = Client(cluster.url)
        await client.handshake()
        await client.connect()

        async def counted() -> bool:
            # The nodes' counters are in several slots: read from one node all the same.
            totals = await cluster.contexts[0].cluster_stats()
            return totals["processes"] == 3 and totals["sessions_created"] == 1

        await until(counted, 15)
        [serving] = [c for c in cluster.contexts if c.session_info(client.client_id)]
        # Its process leaves the cluster without ending it (as a process killed would): one of
        # the others ends it once its deadline in the Redis Cluster passed.
        await leave_without_ending(serving)
        others = [r for r, c in zip(receivers, cluster.contexts, strict=True) if c is not serving]
        removed: list[SessionRemoved] = []

        async def announced() -> bool:
            for receiver in others:
                while (event := receiver.try_recv()) is not None:
                    if isinstance(event, SessionRemoved):
                        removed.append(event)
            return bool(removed)

        await until(announced)
        # Its deadline was taken out with it (atomically, by the node that announced it) and
        # its record deleted: no other node can take it again.
        with redis.RedisCluster.from_url(redis_cluster_urls[0]) as raw:
            assert raw.zscore("cometd:{deadlines}", client.client_id) is None
            assert raw.exists(f"cometd:{{s:{client.client_id}}}") == 0
            # Nor does it count against its cookie's limit any more.
            by_cookie = f"cometd:{{qb:{client.cookies['BAYEUX_BROWSER']}}}"
            assert raw.zscore(by_cookie, client.client_id) is None
        await announced()
        assert [(str(e.client_id), e.reason) for e in removed] == [
            (client.client_id, RemovalReason.EXPIRED)
        ]
        reply, _ = await client.connect()
        assert reply.get("error") == "402::session_unknown"


async def test_the_sessions_of_one_address_are_counted_over_the_redis_cluster(
    stack: str, redis_cluster_urls: list[str]
) -> None:
    """The limit per address over the shards: a session gone without leaving its set (its end
    never written) is found by a check of the full set, and counts no more."""
    by_address = "cometd:{qa:127.0.0.1}"
    with redis.RedisCluster.from_url(redis_cluster_urls[0]) as raw:
        raw.delete(by_address)  # the Redis Cluster is the test session's
        now_ms = int(raw.time()[0]) * 1000
        raw.zadd(by_address, {"ab" * 20: now_ms - 60_000})
    if stack == "native":
        options = ("--redis-partitions", str(PARTITIONS), "--max-sessions-per-address", "2")
        started = cli_cluster(redis_cluster_urls, 3, *options)
    else:
        started = asgi_cluster(redis_cluster_urls, 3, partitions=PARTITIONS, per_address=2)
    async with started as cluster:
        clients = [Client(cluster.url) for _ in range(3)]
        replies = [await client.handshake() for client in clients]
        assert [r.get("error") for r in replies] == [
            None,
            None,
            "403:too_many_sessions_per_address:handshake_denied",
        ]
        with redis.RedisCluster.from_url(redis_cluster_urls[0]) as raw:
            counted = {member.decode() for member in raw.zrange(by_address, 0, -1)}
            assert counted == {clients[0].client_id, clients[1].client_id}
            raw.delete(by_address)


async def test_a_shard_stopped_is_an_outage_clients_are_told_of_then_recover_from(
    stack: str, own_redis_cluster: RedisCluster
) -> None:
    await asyncio.to_thread(own_redis_cluster.start)
    try:
        async with start(stack, own_redis_cluster.urls) as cluster:
            await _outage_and_recovery(cluster, own_redis_cluster)
    finally:
        await asyncio.to_thread(own_redis_cluster.stop)


async def _outage_and_recovery(cluster: Cluster, redis_cluster: RedisCluster) -> None:
    client = Client(cluster.url)
    await client.handshake()
    await client.subscribe("/a")
    await client.connect()
    # Stop the shard that holds the log of /a's partition.
    log = Keys("cometd", PARTITIONS).log(Keys("cometd", PARTITIONS).partition("/a"))
    [shard] = [n for n, keys in enumerate(keys_by_node(redis_cluster)) if log in keys]
    await asyncio.to_thread(redis_cluster.nodes[shard].stop)

    # Meanwhile a publish to /a gets a Bayeux error with advice to retry, on every process,
    # and never a 5xx (Client.send checks each reply is a 200): first while the shard does not
    # answer, then once the others declared the cluster down (CLUSTERDOWN for every key).
    await _told_to_retry(client, cluster)
    live = redis_cluster.nodes[(shard + 1) % len(redis_cluster.nodes)]

    async def declared_down() -> bool:
        with live.client() as raw:
            return bool(raw.cluster("INFO")["cluster_state"] == "fail")

    await until(declared_down, 60)
    await _told_to_retry(client, cluster)
    newcomer = Client(cluster.url)
    reply = await newcomer.handshake()
    assert reply["successful"] is False and reply["advice"]["reconnect"] == "retry", reply

    await asyncio.to_thread(redis_cluster.nodes[shard].start)

    # The shard came back empty: its log is lost, so the sessions cannot be recovered and the
    # client is told (402); it handshakes again and everything works.
    async def told() -> bool:
        # Answered at once, not held: a connect held its whole timeout on top of a take-over's
        # waits could outlast the client's own 30 s while the cluster comes back.
        reply, _ = await client.connect(advice={"timeout": 0})
        if reply["successful"] is False and reply.get("error") != "402::session_unknown":
            assert reply["advice"]["reconnect"] == "retry", reply  # still coming back
        return reply.get("error") == "402::session_unknown"

    await until(told, 60)
    assert (await client.handshake())["successful"] is True
    await client.subscribe("/a", "/chat/*")
    await client.connect()
    publisher = Client(cluster.url)
    assert (await publisher.handshake())["successful"] is True
    for channel in ("/a", *CHANNELS):
        assert (await publisher.publish(channel, channel))["successful"] is True
    received = await gather_until(client, 1 + len(CHANNELS))
    assert sorted(m["data"] for m in received) == sorted(["/a", *CHANNELS])


async def _told_to_retry(client: Client, cluster: Cluster) -> None:
    for _ in range(3):
        [reply] = await client.send(
            {"channel": "/a", "clientId": client.client_id, "data": 1, "id": "p"}
        )
        assert reply["successful"] is False, reply
        assert reply["error"] == "503::engine_unavailable"
        assert reply["id"] == "p" and reply["advice"]["reconnect"] == "retry"
    for context in cluster.contexts:
        with pytest.raises(EngineUnavailableError):
            await context.send("/a", "lost")


async def test_the_url_of_any_node_finds_the_cluster_and_a_plain_server_stays_one(
    redis_cluster_urls: list[str], redis_url: str
) -> None:
    for url in redis_cluster_urls:
        connection = await connect(url)
        try:
            assert connection.cluster is True
            # Keys of every shard are reached from any node, scripts included.
            for tag in partition_tags(PARTITIONS):
                script = connection.script("return redis.call('INCR', KEYS[1])")
                assert await script(keys=[f"t:{{{tag}}}"]) >= 1
        finally:
            await connection.aclose()
    connection = await connect(redis_url)
    try:
        assert connection.cluster is False
    finally:
        await connection.aclose()
    with pytest.raises(ValueError, match="only database 0"):
        await connect(f"{redis_cluster_urls[0]}/1")


def connected_clients(servers: list[RedisServer]) -> int:
    total = 0
    for server in servers:
        with server.client() as client:
            total += int(client.info("clients")["connected_clients"]) - 1  # not this one
    return total


@pytest.mark.parametrize("kind", ["cluster", "single"])
async def test_a_connection_closed_opens_no_new_ones_for_a_late_command(
    kind: str,
    redis_cluster: RedisCluster,
    redis_cluster_urls: list[str],
    redis_server: RedisServer,
) -> None:
    """A node that has left may still have a command under way (a take-over waiting for an
    answer): it meets Redis as away. redis-py would open new connections for it, and a Redis
    Cluster client would initialize itself again, all of which nothing would ever close."""
    from redis.exceptions import ConnectionError

    servers = redis_cluster.nodes if kind == "cluster" else [redis_server]
    url = redis_cluster_urls[0] if kind == "cluster" else redis_server.url
    before = connected_clients(servers)
    connection = await connect(url)
    script = connection.script("return redis.call('INCR', KEYS[1])")
    assert await script(keys=["t:{a}"]) == 1
    assert connected_clients(servers) > before
    await connection.aclose()
    with pytest.raises(ConnectionError, match="closed its connections"):
        await connection.redis.get("t:{a}")
    with pytest.raises(ConnectionError, match="closed its connections"):
        await script(keys=["t:{a}"])
    pipeline = connection.redis.pipeline(transaction=False)
    await script(keys=["t:{a}"], client=pipeline)
    with pytest.raises(ConnectionError, match="closed its connections"):
        await pipeline.execute()
    await until(lambda: asyncio.to_thread(lambda: connected_clients(servers) == before), 5)


async def test_a_cluster_declared_down_is_redis_away_not_bad_data(
    own_redis_cluster: RedisCluster,
) -> None:
    """CLUSTERDOWN is a ResponseError in redis-py, which the node takes for bad data under one
    key: the connection reports it as a ConnectionError, from commands and from pipelines."""
    await asyncio.to_thread(own_redis_cluster.start)
    connection = await connect(own_redis_cluster.urls[0])
    try:
        tags = partition_tags(PARTITIONS)
        await asyncio.to_thread(own_redis_cluster.nodes[2].stop)
        live = own_redis_cluster.nodes[0]

        async def declared_down() -> bool:
            with live.client() as raw:
                return bool(raw.cluster("INFO")["cluster_state"] == "fail")

        await until(declared_down, 60)
        # A key on a shard that still runs.
        key = f"t:{{{tags[0]}}}"
        with pytest.raises(redis.ConnectionError, match="cluster is down"):
            await connection.redis.incr(key)
        with pytest.raises(redis.ConnectionError, match="cluster is down"):
            async with connection.redis.pipeline(transaction=False) as pipe:
                pipe.incr(key)
                await pipe.execute(raise_on_error=False)
    finally:
        await connection.aclose()
        await asyncio.to_thread(own_redis_cluster.stop)


async def test_a_connection_closed_under_a_command_is_redis_away_not_a_crash(
    redis_cluster_urls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """redis-py's Redis Cluster client closes all its connections on CLUSTERDOWN; one another
    task of the same client was opening meanwhile fails its next write with an AttributeError,
    no RedisError (seen under the outage of test_a_shard_stopped_is_an_outage...). The
    connection reports it as a ConnectionError, from commands and from pipelines, so that a
    request gets retry advice and a log reader reads again."""
    from redis.asyncio.connection import AbstractConnection

    connection = await connect(redis_cluster_urls[0])
    key = "t:{p0}"
    opened = AbstractConnection.on_connect_check_health
    closing: list[bool] = []

    async def closed_while_opened(self: AbstractConnection, *args: Any, **options: Any) -> None:
        await opened(self, *args, **options)
        if closing:
            closing.pop()
            await self.disconnect()  # as the other task's closing of every connection does

    async def closed_next_time() -> None:
        """The connection the next command on ``key`` uses is opened anew, and closed then."""
        await connection.redis.get_node_from_key(key).disconnect()
        closing.append(True)

    try:
        await connection.redis.get(key)  # the cluster's layout, found before any closing
        monkeypatch.setattr(AbstractConnection, "on_connect_check_health", closed_while_opened)
        await closed_next_time()
        with pytest.raises(redis.ConnectionError, match="closed under the command"):
            await connection.redis.get(key)
        await closed_next_time()
        with pytest.raises(redis.ConnectionError, match="closed under the command"):
            async with connection.redis.pipeline(transaction=False) as pipe:
                pipe.get(key)
                await pipe.execute(raise_on_error=False)
        assert await connection.redis.get(key) is None  # and then it works again
    finally:
        await connection.aclose()
