"""The issue's test of a cluster's history (issue 12), with a real client: the CometD Java client
with a replay extension as Salesforce's Java connector has it. A subscriber stops, 500 messages
are published, and it comes back with its last id on a different process: it gets all 500 once,
in order, then live messages, with more published on a third process while it subscribes (the
seam between replay and live). On both stacks and transports, on one Redis and on a Redis
Cluster."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager

import pytest

from starlette_cometd import LongPollingServiceContextBuilder
from support.client_steps import client_pool, handshake, status, subscribe
from support.cluster import Client, Cluster, asgi_cluster, cli_cluster
from support.drivers import JavaReplayClient

CHANNEL = "/topic/a"


def kept(
    stack: str, redis: str | Sequence[str], partitions: int
) -> AbstractAsyncContextManager[Cluster]:
    """Three processes keeping 1,000 messages of each channel under /topic."""
    if stack == "native":
        return cli_cluster(
            redis, 3, "--history", "/topic/**:1000", "--redis-partitions", str(partitions)
        )

    def builder() -> LongPollingServiceContextBuilder:
        return LongPollingServiceContextBuilder().timeout(2).history("/topic/**", size=1000)

    return asgi_cluster(redis, 3, builder, partitions=partitions)


async def publish(url: str, numbers: range, one_by_one: bool = False) -> None:
    """Messages ``{"n": n}`` from a publisher of its own at ``url``."""
    publisher = Client(url)
    await publisher.handshake()
    batch = [
        {"channel": CHANNEL, "clientId": publisher.client_id, "data": {"n": n}} for n in numbers
    ]
    for part in [[message] for message in batch] if one_by_one else [batch]:
        replies = await publisher.send(*part)
        assert all(reply["successful"] for reply in replies), replies


async def away_and_back(cluster: Cluster, transport: str) -> None:
    async with client_pool() as pool:
        first = JavaReplayClient({CHANNEL: -1})
        await pool.start(first, cluster.node_url(0), transports=[transport])
        await handshake(first)
        assert (await status(first))["replaySupported"] is True
        await subscribe(first, CHANNEL)
        await publish(cluster.node_url(1), range(3))
        seen = [event["data"]["n"] for event in await first.messages(3)]
        assert seen == [0, 1, 2]
        last = (await status(first))["replay"]
        await first.close()

        await publish(cluster.node_url(1), range(3, 503))
        back = JavaReplayClient(last)
        await pool.start(back, cluster.node_url(2), transports=[transport])
        await handshake(back)
        # Live messages published on a third process while it subscribes, one by one.
        live = asyncio.create_task(publish(cluster.node_url(0), range(503, 553), one_by_one=True))
        await subscribe(back, CHANNEL)
        await live
        events = await back.messages(550, timeout=30)
        received = [event["data"]["n"] for event in events]
        assert received == list(range(3, 553)), f"all 500 once, in order, then live: {received}"
        ids = [event["data"]["event"]["replayId"] for event in events]
        assert ids == sorted(set(ids)) and ids[0] > last[CHANNEL]
        with pytest.raises(AssertionError, match="got 0 of 1"):
            await back.messages(1, timeout=1)
        assert (await status(back))["replay"] == {CHANNEL: ids[-1]}


@pytest.mark.parametrize("transport", ["long-polling", "websocket"])
@pytest.mark.parametrize("stack", ["native", "asgi"])
async def test_a_subscriber_back_on_another_process_gets_what_it_missed_once(
    stack: str, transport: str, redis_url: str
) -> None:
    async with kept(stack, redis_url, 1) as cluster:
        await away_and_back(cluster, transport)


async def test_the_same_on_a_redis_cluster(redis_cluster_urls: list[str]) -> None:
    async with kept("native", redis_cluster_urls, 3) as cluster:
        await away_and_back(cluster, "long-polling")
