"""The ``--demo`` chat page in Chromium against a cluster (issue 11): three
``python -m starlette_cometd --demo --cometd-js ... --redis URL`` processes behind the
round-robin proxy of tests/support/round_robin.py, which gives each new connection to the next
process. Every process serves the page and the library, so whatever connection the browser
opens for them works.

Two users, each in a browser context of their own, chat both ways over each transport the
page can be told to use, their requests reaching different processes: checked, not assumed.
Over long-polling and callback-polling the pages' connections reach every process; over
WebSocket each session stays on its socket's process (Redis records which, the field ``n`` of
the session's record) and Bob's socket is on another process than Alice's. A page whose
process is killed (``kill -9``) while it holds the page's socket reconnects through the proxy
to another process and keeps chatting with the same client id, without a new handshake.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import httpx
import pytest
from redis.asyncio import Redis

from support.browser import (
    COMETD_JS,
    CONNECT_MS,
    RECORD_SOCKETS,
    TRANSPORTS,
    User,
    chat,
    chromium,
    expect,
    open_chat,
    require_cometd_js,
)
from support.cluster import Client, Cluster, cli_cluster, serving_node
from support.drivers import require

if TYPE_CHECKING:
    from playwright.async_api import Browser

# Every session's record in Redis (the default prefix; see cluster/keys.py).
SESSION_KEYS = "cometd:{s:*}"
# What the page loads from the server besides the CometD endpoint.
STATIC = ["/", "/chat.js", "/style.css", "/cometd-js/cometd.js"]


@pytest.fixture
async def cluster(redis_url: str) -> AsyncIterator[Cluster]:
    require_cometd_js()
    demo = ("--demo", "--cometd-js", str(COMETD_JS))
    async with cli_cluster(redis_url, 3, *demo) as running:
        yield running


def origin(cluster: Cluster) -> str:
    """Where the browser finds the cluster: the proxy."""
    return f"http://127.0.0.1:{cluster.proxy.port}"


async def node_ids(cluster: Cluster, redis: Redis) -> list[str]:
    """Each process's id in the cluster, in the order of ``cluster.ports``: the node a session
    handshaken on that process (directly, not through the proxy) is recorded on. The probing
    sessions disconnect."""
    ids = []
    for node in range(len(cluster.ports)):
        probe = Client(cluster.node_url(node))
        assert (await probe.handshake())["successful"] is True
        ids.append(await serving_node(redis, probe.client_id))
        [reply] = await probe.send({"channel": "/meta/disconnect", "clientId": probe.client_id})
        assert reply["successful"] is True, reply
    assert len(set(ids)) == len(ids), ids
    return ids


async def sessions(redis: Redis) -> set[str]:
    """The client ids of every session the cluster records."""
    prefix, suffix = SESSION_KEYS.split("*")
    return {
        key.removeprefix(prefix).removesuffix(suffix)
        async for key in redis.scan_iter(match=SESSION_KEYS)
    }


async def open_new_session(
    browser: Browser, cluster: Cluster, redis: Redis, query: str, name: str, script: str | None
) -> tuple[User, str]:
    """A user's page, connected, and the client id of the one session it made."""
    before = await sessions(redis)
    user = await open_chat(browser, origin(cluster), query, name, script)
    [client_id] = await sessions(redis) - before
    return user, client_id


async def test_every_process_serves_the_page_and_the_library(cluster: Cluster) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        for port in cluster.ports:
            for path in STATIC:
                response = await http.get(f"http://127.0.0.1:{port}{path}")
                assert response.status_code == 200, (port, path, response.status_code)
            page = (await http.get(f"http://127.0.0.1:{port}/")).text
            assert '"cometd": "/cometd-js/cometd.js"' in page


async def offered_transports(cluster: Cluster) -> list[str]:
    client = Client(cluster.url)
    reply = await client.send(
        {"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": TRANSPORTS}
    )
    [handshake] = reply
    assert handshake["successful"] is True, handshake
    types: list[str] = handshake["supportedConnectionTypes"]
    return types


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_two_users_chat_across_processes(
    cluster: Cluster, redis: Redis, transport: str
) -> None:
    if transport not in await offered_transports(cluster):
        require(f"the {transport} transport", "the cluster's handshake does not offer it")
    ids = await node_ids(cluster, redis)
    earlier = await sessions(redis)
    query = f"?transport={transport}"
    async with chromium() as browser:
        first_routed = len(cluster.proxy.routed)
        alice, alice_id = await open_new_session(browser, cluster, redis, query, "Alice", None)
        alice_node = await serving_node(redis, alice_id)
        if transport == "websocket":
            # Bob's socket must land on another process than Alice's: the proxy skips
            # hers while his page opens.
            alice_port = cluster.ports[ids.index(alice_node)]
            cluster.proxy.take_out(alice_port)
            try:
                bob, bob_id = await open_new_session(browser, cluster, redis, query, "Bob", None)
            finally:
                cluster.proxy.put_back(alice_port)
        else:
            bob, bob_id = await open_new_session(browser, cluster, redis, query, "Bob", None)
        for user in (alice, bob):
            await expect(user.page.locator("#transport")).to_have_text(transport)
        await chat(alice, bob)

        if transport == "websocket":
            # Each session stayed on its socket's process, and the lines crossed.
            assert await serving_node(redis, alice_id) == alice_node
            assert await serving_node(redis, bob_id) != alice_node
        else:
            # The pages' connections (the page, the library, the Bayeux requests) reached
            # every process.
            routed = set(cluster.proxy.routed[first_routed:])
            assert routed == set(cluster.ports), routed
        # Neither page handshook again: their sessions are the only new ones.
        assert await sessions(redis) - earlier == {alice_id, bob_id}


async def test_a_page_whose_process_dies_keeps_its_session(cluster: Cluster, redis: Redis) -> None:
    """``kill -9`` of the process holding Alice's socket: her page's library reconnects
    through the proxy, which skips the dead process, and the node it reaches takes her session
    over from Redis, with the same client id and no new handshake."""
    ids = await node_ids(cluster, redis)
    earlier = await sessions(redis)
    query = "?transport=websocket"
    async with chromium() as browser:
        alice, alice_id = await open_new_session(
            browser, cluster, redis, query, "Alice", RECORD_SOCKETS
        )
        alice_node = ids.index(await serving_node(redis, alice_id))
        # Bob away from Alice's process, so the kill leaves him alone.
        cluster.proxy.take_out(cluster.ports[alice_node])
        try:
            bob, bob_id = await open_new_session(browser, cluster, redis, query, "Bob", None)
        finally:
            cluster.proxy.put_back(cluster.ports[alice_node])
        bob_node = await serving_node(redis, bob_id)
        said = await chat(alice, bob)

        await cluster.kill(alice_node)
        await alice.page.wait_for_function(
            "window.recordedSockets.length === 2", timeout=CONNECT_MS
        )
        await expect(alice.page.locator("#status")).to_have_text("Connected", timeout=CONNECT_MS)
        await chat(alice, bob, said)

        # Alice's session lives on, on a process still running; Bob's did not move.
        taken_over = await serving_node(redis, alice_id)
        assert taken_over in ids and taken_over != ids[alice_node], taken_over
        assert await serving_node(redis, bob_id) == bob_node
        channels = await alice.page.evaluate("window.recordedChannels")
        assert channels.count("/meta/handshake") == 1, channels
        client_ids = await alice.page.evaluate("window.recordedClientIds")
        assert set(client_ids) == {alice_id}, client_ids
        assert await sessions(redis) - earlier == {alice_id, bob_id}
