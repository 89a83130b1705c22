"""Who may act for a session over WebSocket: the socket it is bound to, a socket that proves it
belongs to the session's browser (its ``BAYEUX_BROWSER`` cookie), and, for a session fresh
from an HTTP handshake, the first socket that uses it. A ``clientId`` alone is not enough."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from aiocometd_noloop import Client, ConnectionType  # type: ignore[import-untyped]

from starlette_cometd import Extension, LongPollingServiceContextBuilder, SessionAdded
from support.bayeux import connect_message, handshake, post, subscribe
from support.client_steps import connects_held, until
from support.servers import ServeFactory, Server
from support.ws_client import (
    COOKIE,
    Message,
    cookie_set,
    exchange,
    receive,
    socket,
    ws_connect,
    ws_session,
)

# The application's hooks send every message through the hooked path, which must answer as
# the fast path does.
PATHS = pytest.mark.parametrize("hooked", [False, True], ids=["fast", "hooked"])


async def serve_long(serve: ServeFactory, hooked: bool = False, trusted: bool = False) -> Server:
    """A server holding connects for 30 s, so no heartbeat interrupts a test."""
    builder = LongPollingServiceContextBuilder().timeout(30)
    if trusted:
        builder = builder.trust_client_session()
    server = await serve(builder)
    if hooked:
        server.context.add_extension(Extension())
    return server


def assert_refused(reply: Message) -> None:
    """The reply a client gets for a session it may not use: as for an unknown one."""
    assert reply["successful"] is False, reply
    assert reply["error"] == "402::session_unknown", reply
    assert reply["advice"]["reconnect"] == "handshake", reply


def attempts(client_id: str) -> list[Message]:
    """Everything one may do for a session, in the name of ``client_id``."""
    return [
        {"channel": "/news", "clientId": client_id, "data": "forged", "id": "p"},
        {"channel": "/meta/subscribe", "clientId": client_id, "subscription": "/x", "id": "s"},
        {"channel": "/meta/unsubscribe", "clientId": client_id, "subscription": "/news"},
        ws_connect(client_id, "c", timeout=0),
        {"channel": "/meta/disconnect", "clientId": client_id, "id": "d"},
    ]


@PATHS
async def test_a_client_id_alone_does_not_reach_a_session_on_another_socket(
    serve: ServeFactory, hooked: bool
) -> None:
    server = await serve_long(serve, hooked)
    async with socket(server) as victim_ws, socket(server) as attacker:
        victim = await ws_session(victim_ws, "/news")
        await victim_ws.send(json.dumps([ws_connect(victim, "held")]))
        await connects_held(server)
        for attempt in attempts(victim):
            [reply] = await exchange(attacker, attempt)
            assert_refused(reply)
        for reply in await exchange(attacker, *attempts(victim)):
            assert_refused(reply)
        # A connect alone, which the server would hold and answer with the victim's messages.
        [reply] = await exchange(attacker, ws_connect(victim, "alone"))
        assert_refused(reply)

        # The victim's session is untouched: its subscriptions, its held connect, its queue.
        info = server.context.session_info(victim)
        assert info is not None and info["subscriptions"] == ["/news"]
        assert server.context.stats()["held"] == 1
        for i in range(50):
            await server.context.send("/news", i)
        received: list[Any] = []
        while len(received) < 50:
            batch = await receive(victim_ws)
            assert all(m["channel"] == "/news" for m in batch), batch
            received += [m["data"] for m in batch]
        assert received == list(range(50))
        # The attacker's socket got its replies and nothing else.
        assert await exchange(attacker) == []


async def test_a_socket_takes_an_http_session_only_with_its_cookie(
    server: Server, http: httpx.AsyncClient
) -> None:
    client_id = await handshake(http, server.url)  # and its first connect, over HTTP
    await subscribe(http, server.url, client_id, "/moved")
    async with socket(server) as stranger:
        for reply in await exchange(stranger, *attempts(client_id)):
            assert_refused(reply)
    cookie = http.cookies[COOKIE]
    async with socket(server, cookie=cookie) as ws:
        assert cookie_set(ws) is None, "the upgrade carried a cookie: none is set"
        await ws.send(json.dumps([ws_connect(client_id)]))
        await connects_held(server)
        await server.context.send("/moved", "over the socket")
        assert await receive(ws) == [{"channel": "/moved", "data": "over the socket"}]


async def test_a_fresh_http_session_goes_to_the_first_socket_that_uses_it(
    server: Server, http: httpx.AsyncClient
) -> None:
    # Faye opens its socket before it handshakes over HTTP: its upgrade has no cookie.
    async with socket(server) as early, socket(server) as late:
        [hs] = await post(
            http,
            server.url,
            {"channel": "/meta/handshake", "supportedConnectionTypes": ["websocket"]},
        )
        client_id = hs["clientId"]
        [subscribed] = await exchange(
            early, {"channel": "/meta/subscribe", "clientId": client_id, "subscription": "/f"}
        )
        assert subscribed["successful"] is True
        [first] = await exchange(early, ws_connect(client_id))
        assert first["successful"] is True
        # Now the session is the early socket's.
        for reply in await exchange(late, *attempts(client_id)):
            assert_refused(reply)
        await early.send(json.dumps([ws_connect(client_id, "held")]))
        await connects_held(server)
        await server.context.send("/f", "to the first")
        assert await receive(early) == [{"channel": "/f", "data": "to the first"}]


@PATHS
async def test_the_owner_takes_its_session_to_a_new_socket_with_its_cookie(
    serve: ServeFactory, hooked: bool
) -> None:
    server = await serve_long(serve, hooked)
    async with socket(server) as old:
        # The upgrade had no cookie: its reply sets one, for the sessions made on the socket.
        cookie = cookie_set(old)
        assert cookie is not None
        client_id = await ws_session(old, "/owned")
        await old.send(json.dumps([ws_connect(client_id, "old")]))
        await connects_held(server)
        # The old socket is still open, as when a network drops and the server has not seen
        # it yet: the owner's new socket, with the cookie, takes the session.
        async with socket(server, cookie=cookie) as new:
            [moved] = await exchange(new, ws_connect(client_id, "new", timeout=0))
            assert moved["successful"] is True
            # The old socket's held connect ends at once.
            [ended] = await receive(old)
            assert ended["id"] == "old"
            await new.send(json.dumps([ws_connect(client_id, "held")]))
            await connects_held(server)
            await server.context.send("/owned", "here")
            assert await receive(new) == [{"channel": "/owned", "data": "here"}]
            # When the old socket closes at last, the session stays with the new one.
            await old.close()
            await until(lambda: len(server.context._sockets) == 1, "the old socket is gone")
            await server.context.send("/owned", "still here")
            assert await receive(new) == [{"channel": "/owned", "data": "still here"}]
            assert server.context.stats()["held"] == 1


@pytest.mark.parametrize("trusted", [False, True], ids=["cookie", "trusted"])
async def test_a_session_whose_socket_closed_needs_the_cookie_unless_trusted(
    serve: ServeFactory, trusted: bool
) -> None:
    server = await serve_long(serve, trusted=trusted)
    async with socket(server) as ws:
        cookie = cookie_set(ws)
        client_id = await ws_session(ws, "/keep")
    await until(lambda: not server.context._sockets, "the socket is gone")
    await server.context.send("/keep", "queued")
    async with socket(server) as stranger:
        reply = await exchange(stranger, ws_connect(client_id, timeout=0))
        if not trusted:
            [refused] = reply
            assert_refused(refused)
            assert server.context.session_info(client_id) is not None
    if not trusted:
        async with socket(server, cookie=cookie) as ws:
            reply = await exchange(ws, ws_connect(client_id, timeout=0))
    assert reply[0] == {"channel": "/keep", "data": "queued"}
    assert reply[1]["successful"] is True


async def test_http_needs_the_cookie_for_a_socket_session_even_when_trusted(
    serve: ServeFactory,
) -> None:
    server = await serve_long(serve, trusted=True)
    async with (
        socket(server) as ws,
        httpx.AsyncClient(timeout=10) as stranger,
        httpx.AsyncClient(timeout=10) as owner,
    ):
        cookie = cookie_set(ws)
        assert cookie is not None
        client_id = await ws_session(ws, "/mine")
        await ws.send(json.dumps([ws_connect(client_id, "held")]))
        await connects_held(server)
        for message in attempts(client_id):
            [reply] = await post(stranger, server.url, message)
            assert_refused(reply)
        assert server.context.stats()["held"] == 1
        # The owner falling back to long-polling: its connect takes the session off the
        # socket, whose held connect ends; messages then wait for its next connect.
        owner.cookies.set(COOKIE, cookie)
        [moved] = await post(owner, server.url, connect_message(client_id, timeout=0))
        assert moved["successful"] is True
        [ended] = await receive(ws)
        assert ended["id"] == "held"
        await server.context.send("/mine", "by long-polling")
        replies = await post(owner, server.url, connect_message(client_id, timeout=0))
        assert replies[0] == {"channel": "/mine", "data": "by long-polling"}


@pytest.mark.parametrize("host", ["localhost", "ip"])
async def test_aiocometd_moves_its_http_session_to_a_socket_that_keeps_it(
    server: Server, host: str
) -> None:
    # At an IP address aiohttp keeps no cookie: the socket has none, and the fresh session is
    # the first socket's.
    url = server.url if host == "localhost" else server.ip_url
    events = server.context.rx()
    async with Client(url, [ConnectionType.WEBSOCKET]) as client:
        assert client.connection_type is ConnectionType.WEBSOCKET
        added = await asyncio.wait_for(events.recv(), 5)
        assert isinstance(added, SessionAdded)
        client_id = str(added.client_id)
        await client.subscribe("/switch")
        async with socket(server) as attacker:
            for reply in await exchange(attacker, *attempts(client_id)):
                assert_refused(reply)
        await server.context.send("/switch", {"n": 1})
        message = await asyncio.wait_for(client.receive(), 5)
        assert message["data"] == {"n": 1}
