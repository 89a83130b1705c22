"""End to end with aiocometd (aiocometd-noloop from PyPI), over long-polling and over WebSocket.

aiocometd always handshakes over HTTP long-polling, then switches to the best connection type
that both it and the server offer; every test runs once with ``[LONG_POLLING]`` and once with
``[WEBSOCKET, LONG_POLLING]`` and checks the type the client ended up with.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from aiocometd_noloop import Client, ConnectionType  # type: ignore[import-untyped]

from starlette_cometd import (
    CometdEventReceiver,
    Event,
    RemovalReason,
    SessionAdded,
    SessionRemoved,
    Subscribe,
)
from support.servers import Server

# Every wait in this module is bounded by this many seconds unless it says otherwise.
WAIT = 10.0


@dataclass(frozen=True)
class Transport:
    """The connection types a client asks for, and the one it must end up using."""

    types: list[Any]
    expected: Any


@pytest.fixture(
    params=[
        Transport([ConnectionType.LONG_POLLING], ConnectionType.LONG_POLLING),
        Transport(
            [ConnectionType.WEBSOCKET, ConnectionType.LONG_POLLING], ConnectionType.WEBSOCKET
        ),
    ],
    ids=["long-polling", "websocket"],
)
def transport(request: pytest.FixtureRequest) -> Transport:
    result: Transport = request.param
    return result


Opener = Callable[..., AbstractAsyncContextManager[Any]]


@pytest.fixture
def client(server: Server, transport: Transport) -> Opener:
    """``async with client(**options) as c``: an open aiocometd client of ``server``, using
    the connection type under test."""

    @asynccontextmanager
    async def open_client(**options: Any) -> AsyncIterator[Any]:
        # server.url names localhost, not 127.0.0.1: aiohttp's cookie jar drops cookies from
        # IP-address hosts, and the server needs its BAYEUX_BROWSER cookie back.
        async with Client(server.url, transport.types, connection_timeout=WAIT, **options) as c:
            assert c.connection_type is transport.expected
            yield c

    return open_client


async def receive(c: Any, n: int, timeout: float = WAIT) -> list[dict[str, Any]]:
    """The next ``n`` messages ``c`` receives."""

    async def take() -> list[dict[str, Any]]:
        return [await c.receive() for _ in range(n)]

    return await asyncio.wait_for(take(), timeout)


async def receive_until(c: Any, marker: str, timeout: float = WAIT) -> list[dict[str, Any]]:
    """The messages ``c`` receives before the first one on channel ``marker``. Messages for a
    session arrive in the order the server queued them, so anything that was going to arrive
    before the marker has arrived: no sleeping and hoping."""

    async def take() -> list[dict[str, Any]]:
        out = []
        while (message := await c.receive())["channel"] != marker:
            out.append(message)
        return out

    return await asyncio.wait_for(take(), timeout)


async def events_until(
    receiver: CometdEventReceiver, done: Callable[[Event], bool], timeout: float = WAIT
) -> list[Event]:
    """The server events up to and including the first for which ``done`` holds."""

    async def take() -> list[Event]:
        out: list[Event] = []
        while True:
            event = await receiver.recv()
            assert event is not None, f"the context closed; events so far: {out}"
            out.append(event)
            if done(event):
                return out

    return await asyncio.wait_for(take(), timeout)


def _drain(receiver: CometdEventReceiver) -> list[Event]:
    """Events already delivered to a receiver, without waiting."""
    out = []
    while (event := receiver.try_recv()) is not None:
        out.append(event)
    return out


async def test_two_clients_exchange_messages_in_order(client: Opener) -> None:
    async with client() as alice, client() as bob:
        await alice.subscribe("/chat/room")
        await bob.subscribe("/chat/room")
        for i in range(20):
            await bob.publish("/chat/room", {"seq": i, "from": "bob"})
            await alice.publish("/chat/room", {"seq": i, "from": "alice"})
        to_alice = await receive(alice, 40)
        to_bob = await receive(bob, 40)
    expected = [(i, who) for i in range(20) for who in ("bob", "alice")]
    # Both see every message, their own included, in the one order the server published them.
    assert [(m["data"]["seq"], m["data"]["from"]) for m in to_alice] == expected
    assert [(m["data"]["seq"], m["data"]["from"]) for m in to_bob] == expected
    assert all(m["channel"] == "/chat/room" for m in to_alice + to_bob)


async def test_wildcards_deliver_once_per_session(server: Server, client: Opener) -> None:
    async with client() as listener, client() as talker:
        for pattern in ("/w/*", "/w/**", "/w/a", "/marker"):
            await listener.subscribe(pattern)
        before = server.context.stats()
        await talker.publish("/w/a", {"n": 1})  # matches all three patterns
        await talker.publish("/w/a/b", {"n": 2})  # matches /w/** only
        await talker.publish("/elsewhere", {"n": 3})  # matches nothing
        await talker.publish("/w/end", {"n": 4})  # matches /w/* and /w/**
        await talker.publish("/marker", "end")
        messages = await receive_until(listener, "/marker")
        after = server.context.stats()
    # A duplicate would have been queued before the marker, so it would be in `messages`.
    assert [(m["channel"], m["data"]["n"]) for m in messages] == [
        ("/w/a", 1),
        ("/w/a/b", 2),
        ("/w/end", 4),
    ]
    assert after["published"] - before["published"] == 5
    # Three matching messages and the marker, each queued once for the one subscriber.
    assert after["delivered"] - before["delivered"] == 4


async def test_unsubscribe_stops_delivery(client: Opener) -> None:
    async with client() as listener, client() as talker:
        await listener.subscribe("/gone")
        await listener.subscribe("/marker")
        await talker.publish("/gone", 1)
        [first] = await receive(listener, 1)
        await listener.unsubscribe("/gone")
        assert listener.subscriptions == {"/marker"}
        await talker.publish("/gone", 2)
        await talker.publish("/marker", "end")
        [second] = await receive(listener, 1)
    assert first["channel"] == "/gone" and first["data"] == 1
    assert second == {"channel": "/marker", "data": "end"}


async def test_server_send_and_send_to_client(server: Server, client: Opener) -> None:
    events = server.context.rx()
    async with client() as one, client() as two:
        for c in (one, two):
            await c.subscribe("/news")
            await c.subscribe("/end")
        # `async with a, b` opens `one` completely before `two` handshakes.
        ids = [e.client_id for e in _drain(events) if isinstance(e, SessionAdded)]
        assert len(ids) == 2
        await server.context.send("/news", {"headline": "hi"})
        # To one session, on a channel neither subscribed to; by ClientId and by string.
        await server.context.send_to_client("/private", ids[0], {"for": "one"})
        await server.context.send_to_client("/private", str(ids[1]), {"for": "two"})
        await server.context.send_to_client("/private", ids[0], {"for": "one", "n": 2})
        # The marker: whatever was queued for a session before it arrives before it.
        await server.context.send("/end", "end")
        got_one = await receive_until(one, "/end")
        got_two = await receive_until(two, "/end")
    assert [(m["channel"], m["data"]) for m in got_one] == [
        ("/news", {"headline": "hi"}),
        ("/private", {"for": "one"}),
        ("/private", {"for": "one", "n": 2}),
    ]
    assert [(m["channel"], m["data"]) for m in got_two] == [
        ("/news", {"headline": "hi"}),
        ("/private", {"for": "two"}),
    ]


async def test_client_handshakes_again_after_its_session_is_removed(
    server: Server, client: Opener, transport: Transport, caplog: pytest.LogCaptureFixture
) -> None:
    """What aiocometd does (transports/base.py, ``_connect_done`` and ``_follow_advice``):
    the server answers the session's held (or next) ``/meta/connect`` with
    ``402::session_unknown`` and ``advice: {reconnect: "handshake"}``. The failed reply is the
    connect's own response, so it is not queued for ``receive()`` and raises nothing; the
    transport follows the advice with a handshake over the same connection type, which sets
    ``_subscribe_on_connect``, so its next ``/meta/connect`` carries a ``/meta/subscribe`` for
    every channel it was subscribed to. The client goes on under a new client id with its
    subscriptions intact."""
    # aiocometd logs the result of every connect and handshake it runs in the background.
    caplog.set_level(logging.DEBUG, logger="aiocometd_noloop.transports.base")
    events = server.context.rx()
    async with client() as c:
        await c.subscribe("/re")
        await c.subscribe("/re/*")
        [added] = [e for e in _drain(events) if isinstance(e, SessionAdded)]
        old = added.client_id
        await server.context.remove_session(old)
        assert server.context.session_info(old) is None
        # Wait for the new session to have both subscriptions back.
        resubscribed: set[str] = set()

        def back(event: Event) -> bool:
            if isinstance(event, Subscribe) and event.client_id != old:
                resubscribed.update(event.channels)
            return resubscribed == {"/re", "/re/*"}

        seen = await events_until(events, back)
        new = [e.client_id for e in seen if isinstance(e, SessionAdded)]
        assert len(new) == 1 and new[0] != old
        assert SessionRemoved(old, RemovalReason.REMOVED) in seen
        assert server.context.session_info(new[0]) is not None
        # Same connection type as before, same subscriptions, nothing raised or queued.
        assert c.connection_type is transport.expected
        assert c.subscriptions == {"/re", "/re/*"}
        assert not c.has_pending_messages

        await server.context.send("/re", {"after": "rehandshake"})
        await server.context.send("/re/x", {"after": "rehandshake", "wild": True})
        await c.publish("/re", "the client publishes under its new id")
        got = await receive(c, 3)
    assert [(m["channel"], m["data"]) for m in got] == [
        ("/re", {"after": "rehandshake"}),
        ("/re/x", {"after": "rehandshake", "wild": True}),
        ("/re", "the client publishes under its new id"),
    ]
    # What the client was told and what it did about it, in order: the 402 for the removed
    # session, then a handshake of its own accord that got the new id.
    # (logging stores a lone dict argument as the record's args itself.)
    results = [
        r.args
        for r in caplog.records
        if r.name == "aiocometd_noloop.transports.base"
        and r.msg == "Connect task finished with: %r"
        and isinstance(r.args, dict)
    ]
    assert results, "aiocometd logged no connect results"
    refused = next(i for i, r in enumerate(results) if not r.get("successful", True))
    assert results[refused] == {
        "channel": "/meta/connect",
        "successful": False,
        "error": "402::session_unknown",
        "advice": {"reconnect": "handshake", "interval": 0},
        "id": results[refused]["id"],
    }
    rehandshake = results[refused + 1]
    assert rehandshake["channel"] == "/meta/handshake" and rehandshake["successful"]
    assert rehandshake["clientId"] == str(new[0])
    assert all(r["successful"] for r in results[refused + 1 :])
    # The new session ends like any other when the client closes.
    [gone] = [
        e
        for e in await events_until(events, lambda e: isinstance(e, SessionRemoved))
        if isinstance(e, SessionRemoved)
    ]
    assert gone == SessionRemoved(new[0], RemovalReason.DISCONNECTED)


async def test_256_kib_of_multibyte_text_arrives_intact(server: Server, client: Opener) -> None:
    text = "é" * 131072
    assert len(text.encode()) == 256 * 1024
    # json.dumps escapes non-ASCII by default; the talker sends raw UTF-8 instead, so the
    # multi-byte text crosses the wire as such in both directions.
    raw_utf8 = functools.partial(json.dumps, ensure_ascii=False)
    async with client() as listener, client(json_dumps=raw_utf8) as talker:
        await listener.subscribe("/big")
        await talker.publish("/big", {"text": text, "from": "client"})
        await server.context.send("/big", {"text": text, "from": "server"})
        messages = await receive(listener, 2)
    assert [m["data"]["from"] for m in messages] == ["client", "server"]
    for m in messages:
        assert m["channel"] == "/big"
        assert len(m["data"]["text"]) == len(text)
        assert m["data"]["text"] == text


async def test_burst_of_400_server_messages_arrives_complete_and_in_order(
    server: Server, client: Opener
) -> None:
    async with client() as c:
        await c.subscribe("/burst")
        for i in range(400):
            await server.context.send("/burst", {"seq": i})
        messages = await receive(c, 400, timeout=30)
    assert [m["data"]["seq"] for m in messages] == list(range(400))
    assert server.context.stats()["dropped"] == 0


async def test_events_seen_by_the_application(
    server: Server, client: Opener, transport: Transport
) -> None:
    events = server.context.rx()
    async with client() as c:
        await c.subscribe("/topic")
    seen = await events_until(events, lambda e: isinstance(e, SessionRemoved))
    assert [type(e) for e in seen] == [SessionAdded, Subscribe, SessionRemoved]
    added, subscribed, removed = seen
    assert isinstance(added, SessionAdded)
    assert isinstance(subscribed, Subscribe)
    assert isinstance(removed, SessionRemoved)
    # aiocometd handshakes over HTTP whatever it goes on to use.
    assert "aiohttp" in added.headers.get("user-agent", "").lower()
    assert added.headers.get("content-type", "").startswith("application/json")
    # The subscribe came over the connection type in use: its headers are that request's.
    assert "aiohttp" in subscribed.headers.get("user-agent", "").lower()
    if transport.expected is ConnectionType.WEBSOCKET:
        assert subscribed.headers.get("upgrade", "").lower() == "websocket"
    else:
        assert "upgrade" not in subscribed.headers
    assert subscribed.channels == ("/topic",)
    assert subscribed.client_id == added.client_id
    assert removed == SessionRemoved(added.client_id, RemovalReason.DISCONNECTED)
