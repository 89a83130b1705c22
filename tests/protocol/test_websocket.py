"""The WebSocket transport, with the ``websockets`` client library and aiocometd."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
import websockets
from aiocometd_noloop import Client, ConnectionType  # type: ignore[import-untyped]

from starlette_cometd import LongPollingServiceContextBuilder
from support.bayeux import post
from support.client_steps import connects_held, until
from support.faults import SlowSockets
from support.servers import ServeFactory, Server
from support.ws_client import (
    Message,
    cookie_set,
    exchange,
    receive,
    socket,
    ws_connect,
    ws_session,
    ws_url,
)


async def test_no_subprotocol_unless_offered_then_echoed(server: Server) -> None:
    async with socket(server) as ws:
        assert ws.subprotocol is None
    async with socket(server, subprotocols=["cometd"]) as ws:
        assert ws.subprotocol == "cometd"


async def test_handshake_over_websocket_and_push(server: Server) -> None:
    async with socket(server) as ws, socket(server) as other:
        listener = await ws_session(ws, "/chat")
        talker = await ws_session(other)
        # The listener's next connect is held; messages are pushed without waiting for it.
        await ws.send(json.dumps([ws_connect(listener, "held")]))
        [ack] = await exchange(
            other, {"channel": "/chat", "clientId": talker, "data": "hi", "id": "p"}
        )
        assert ack == {"channel": "/chat", "successful": True, "id": "p"}
        pushed = await receive(ws)
        assert pushed == [{"channel": "/chat", "data": "hi"}]
        # The held connect is still answered at the timeout (2 s here), as a heartbeat.
        started = time.monotonic()
        [heartbeat] = await receive(ws, timeout=5)
        assert heartbeat["channel"] == "/meta/connect" and heartbeat["id"] == "held"
        assert heartbeat["successful"] is True
        assert time.monotonic() - started > 1


async def test_several_ready_messages_share_a_frame(server: Server) -> None:
    async with socket(server) as ws:
        client_id = await ws_session(ws, "/burst")
        await ws.send(json.dumps([ws_connect(client_id)]))
        await connects_held(server)
        received: list[Message] = []
        frames = 0
        for i in range(50):
            await server.context.send("/burst", i)
        while len(received) < 50:
            batch = await receive(ws)
            frames += 1
            received.extend(m for m in batch if m["channel"] == "/burst")
        assert [m["data"] for m in received] == list(range(50))
        assert frames < 50


async def test_session_survives_a_dropped_socket(server: Server) -> None:
    async with socket(server) as ws:
        cookie = cookie_set(ws)  # as a browser keeps it
        client_id = await ws_session(ws, "/keep")
    # While the socket is away, messages queue for the session.
    await server.context.send("/keep", "queued")
    # A new socket continues the session: the cookie shows it is the same browser's.
    async with socket(server, cookie=cookie) as ws:
        reply = await exchange(ws, ws_connect(client_id))
        assert reply[0] == {"channel": "/keep", "data": "queued"}
        assert reply[1]["successful"] is True
        await ws.send(json.dumps([ws_connect(client_id, "held")]))
        await connects_held(server)
        await server.context.send("/keep", "pushed")
        assert await receive(ws) == [{"channel": "/keep", "data": "pushed"}]


async def test_dropped_socket_session_expires(serve: ServeFactory) -> None:
    server = await serve(LongPollingServiceContextBuilder().max_interval(0.3).timeout(5))
    async with socket(server) as ws:
        client_id = await ws_session(ws)
        await ws.send(json.dumps([ws_connect(client_id)]))
        await connects_held(server)
        # A held connect keeps the session alive past max_interval: waiting that long is the
        # point.
        await asyncio.sleep(0.5)
        assert server.context.stats()["sessions"] == 1
    await until(lambda: server.context.stats()["sessions"] == 0, "the session expires", 5)


async def test_slow_consumer_is_bounded_and_counted(serve: ServeFactory) -> None:
    builder = LongPollingServiceContextBuilder().client_channel_capacity(100)
    server = await serve(builder, faults=SlowSockets())
    async with websockets.connect(ws_url(server) + "?slow") as slow, socket(server) as fast:
        slow_id = await ws_session(slow, "/firehose")
        fast_id = await ws_session(fast, "/firehose")
        for i in range(2000):
            await server.context.send("/firehose", i)
            if i % 50 == 0:
                await asyncio.sleep(0.001)  # let the sockets' writers run
            info = server.context.session_info(slow_id)
            assert info is not None and info["queued"] <= 100
        # The fast client is unaffected: it gets everything, in order.
        received: list[int] = []
        while len(received) < 2000:
            received += [m["data"] for m in await receive(fast) if m["channel"] == "/firehose"]
        assert received == list(range(2000))
        fast_info = server.context.session_info(fast_id)
        assert fast_info is not None and fast_info["dropped"] == 0
        # The slow one lost the oldest messages that did not fit its queue, counted.
        slow_info = server.context.session_info(slow_id)
        assert slow_info is not None and slow_info["dropped"] > 1000
        assert server.context.stats()["dropped"] == slow_info["dropped"]
        # What it does get is in order and ends with the newest message.
        got: list[int] = []
        while not got or got[-1] != 1999:
            got += [m["data"] for m in await receive(slow) if m["channel"] == "/firehose"]
        assert got == sorted(got)
        assert len(got) + slow_info["dropped"] == 2000


async def test_websocket_refused_when_disabled(
    serve: ServeFactory, http: httpx.AsyncClient
) -> None:
    server = await serve(LongPollingServiceContextBuilder().connection_types("long-polling"))
    with pytest.raises(websockets.exceptions.InvalidStatus):
        async with socket(server):
            pass
    [hs] = await post(http, server.url, {"channel": "/meta/handshake"})
    assert hs["supportedConnectionTypes"] == ["long-polling"]


async def test_bad_frames_get_replies_not_a_closed_socket(server: Server) -> None:
    async with socket(server) as ws:
        assert await exchange(ws) == []  # an empty batch
        await ws.send("{not json")
        [bad] = await receive(ws)
        assert bad["error"] == "400::json_malformed"
        await ws.send(json.dumps([{"channel": "/meta/handshake", "bogus": 1}]))
        [unknown] = await receive(ws)
        assert unknown["error"] == "400:bogus:unknown_field"
        client_id = await ws_session(ws)
        assert len(client_id) == 40


@pytest.mark.parametrize(
    "types", [[ConnectionType.WEBSOCKET], [ConnectionType.WEBSOCKET, ConnectionType.LONG_POLLING]]
)
async def test_aiocometd_over_websocket(server: Server, types: list[Any]) -> None:
    async with Client(server.url, types) as a, Client(server.url, types) as b:
        assert a.connection_type is ConnectionType.WEBSOCKET
        await a.subscribe("/ws/*")
        for i in range(20):
            await b.publish("/ws/room", {"seq": i})
        received = [await asyncio.wait_for(a.receive(), 5) for _ in range(20)]
        assert [m["data"]["seq"] for m in received] == list(range(20))
        big = "é" * (128 * 1024)  # 256 KiB of UTF-8
        await b.publish("/ws/big", {"text": big})
        message = await asyncio.wait_for(a.receive(), 5)
        assert message["data"]["text"] == big
