"""The application's API in a cluster (issue 11): from any process, ``send`` reaches every
subscriber, ``send_to_client`` and ``remove_session`` reach a session wherever it is served, and a
session's end is one ``SessionRemoved`` in the whole cluster."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from redis.asyncio import Redis

from starlette_cometd import (
    ClientNotFoundError,
    EngineUnavailableError,
    LongPollingServiceContext,
    LongPollingServiceContextBuilder,
    RemovalReason,
    SessionRemoved,
)
from starlette_cometd.cluster import node as node_module
from support.cluster import Client, asgi_cluster, gather_until, leave_without_ending
from support.redis_servers import RedisServer


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 15) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "not in time"
        await asyncio.sleep(0.1)


async def test_send_and_send_to_client_from_any_process(redis_url: str) -> None:
    async with asgi_cluster(redis_url) as cluster:
        client = Client(cluster.url)
        await client.handshake()
        await client.subscribe("/news")
        await client.connect()
        for n, context in enumerate(cluster.contexts):
            await context.send("/news", {"broadcast": n})
            await context.send_to_client("/private", client.client_id, {"direct": n})
        received = await gather_until(client, 6)
        assert [m["data"] for m in received] == [
            {"broadcast": 0},
            {"direct": 0},
            {"broadcast": 1},
            {"direct": 1},
            {"broadcast": 2},
            {"direct": 2},
        ]
        assert {m["channel"] for m in received} == {"/news", "/private"}
        with pytest.raises(ClientNotFoundError):
            await cluster.contexts[0].send_to_client("/private", "ab" * 20, "nobody")


async def test_remove_session_from_another_process_ends_it_once(redis_url: str) -> None:
    async with asgi_cluster(redis_url) as cluster:
        receivers = [context.rx() for context in cluster.contexts]
        client = Client(cluster.url)
        await client.handshake()
        await client.connect()
        # Whichever process serves it, one that does not (or does) can end it.
        for context in cluster.contexts:
            if context.session_info(client.client_id) is None:
                await context.remove_session(client.client_id)
                break
        reply, _ = await client.connect()
        assert reply["error"] == "402::session_unknown"
        removed = []
        for receiver in receivers:
            while (event := receiver.try_recv()) is not None:
                if isinstance(event, SessionRemoved):
                    removed.append(str(event.client_id))
        assert removed == [client.client_id]
        with pytest.raises(ClientNotFoundError):
            await cluster.contexts[0].remove_session(client.client_id)


async def test_a_session_whose_process_died_expires_once_in_the_cluster(
    redis_url: str, redis: Redis
) -> None:
    def short() -> LongPollingServiceContextBuilder:
        return LongPollingServiceContextBuilder().timeout(0.5).max_interval(0.5)

    async with asgi_cluster(redis_url, 3, short) as cluster:
        receivers = [context.rx() for context in cluster.contexts]
        client = Client(cluster.url)
        await client.handshake()
        await client.connect()
        [serving] = [c for c in cluster.contexts if c.session_info(client.client_id)]
        # Its process stops without ending it (as a process killed would): its record stays,
        # and one of the others announces its end once its deadline in Redis passed.
        await leave_without_ending(serving)
        others = [r for r, c in zip(receivers, cluster.contexts, strict=True) if c is not serving]
        removed: list[SessionRemoved] = []
        deadline = asyncio.get_running_loop().time() + 15
        while not removed and asyncio.get_running_loop().time() < deadline:
            for receiver in others:
                while (event := receiver.try_recv()) is not None:
                    if isinstance(event, SessionRemoved):
                        removed.append(event)
            await asyncio.sleep(0.1)
        await asyncio.sleep(2)  # time for a second announcement, which must not come
        for receiver in others:
            while (event := receiver.try_recv()) is not None:
                if isinstance(event, SessionRemoved):
                    removed.append(event)
        assert [(str(e.client_id), e.reason) for e in removed] == [
            (client.client_id, RemovalReason.EXPIRED)
        ]
        reply, _ = await client.connect()
        assert reply.get("error") == "402::session_unknown"
        # Nor does it count against its cookie's limit any more.
        assert await redis.zcard(f"cometd:{{qb:{client.cookies['BAYEUX_BROWSER']}}}") == 0


async def test_cluster_stats_add_up_every_live_process(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``cluster_stats`` from any process: every live process's counters added up, a process
    that died counted no more once its last report lapsed, and Redis away an error."""
    monkeypatch.setattr(node_module, "STATS_EVERY", 0.2)
    async with asgi_cluster(redis_server.url, 3) as cluster:
        for n in (0, 1, 1, 2):
            assert (await Client(cluster.node_url(n)).handshake())["successful"] is True
        assert [c.stats()["sessions"] for c in cluster.contexts] == [1, 2, 1]

        async def added_up(contexts: list[LongPollingServiceContext], processes: int) -> bool:
            for context in contexts:
                totals = await context.cluster_stats()
                if totals["processes"] != processes:
                    return False
                expected = {key: 0 for key in context.stats()}
                for each in contexts:
                    for key, value in each.stats().items():
                        expected[key] += value
                if {key: totals[key] for key in expected} != expected:
                    return False
            return True

        await until(lambda: added_up(cluster.contexts, 3))
        assert (await cluster.contexts[0].cluster_stats())["sessions"] == 4
        # A process that dies (it does not take its report back, as one that stops does) is
        # counted until its report lapses.
        dying = cluster.contexts[2]
        node = dying.cluster
        assert node is not None

        async def dies_silently() -> None:
            return None

        monkeypatch.setattr(node, "_leave_stats", dies_silently)
        await leave_without_ending(dying)
        await until(lambda: added_up(cluster.contexts[:2], 2))
        assert (await cluster.contexts[0].cluster_stats())["sessions"] == 3
        await asyncio.to_thread(redis_server.stop)
        with pytest.raises(EngineUnavailableError):
            await cluster.contexts[0].cluster_stats()
    # One process: its own counters.
    alone = LongPollingServiceContextBuilder().build()
    assert await alone.cluster_stats() == {**alone.stats(), "processes": 1}
