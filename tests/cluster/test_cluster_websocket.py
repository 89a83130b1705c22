"""A WebSocket session in a cluster (issue 11): messages are pushed on a session's socket as
they come, not only in connect replies, and each push records how far the session got (its
cursor in Redis) before it goes out, as a connect reply does. So a client whose socket drops
and who continues its session on another process, over a new socket or over HTTP, gets what it
missed and nothing it was pushed already; and a socket whose client stops reading gets every
push once it reads again. On both stacks."""

from __future__ import annotations

import asyncio
import json
import logging
import socket as socketlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis.asyncio
import websockets
from websockets.asyncio.client import ClientConnection

from starlette_cometd import LongPollingServiceContextBuilder
from support.cluster import Client, Cluster, asgi_cluster, cli_cluster
from support.redis_servers import RedisServer
from support.servers import native_server
from support.ws_client import COOKIE, cookie_set, receive, ws_connect, ws_session

CHANNEL = "/chat/room"
# Every wait is bounded by this many seconds.
WAIT = 10.0


@pytest.fixture(params=["native", "asgi"])
async def cluster(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[Cluster]:
    start = cli_cluster if request.param == "native" else asgi_cluster
    async with start(redis_url) as running:
        yield running


@asynccontextmanager
async def node_socket(
    cluster: Cluster, node: int, cookie: str | None = None
) -> AsyncIterator[ClientConnection]:
    """A socket straight to one node (not through the proxy), with the browser cookie."""
    url = cluster.node_url(node).replace("http://", "ws://")
    headers = {"Cookie": f"{COOKIE}={cookie}"} if cookie is not None else None
    async with websockets.connect(url, open_timeout=5, additional_headers=headers) as ws:
        yield ws


async def data_until(ws: ClientConnection, last: Any) -> list[Any]:
    """The data of the messages the socket receives until ``last`` came; every reply among
    them must be successful."""
    received: list[Any] = []
    while last not in received:
        for message in await receive(ws, WAIT):
            if message["channel"].startswith("/meta/"):
                assert message["successful"] is True, message
            else:
                received.append(message["data"])
    return received


async def publish(cluster: Cluster, node: int, data: Any) -> None:
    publisher = Client(cluster.node_url(node))
    assert (await publisher.handshake())["successful"] is True
    assert (await publisher.publish(CHANNEL, data))["successful"] is True


async def pushed_then_dropped(cluster: Cluster) -> tuple[str, str]:
    """A session on a socket to node 0, subscribed, pushed two messages published on node 1,
    then its socket drops. Returns its client id and its browser cookie."""
    async with node_socket(cluster, 0) as ws:
        cookie = cookie_set(ws)
        assert cookie is not None
        client_id = await ws_session(ws, CHANNEL)
        await ws.send(json.dumps([ws_connect(client_id)]))  # held: messages come as pushes
        for n in (1, 2):
            await publish(cluster, 1, {"n": n})
        assert await data_until(ws, {"n": 2}) == [{"n": 1}, {"n": 2}]
    return client_id, cookie


async def test_a_session_continued_on_another_socket_gets_no_push_twice(
    cluster: Cluster,
) -> None:
    client_id, cookie = await pushed_then_dropped(cluster)
    async with node_socket(cluster, 2, cookie) as ws:
        await ws.send(json.dumps([ws_connect(client_id)]))
        await publish(cluster, 1, {"n": 3})
        assert await data_until(ws, {"n": 3}) == [{"n": 3}]


async def test_a_session_continued_over_http_gets_no_push_twice(cluster: Cluster) -> None:
    client_id, cookie = await pushed_then_dropped(cluster)
    client = Client(cluster.node_url(2))
    client.client_id, client.cookies = client_id, {COOKIE: cookie}
    received: list[Any] = []
    async with asyncio.timeout(WAIT):
        held = asyncio.create_task(client.connect())
        await publish(cluster, 1, {"n": 3})
        while True:
            reply, messages = await held
            assert reply["successful"] is True, reply
            received += [m["data"] for m in messages]
            if {"n": 3} in received:
                break
            held = asyncio.create_task(client.connect())
    assert received == [{"n": 3}]


async def test_a_socket_that_stops_reading_gets_every_push_in_order_once_it_reads(
    cluster: Cluster,
) -> None:
    """Pushes wait for gates while the socket's client reads nothing (its receive buffer is
    tiny, and the server's write buffer fills, so the server stops writing to it): once it
    reads again, every message arrives, once and in order."""
    count, padding = 300, "x" * 16_000  # 4.8 MB: far more than the socket holds unread
    url = cluster.node_url(0).replace("http://", "ws://")
    host, port = url.split("/")[2].split(":")
    raw = socketlib.socket()
    raw.setsockopt(socketlib.SOL_SOCKET, socketlib.SO_RCVBUF, 4096)
    raw.setblocking(False)
    await asyncio.get_running_loop().sock_connect(raw, (host, int(port)))
    async with websockets.connect(url, sock=raw, max_queue=1, max_size=None) as ws:
        client_id = await ws_session(ws, CHANNEL)
        await ws.send(json.dumps([ws_connect(client_id)]))  # held: messages come as pushes
        publisher = Client(cluster.node_url(1))
        assert (await publisher.handshake())["successful"] is True
        for start in range(0, count, 20):
            replies = await publisher.send(
                *(
                    {"channel": CHANNEL, "clientId": publisher.client_id, "data": [n, padding]}
                    for n in range(start, start + 20)
                )
            )
            assert all(reply["successful"] for reply in replies), replies
        received = await data_until(ws, [count - 1, padding])
    assert [data[0] for data in received] == list(range(count))


@pytest.mark.parametrize("native", [True, False], ids=["native", "asgi"])
async def test_messages_published_while_a_push_waits_for_its_gate_go_in_one_frame(
    redis_url: str, native: bool
) -> None:
    """A push waits for the next gate before it goes out. The messages published meanwhile
    stay queued and go together in the next push: one frame for all of them, not one per
    loop turn that fanned one out (under load, a write per message)."""
    builder = LongPollingServiceContextBuilder().timeout(20).redis(redis_url)
    async with native_server(builder, native=native) as server:
        node = server.context.cluster
        assert node is not None
        gates = node._gates
        assert gates is not None
        write_gate = gates._write_gate
        passing = asyncio.Event()
        passing.set()

        async def held_gate(*args: Any) -> Any:
            await passing.wait()
            return await write_gate(*args)

        gates._write_gate = held_gate  # type: ignore[method-assign,assignment]
        url = f"ws://127.0.0.1:{server.port}/cometd"
        async with websockets.connect(url, open_timeout=5) as ws:
            client_id = await ws_session(ws, CHANNEL)
            await ws.send(json.dumps([ws_connect(client_id)]))  # held: messages come as pushes
            passing.clear()
            start = node._positions[0]
            await server.context.send(CHANNEL, 0)  # its push waits for the held gate
            for n in (1, 2, 3):
                await server.context.send(CHANNEL, n)
            for _ in range(int(WAIT / 0.01)):
                if node._positions[0] >= start + 4:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)  # the loop turns after the last was fanned out
            passing.set()
            frames = [[m["data"] for m in await receive(ws, WAIT)] for _ in range(2)]
    assert frames == [[0], [1, 2, 3]]


@pytest.mark.parametrize("native", [True, False], ids=["native", "asgi"])
async def test_batches_sent_while_a_publish_waits_for_redis_are_handled_in_order(
    redis_url: str, native: bool
) -> None:
    """A publish is answered once Redis took it; the batches the client sends meanwhile, on
    the same socket, wait for that reply and are handled in order after it: the session gets
    the two messages published before it unsubscribed, and not the one after."""
    builder = LongPollingServiceContextBuilder().timeout(20).redis(redis_url)
    async with native_server(builder, native=native) as server:
        url = f"ws://127.0.0.1:{server.port}/cometd"
        async with websockets.connect(url, open_timeout=5) as ws:
            client_id = await ws_session(ws, CHANNEL)
            await ws.send(json.dumps([ws_connect(client_id)]))  # held: messages come as pushes

            def publish(n: int) -> str:
                message = {"channel": CHANNEL, "clientId": client_id, "data": n, "id": f"p{n}"}
                return json.dumps([message])

            unsubscribe = {
                "channel": "/meta/unsubscribe",
                "clientId": client_id,
                "subscription": CHANNEL,
                "id": "u",
            }
            for frame in (publish(1), publish(2), json.dumps([unsubscribe]), publish(3)):
                await ws.send(frame)  # each sent before the reply to the one before
            replies: list[str] = []
            data: list[Any] = []

            async def take(timeout: float) -> None:
                for message in await receive(ws, timeout):
                    if message["channel"] == CHANNEL and "data" in message:
                        data.append(message["data"])
                    else:
                        assert message["successful"] is True, message
                        replies.append(message["id"])

            while len(replies) < 4 or len(data) < 2:
                await take(WAIT)
            with pytest.raises(TimeoutError):
                while True:
                    await take(0.5)  # nothing more: the third went after the unsubscribe
    assert replies == ["p1", "p2", "u", "p3"]
    assert data == [1, 2]


@pytest.mark.parametrize("native", [True, False], ids=["native", "asgi"])
async def test_a_publish_redis_refuses_to_store_is_answered_unsuccessful_on_the_socket(
    redis_url: str, native: bool
) -> None:
    """Over a socket as over HTTP: a publish the log refuses (another type under its key) is
    answered unsuccessful, in order with the batches around it, and the socket carries on."""
    builder = LongPollingServiceContextBuilder().timeout(20).redis(redis_url)
    raw = redis.asyncio.Redis.from_url(redis_url)
    async with native_server(builder, native=native) as server:
        url = f"ws://127.0.0.1:{server.port}/cometd"
        async with websockets.connect(url, open_timeout=5) as ws:
            client_id = await ws_session(ws, CHANNEL)

            async def publish(n: int) -> Any:
                message = {"channel": CHANNEL, "clientId": client_id, "data": n, "id": f"p{n}"}
                await ws.send(json.dumps([message]))
                replies = [m for m in await receive(ws, WAIT) if "successful" in m]
                assert [r["id"] for r in replies] == [f"p{n}"], replies
                return replies[0]

            await raw.rename("cometd:{p0}:log", "cometd:{p0}:kept")
            await raw.set("cometd:{p0}:log", "not a log")
            refused = await publish(1)
            await raw.delete("cometd:{p0}:log")
            await raw.rename("cometd:{p0}:kept", "cometd:{p0}:log")
            stored = await publish(2)
            await ws.send(json.dumps([ws_connect(client_id)]))
            assert await data_until(ws, 2) == [2]
    await raw.aclose()
    assert (refused["successful"], refused.get("error")) == (False, "500::message_not_stored")
    assert stored["successful"] is True, stored


@pytest.mark.parametrize("native", [True, False], ids=["native", "asgi"])
async def test_a_server_stopping_while_publishes_wait_for_redis_closes_the_socket_cleanly(
    redis_server: RedisServer, native: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis answers nothing (frozen) while a publish waits for it and another batch waits
    behind that one; the server stops meanwhile. Both are dropped unanswered, the socket is
    closed as going away (1001), and nothing is logged as an error."""
    builder = LongPollingServiceContextBuilder().timeout(20).redis(redis_server.url)
    try:
        async with native_server(builder, native=native) as server:
            url = f"ws://127.0.0.1:{server.port}/cometd"
            ws = await websockets.connect(url, open_timeout=5)
            client_id = await ws_session(ws, CHANNEL)
            await asyncio.to_thread(redis_server.freeze)
            for n in (1, 2):
                message = {"channel": CHANNEL, "clientId": client_id, "data": n, "id": f"p{n}"}
                await ws.send(json.dumps([message]))
            await asyncio.sleep(0.2)  # the first waits for Redis, the second behind it
    finally:
        await asyncio.to_thread(redis_server.thaw)
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            unanswered = await receive(ws, WAIT)
            assert all(m["channel"] == "/meta/connect" for m in unanswered), unanswered
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
