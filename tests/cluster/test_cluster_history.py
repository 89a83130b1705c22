"""The history of a cluster (issue 12): kept in Redis and shared by every process, so a client
replays on whichever process it reaches what was published on any; ids grow the same for all,
what is pushed out or lost with Redis is refused in Salesforce's words, and the application
reads it from any process. On both stacks, over raw HTTP (real clients are in
test_cluster_replay_clients.py)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
from redis.asyncio import Redis

from starlette_cometd import EngineUnavailableError, LongPollingServiceContextBuilder, ReplayIdError
from support.cluster import Client, Cluster, asgi_cluster, cli_cluster, gather_until
from support.redis_servers import RedisServer

Message = dict[str, Any]
ClusterOf = Callable[..., AbstractAsyncContextManager[Cluster]]


def invalid(replay_id: Any) -> str:
    """Salesforce's error for an id that cannot be replayed, with the id as it was sent."""
    return (
        f"400::The replayId {{{replay_id}}} you provided was invalid.  Please provide a valid ID,"
        " -2 to replay all events, or -1 to replay only new events."
    )


@pytest.fixture(params=["native", "asgi"])
def kept(request: pytest.FixtureRequest, redis_url: str) -> ClusterOf:
    """Starts three processes keeping ``size`` messages of each channel under /chat."""

    def start(size: int = 1000, *, partitions: int = 1) -> AbstractAsyncContextManager[Cluster]:
        if request.param == "native":
            return cli_cluster(
                redis_url,
                3,
                *("--history", f"/chat/**:{size}", "--redis-partitions", str(partitions)),
                *("--timeout", "1"),
            )

        def builder() -> LongPollingServiceContextBuilder:
            return LongPollingServiceContextBuilder().timeout(1).history("/chat/**", size=size)

        return asgi_cluster(redis_url, 3, builder, partitions=partitions)

    return start


async def publish(cluster: Cluster, node: int, channel: str, numbers: range) -> None:
    """Messages ``{"n": n}`` from a publisher of its own on process ``node``, in one batch."""
    publisher = Client(cluster.node_url(node))
    await publisher.handshake()
    batch = [
        {"channel": channel, "clientId": publisher.client_id, "data": {"n": n}} for n in numbers
    ]
    replies = await publisher.send(*batch)
    assert all(reply["successful"] for reply in replies), replies


async def subscribe(client: Client, channel: str, replay: Any) -> Message:
    [reply] = await client.send(
        {
            "channel": "/meta/subscribe",
            "clientId": client.client_id,
            "subscription": channel,
            "ext": {"replay": {channel: replay}},
        }
    )
    return reply


def numbers(messages: list[Message]) -> list[int]:
    return [m["data"]["n"] for m in messages]


def ids(messages: list[Message]) -> list[int]:
    return [m["data"]["event"]["replayId"] for m in messages]


async def test_a_replay_on_one_process_gets_what_was_published_on_another(
    kept: ClusterOf,
) -> None:
    async with kept() as cluster:
        listener = Client(cluster.node_url(0))
        await listener.handshake(ext={"replay": True})
        reply = await subscribe(listener, "/chat/a", -1)
        assert reply["successful"] is True, reply
        await publish(cluster, 1, "/chat/a", range(5))
        live = await gather_until(listener, 5)
        assert numbers(live) == list(range(5))
        first = ids(live)
        assert all(b == a + 1 for a, b in itertools.pairwise(first)), first
        assert all(m["data"]["event"]["createdDate"].endswith("Z") for m in live)

        # Gone after the third; back on another process with that id.
        await publish(cluster, 2, "/chat/a", range(5, 8))
        back = Client(cluster.node_url(2))
        reply = await back.handshake(ext={"replay": True})
        assert reply["ext"]["replay"] is True
        assert (await subscribe(back, "/chat/a", first[2]))["successful"] is True
        await publish(cluster, 0, "/chat/a", range(8, 10))
        again = await gather_until(back, 7)
        assert numbers(again) == list(range(3, 10)), "the missed, then live ones: no gap, once"
        assert ids(again)[:2] == first[3:]
        every = ids(again)
        assert every == sorted(set(every))

        # Every message kept, from any process; the same bytes everywhere.
        everything = Client(cluster.node_url(1))
        await everything.handshake()
        assert (await subscribe(everything, "/chat/a", -2))["successful"] is True
        assert await gather_until(everything, 10) == live + again[2:]


async def test_what_cannot_be_replayed_is_refused_on_every_process(kept: ClusterOf) -> None:
    async with kept(size=3) as cluster:
        await publish(cluster, 0, "/chat/a", range(5))
        reader = Client(cluster.node_url(1))
        await reader.handshake()
        assert (await subscribe(reader, "/chat/a", -2))["successful"] is True
        kept_ids = ids(await gather_until(reader, 3))
        assert len(kept_ids) == 3
        for node in range(3):
            client = Client(cluster.node_url(node))
            await client.handshake()
            # Pushed out (the one before the oldest kept is the newest gone: fine), never given,
            # from before the history began.
            for lost in [kept_ids[0] - 2, kept_ids[-1] + 10_000, 5]:
                refused = await subscribe(client, "/chat/a", lost)
                assert refused["successful"] is False, (lost, kept_ids, refused)
                assert refused["error"] == invalid(lost), refused
            at_edge = await subscribe(client, "/chat/a", kept_ids[0] - 1)
            assert at_edge["successful"] is True, at_edge
            assert ids(await gather_until(client, 3)) == kept_ids
        # A channel without history, and a wildcard: refused as on one process.
        client = Client(cluster.node_url(2))
        await client.handshake()
        refused = await subscribe(client, "/other", -2)
        assert refused["successful"] is False
        assert "replay_not_available" in refused["error"]
        refused = await subscribe(client, "/chat/*", -2)
        assert "replay_wildcard_unsupported" in refused["error"]
        refused = await subscribe(client, "/chat/a", "x")
        assert refused["error"] == invalid('"x"')


async def test_channels_of_every_partition_keep_their_own_history(kept: ClusterOf) -> None:
    async with kept(size=2, partitions=3) as cluster:
        channels = [f"/chat/{n}" for n in range(6)]
        for n, channel in enumerate(channels):
            await publish(cluster, n % 3, channel, range(n, n + 3))
        for n, channel in enumerate(channels):
            client = Client(cluster.node_url((n + 1) % 3))
            await client.handshake()
            assert (await subscribe(client, channel, -2))["successful"] is True
            assert numbers(await gather_until(client, 2)) == [n + 1, n + 2]


async def test_a_session_served_elsewhere_is_taken_over_to_replay(kept: ClusterOf) -> None:
    async with kept() as cluster:
        await publish(cluster, 0, "/chat/a", range(3))
        client = Client(cluster.node_url(0))
        await client.handshake()
        # Its subscribe goes to another process: the session moves there, and replays there.
        client.url = cluster.node_url(1)
        assert (await subscribe(client, "/chat/a", -2))["successful"] is True
        assert numbers(await gather_until(client, 3)) == [0, 1, 2]
        await publish(cluster, 2, "/chat/a", range(3, 4))
        assert numbers(await gather_until(client, 1)) == [3]


@pytest.mark.parametrize("redis_kind", ["redis", "redis-cluster"])
async def test_the_application_reads_the_clusters_history(
    redis_kind: str, request: pytest.FixtureRequest
) -> None:
    def builder() -> LongPollingServiceContextBuilder:
        return LongPollingServiceContextBuilder().timeout(1).history("/chat/**", size=3)

    urls = request.getfixturevalue("redis_url" if redis_kind == "redis" else "redis_cluster_urls")
    async with asgi_cluster(urls, 2, builder, partitions=3) as cluster:
        one, other = cluster.contexts
        for n in range(4):
            await one.send("/chat/a", {"n": n})
        kept = await other.history("/chat/a")
        assert numbers(kept) == [1, 2, 3]
        await one.send("/chat/b", {"n": 0})
        figures = await other.cluster_stats()
        assert figures["history_channels"] == 2
        assert figures["history_messages"] == 4
        assert figures["history_oldest_id"] == kept[0]["data"]["event"]["replayId"]
        assert other.stats()["history_messages"] == 0, "a process keeps none itself"
        after = await other.history("/chat/a", after=kept[0]["data"]["event"]["replayId"])
        assert after == kept[1:]
        assert await other.history("/chat/a", after=-1) == []
        with pytest.raises(ReplayIdError, match="replay_not_available"):
            await other.history("/news")
        with pytest.raises(ReplayIdError) as lost:
            await other.history("/chat/a", after=5)
        assert str(lost.value) == invalid(5)


async def once_back(call: Callable[[], Awaitable[Any]]) -> None:
    """Calls until it passes: each node finds Redis back (empty) on its first call after."""
    for _ in range(50):
        try:
            await call()
            return
        except EngineUnavailableError:
            await asyncio.sleep(0.2)
    await call()


async def test_a_history_lost_with_redis_refuses_the_ids_from_before(
    redis_server: RedisServer, redis_url: str
) -> None:
    def builder() -> LongPollingServiceContextBuilder:
        return LongPollingServiceContextBuilder().timeout(1).history("/chat/**")

    async with asgi_cluster(redis_url, 2, builder) as cluster:
        one, other = cluster.contexts
        for n in range(5):  # the log's first entries, before anything was kept
            await one.send("/news", {"n": n})
        await one.send("/chat/a", {"n": 0})
        [before] = await other.history("/chat/a")
        seen = before["data"]["event"]["replayId"]
        # Redis's clock in ms x 1,000, plus one, whatever the log held before.
        assert seen % 1000 == 1, seen
        redis_server.stop()
        redis_server.start()  # empty
        await once_back(lambda: one.send("/chat/a", {"n": 1}))
        await once_back(lambda: other.history("/chat/a"))
        with pytest.raises(ReplayIdError) as lost:
            await other.history("/chat/a", after=seen)
        assert str(lost.value) == invalid(seen)
        [since] = await other.history("/chat/a")
        assert since["data"] == {"n": 1, "event": since["data"]["event"]}
        assert since["data"]["event"]["replayId"] > seen, "ids only grow"


async def test_replays_asked_again_and_again_are_bounded(kept: ClusterOf) -> None:
    """As on one process: ten channels' worth of the largest history (10 x 60) replayed and
    undelivered at most, in one batch or several; the cluster reads no more than that."""
    async with kept(size=60) as cluster:
        await publish(cluster, 0, "/chat/a", range(60))
        await publish(cluster, 0, "/chat/b", range(60))
        client = Client(cluster.node_url(1))
        await client.handshake()
        asking: list[Message] = []
        for channel in ("/chat/a", "/chat/b"):
            replaying = {
                "channel": "/meta/subscribe",
                "clientId": client.client_id,
                "subscription": channel,
                "ext": {"replay": {channel: -2}},
            }
            leaving = {**replaying, "channel": "/meta/unsubscribe"}
            del leaving["ext"]
            asking += [replaying, leaving] * 6
        replies = await client.send(*asking)
        outcomes = [r["successful"] for r in replies if r["channel"] == "/meta/subscribe"]
        assert outcomes == [True] * 10 + [False] * 2, [r.get("error") for r in replies]
        refused = [r for r in replies if not r["successful"]]
        assert {r["error"] for r in refused} == {"400:/chat/b:replay_limit_exceeded"}
        received = await gather_until(client, 600)
        assert numbers(received) == list(range(60)) * 10
        # Each from another id: read apart, until the reads pass the bound; those after it
        # are refused unread.
        ids_a = ids(received[:60])
        asking = [
            {
                "channel": "/meta/subscribe",
                "clientId": client.client_id,
                "subscription": "/chat/a",
                "ext": {"replay": {"/chat/a": ids_a[k]}},
            }
            for k in range(14)
        ]
        replies = await client.send(*asking)
        assert [r["successful"] for r in replies] == [True] * 11 + [False] * 3
        assert {r["error"] for r in replies[11:]} == {"400:/chat/a:replay_limit_exceeded"}
        assert len(await gather_until(client, 594)) == 594


async def test_the_history_in_redis_is_bounded(kept: ClusterOf, redis: Redis) -> None:
    async with kept(size=2) as cluster:
        await publish(cluster, 0, "/chat/a", range(10))
        [stream] = await redis.keys("cometd:*:h:/chat/a")
        assert await redis.xlen(stream) == 2


async def test_a_replay_not_yet_delivered_moves_with_its_session(kept: ClusterOf) -> None:
    """Its subscribe on one process, its next connect on another (a load balancer without
    sticky sessions): the replay queued on the first goes with the session, before what was
    published after it, once."""
    async with kept() as cluster:
        await publish(cluster, 0, "/chat/a", range(5))
        client = Client(cluster.node_url(1))
        await client.handshake()
        assert (await subscribe(client, "/chat/a", -2))["successful"] is True
        await publish(cluster, 0, "/chat/a", range(5, 8))
        client.url = cluster.node_url(2)
        assert numbers(await gather_until(client, 8)) == list(range(8))
        # Delivered now: it does not come again when the session moves on.
        client.url = cluster.node_url(0)
        await publish(cluster, 1, "/chat/a", range(8, 9))
        assert numbers(await gather_until(client, 1)) == [8]
        reply, rest = await client.connect(advice={"timeout": 0})
        assert reply["successful"] is True and rest == []


async def test_every_request_on_another_process_misses_nothing(kept: ClusterOf) -> None:
    """Behind a round-robin proxy each request of the client reaches the next process: its
    replay and what is published meanwhile come once, in order, wherever it connects."""
    async with kept() as cluster:
        await publish(cluster, 0, "/chat/a", range(20))
        client = Client(cluster.url)
        await client.handshake()
        await client.connect(advice={"timeout": 0})
        assert (await subscribe(client, "/chat/a", -2))["successful"] is True
        await publish(cluster, 1, "/chat/a", range(20, 30))
        received = await gather_until(client, 30)
        assert numbers(received) == list(range(30))


async def test_a_publish_a_broken_history_refuses_is_neither_stored_nor_delivered(
    kept: ClusterOf, redis: Redis
) -> None:
    """A channel's history of another type refuses the publish before the log takes it: the
    publisher is told, nobody gets it, and the other channels of its partition carry on."""
    async with kept() as cluster:
        subscriber, publisher = Client(cluster.node_url(0)), Client(cluster.node_url(1))
        for client in (subscriber, publisher):
            await client.handshake()
        await subscriber.subscribe("/chat/a", "/chat/b")
        await subscriber.connect()
        await publish(cluster, 1, "/chat/a", range(1))
        stream = "cometd:{p0}:h:/chat/a"
        assert await redis.xlen(stream) == 1
        await redis.rename(stream, f"{stream}:kept")
        await redis.set(stream, "not a history")
        refused = await publisher.publish("/chat/a", {"n": 1})
        assert (refused["successful"], refused.get("error")) == (False, "500::message_not_stored")
        await redis.delete(stream)
        await redis.rename(f"{stream}:kept", stream)
        assert (await publisher.publish("/chat/b", {"n": 2}))["successful"] is True
        assert (await publisher.publish("/chat/a", {"n": 3}))["successful"] is True
        assert numbers(await gather_until(subscriber, 3)) == [0, 2, 3]


async def test_bad_replays_in_a_record_are_passed_over(kept: ClusterOf, redis: Redis) -> None:
    async with kept() as cluster:
        await publish(cluster, 0, "/chat/a", range(3))
        client = Client(cluster.node_url(0))
        await client.handshake()
        assert (await subscribe(client, "/chat/a", -1))["successful"] is True
        key = f"cometd:{{s:{client.client_id}}}"
        for garbage in ["{", "[1, 2]", '[["/chat/a", "x", 1]]', '[["/chat/a", -2, 1e400]]']:
            await redis.hset(key, "rp", garbage)
            client.url = cluster.node_url(1 if client.url == cluster.node_url(2) else 2)
            reply, messages = await client.connect(advice={"timeout": 0})
            assert reply["successful"] is True, reply
            assert messages == []
        await publish(cluster, 0, "/chat/a", range(3, 4))
        assert numbers(await gather_until(client, 1)) == [3]


async def test_a_replay_passed_over_when_moving_leaves_the_record(
    kept: ClusterOf, redis: Redis
) -> None:
    """A replay still named when its session moves, of a channel it left meanwhile, is not
    queued, and the record stops naming it: a later move must not queue it after the session
    subscribes again."""
    async with kept() as cluster:
        await publish(cluster, 0, "/chat/a", range(3))
        client = Client(cluster.node_url(1))
        await client.handshake()
        assert (await subscribe(client, "/chat/a", -2))["successful"] is True
        key = f"cometd:{{s:{client.client_id}}}"
        assert await redis.hget(key, "rp"), "named until delivered"
        [left] = await client.send(
            {
                "channel": "/meta/unsubscribe",
                "clientId": client.client_id,
                "subscription": "/chat/a",
            }
        )
        assert left["successful"] is True
        client.url = cluster.node_url(2)
        reply, messages = await client.connect(advice={"timeout": 0})
        assert reply["successful"] is True and messages == []
        assert await redis.hget(key, "rp") is None
