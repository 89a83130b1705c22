"""The limits of sessions per browser cookie and per client address hold over the whole cluster
(issue 11): a client that sends each handshake to another process gets no more sessions than
from one process, a session that ends anywhere makes room, and a session whose end was never
written counts no more once a check finds it gone. On both stacks."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import pytest
import websockets
from redis.asyncio import Redis

from starlette_cometd import LongPollingServiceContextBuilder
from support.cluster import Client, Cluster, asgi_cluster, cli_cluster

PER_ADDRESS = "403:too_many_sessions_per_address:handshake_denied"
PER_COOKIE = "403:too_many_sessions_per_cookie:handshake_denied"
# The sets the sessions are counted in (the default prefix; see cluster/keys.py).
BY_ADDRESS = "cometd:{qa:127.0.0.1}"
BY_COOKIE = "cometd:{{qb:{}}}"

ClusterOf = Callable[..., AbstractAsyncContextManager[Cluster]]


@pytest.fixture(params=["native", "asgi"])
def limited(request: pytest.FixtureRequest, redis_url: str) -> ClusterOf:
    """Starts three processes with the given limits per address and per cookie."""

    def start(
        per_address: int | None, per_cookie: int | None
    ) -> AbstractAsyncContextManager[Cluster]:
        if request.param == "native":
            options = [
                *("--max-sessions-per-address", str(per_address or 0)),
                *("--max-sessions-per-cookie", str(per_cookie or 0)),
            ]
            return cli_cluster(redis_url, 3, *options)

        def builder() -> LongPollingServiceContextBuilder:
            return LongPollingServiceContextBuilder().max_sessions_per_cookie(per_cookie)

        return asgi_cluster(redis_url, 3, builder, per_address=per_address)

    return start


async def test_the_sessions_of_one_address_are_counted_over_the_cluster(
    limited: ClusterOf, redis: Redis
) -> None:
    async with limited(3, None) as cluster:
        # Each handshake reaches the next process: each has one session of its own.
        clients = [Client(cluster.url) for _ in range(3)]
        for client in clients:
            reply = await client.handshake()
            assert reply["successful"] is True, reply
        assert len(set(cluster.proxy.routed)) == 3
        late = Client(cluster.url)
        refused = await late.handshake(id="4")
        assert refused == {
            "channel": "/meta/handshake",
            "successful": False,
            "error": PER_ADDRESS,
            "id": "4",
        }
        # Refused as the core refuses: nothing about it was written, nor held anywhere.
        assert sorted(await redis.zrange(BY_ADDRESS, 0, -1)) == sorted(c.client_id for c in clients)
        assert await redis.zcard("cometd:{deadlines}") == 3
        assert await redis.pttl(BY_ADDRESS) > 0, "the set goes once its sessions are gone"
        # A disconnect on whichever process makes room for one more, and one only.
        [left] = await clients[0].send(
            {"channel": "/meta/disconnect", "clientId": clients[0].client_id}
        )
        assert left["successful"] is True, left
        assert (await Client(cluster.url).handshake())["successful"] is True
        assert (await Client(cluster.url).handshake())["error"] == PER_ADDRESS
        # The sessions counted are the sessions there are.
        for client in clients[1:]:
            reply, _ = await client.connect()
            assert reply["successful"] is True, reply


async def test_the_sessions_of_one_cookie_are_counted_over_the_cluster(
    limited: ClusterOf, redis: Redis
) -> None:
    async with limited(None, 2) as cluster:
        first = Client(cluster.url)
        assert (await first.handshake())["successful"] is True
        cookie = first.cookies["BAYEUX_BROWSER"]
        tabs = [Client(cluster.url) for _ in range(2)]
        for tab in tabs:
            tab.cookies = dict(first.cookies)  # the same browser
        assert (await tabs[0].handshake())["successful"] is True
        assert (await tabs[1].handshake())["error"] == PER_COOKIE
        assert await redis.zcard(BY_COOKIE.format(cookie)) == 2
        # Another browser from the same address is not limited by this one.
        assert (await Client(cluster.url).handshake())["successful"] is True


async def test_a_websocket_handshake_is_counted_with_the_others(limited: ClusterOf) -> None:
    async with limited(2, None) as cluster:
        assert (await Client(cluster.node_url(0)).handshake())["successful"] is True
        handshake = {"channel": "/meta/handshake", "supportedConnectionTypes": ["websocket"]}
        replies = []
        for node in (1, 2):
            url = cluster.node_url(node).replace("http://", "ws://")
            async with websockets.connect(url, open_timeout=5) as ws:
                await ws.send(json.dumps([handshake]))
                [reply] = json.loads(await ws.recv())
                replies.append(reply)
        assert replies[0]["successful"] is True, replies
        assert replies[1] == {
            "channel": "/meta/handshake",
            "successful": False,
            "error": PER_ADDRESS,
        }


async def test_a_session_gone_without_leaving_its_set_counts_no_more(
    limited: ClusterOf, redis: Redis
) -> None:
    """Sessions whose end was never written (Redis away just then) are found by a check of the
    full set: one with no deadline, counted long enough ago, is gone; one counted just now is
    not yet taken for gone (its deadline is written a round trip after it is counted)."""
    async with limited(3, None) as cluster:
        first = Client(cluster.url)
        assert (await first.handshake())["successful"] is True
        now_ms = int((await redis.time())[0]) * 1000
        gone, recent = "ab" * 20, "cd" * 20
        await redis.zadd(BY_ADDRESS, {gone: now_ms - 60_000, recent: now_ms})
        second = Client(cluster.url)
        assert (await second.handshake())["successful"] is True, "the one gone counts no more"
        counted = await redis.zrange(BY_ADDRESS, 0, -1)
        assert sorted(counted) == sorted([first.client_id, recent, second.client_id])
        assert (await Client(cluster.url).handshake())["error"] == PER_ADDRESS
