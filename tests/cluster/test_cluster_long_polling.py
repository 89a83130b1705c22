"""Several processes as one server (issue 11): a client may send each request to another
process, with no sticky load balancing, and nothing is lost or delivered twice. On both
stacks: the standalone server's processes (native) and nodes on uvicorn's own protocol (asgi)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import pytest

from support.cluster import Client, Cluster, asgi_cluster, cli_cluster, gather_until

ClusterFactory = Callable[[str], AbstractAsyncContextManager[Cluster]]


@pytest.fixture(params=["native", "asgi"])
async def cluster(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[Cluster]:
    start = cli_cluster if request.param == "native" else asgi_cluster
    async with start(redis_url) as running:
        yield running


async def test_each_request_may_reach_another_process(cluster: Cluster) -> None:
    subscriber, publisher = Client(cluster.url), Client(cluster.url)
    assert (await subscriber.handshake())["successful"] is True
    [subscribed] = await subscriber.subscribe("/chat/*")
    assert subscribed["successful"] is True, subscribed
    reply, _ = await subscriber.connect()  # the first connect is answered at once
    assert reply["successful"] is True, reply
    await publisher.handshake()
    for n in range(30):
        published = await publisher.publish(f"/chat/{n % 3}", {"n": n})
        assert published["successful"] is True, published
    received = await gather_until(subscriber, 30)
    assert [m["data"]["n"] for m in received] == list(range(30)), "once each, in order"
    # Each of those requests went to the next process in turn.
    assert len(set(cluster.proxy.routed)) == 3


async def test_a_held_connect_is_answered_by_a_publish_on_another_process(
    cluster: Cluster,
) -> None:
    subscriber, publisher = Client(cluster.url), Client(cluster.url)
    await subscriber.handshake()
    await subscriber.subscribe("/news")
    await subscriber.connect()
    await publisher.handshake()
    import asyncio

    held = asyncio.create_task(subscriber.connect())
    await asyncio.sleep(0.3)  # let it be held; the publish is delivered either way
    assert (await publisher.publish("/news", "hello"))["successful"] is True
    reply, messages = await asyncio.wait_for(held, 10)
    assert reply["successful"] is True
    assert [m["data"] for m in messages] == ["hello"]


async def test_an_unknown_session_is_unknown_everywhere(cluster: Cluster) -> None:
    stranger = Client(cluster.url)
    stranger.client_id = "ab" * 20
    for _ in range(3):
        [reply] = await stranger.send(
            {
                "channel": "/meta/connect",
                "clientId": stranger.client_id,
                "connectionType": "long-polling",
            }
        )
        assert reply["error"] == "402::session_unknown"


async def test_a_disconnect_ends_the_session_in_the_whole_cluster(cluster: Cluster) -> None:
    client = Client(cluster.url)
    await client.handshake()
    await client.connect()
    [bye] = await client.send({"channel": "/meta/disconnect", "clientId": client.client_id})
    assert bye["successful"] is True
    for _ in range(3):
        reply, _ = await client.connect()
        assert reply["error"] == "402::session_unknown"


async def test_a_session_is_only_used_with_its_cookie_on_every_process(cluster: Cluster) -> None:
    owner = Client(cluster.url)
    await owner.handshake()
    await owner.subscribe("/private")
    thief = Client(cluster.url)
    thief.client_id = owner.client_id
    for _ in range(3):
        reply, _ = await thief.connect()
        assert reply["error"] == "402::session_unknown"
    publisher = Client(cluster.url)
    await publisher.handshake()
    await publisher.publish("/private", "for the owner")
    received = await gather_until(owner, 1)
    assert [m["data"] for m in received] == ["for the owner"]
