"""Several processes as one server (issue 11): a client may send each request to another
process, with no sticky load balancing, and nothing is lost or delivered twice. On both
stacks: the standalone server's processes (native) and nodes on uvicorn's own protocol (asgi)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager

import pytest
import redis.asyncio

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


async def test_a_browser_holds_one_long_poll_in_the_whole_cluster(
    cluster: Cluster, redis_url: str
) -> None:
    """Two tabs of one browser (one cookie) whose long-polls reach different processes: as on
    one process, the browser holds one, and the other tab's connect is answered at once with
    ``multiple-clients`` advice (its connections to the host are few). Once the first returns,
    the other tab's next long-poll is the one held."""
    first = Client(cluster.node_url(0))
    await first.handshake()
    second = Client(cluster.node_url(1))
    second.cookies = dict(first.cookies)  # the same browser
    await second.handshake()
    for tab in (first, second):
        await tab.subscribe(f"/tab/{tab.client_id}")
        await tab.connect()  # the first connect is answered at once
    held_by_browser = f"cometd:{{b:{first.cookies['BAYEUX_BROWSER']}}}"
    raw = redis.asyncio.from_url(redis_url, decode_responses=True)

    async def holding(tab: Client | None) -> bool:
        expected = [] if tab is None else [tab.client_id]
        return bool(await raw.zrange(held_by_browser, 0, -1) == expected)

    try:
        # What a process that died held lapsed long ago: it counts no more.
        await raw.zadd(held_by_browser, {"0" * 40: 1})
        held = asyncio.create_task(first.connect())
        await until(lambda: holding(first))
        reply, _ = await second.connect()
        assert reply["successful"] is True, reply
        assert reply["advice"]["multiple-clients"] is True, reply
        assert reply["advice"]["interval"] == 2000
        assert not held.done(), "answered while the first tab's long-poll is still held"

        # A message for the first tab ends its long-poll. It does not poll again: once its
        # entry lingered a moment (for a client polling again at once), the second tab may
        # hold one, and the first, polling again, is the one told.
        publisher = Client(cluster.node_url(2))
        await publisher.handshake()
        await publisher.publish(f"/tab/{first.client_id}", "for the first")
        _, messages = await held
        assert [m["data"] for m in messages] == ["for the first"]
        await until(lambda: holding(None))
        now_held = asyncio.create_task(second.connect())
        await until(lambda: holding(second))
        reply, _ = await first.connect()
        assert reply["advice"].get("multiple-clients") is True, reply
        assert not now_held.done()
        await publisher.publish(f"/tab/{second.client_id}", "for the second")
        _, messages = await now_held
        assert [m["data"] for m in messages] == ["for the second"]
    finally:
        await raw.aclose()


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 15) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "not in time"
        await asyncio.sleep(0.05)
