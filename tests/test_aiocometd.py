"""End to end with aiocometd (aiocometd-noloop from PyPI) over HTTP long-polling."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiocometd_noloop import Client, ConnectionType  # type: ignore[import-untyped]

from conftest import Server
from starlette_cometd import (
    CometdEventReceiver,
    Event,
    RemovalReason,
    SessionAdded,
    SessionRemoved,
    Subscribe,
)


@asynccontextmanager
async def client(server: Server) -> AsyncIterator[Any]:
    # localhost, not 127.0.0.1: aiohttp's cookie jar drops cookies from IP-address hosts.
    async with Client(server.url, ConnectionType.LONG_POLLING, connection_timeout=10) as c:
        yield c


async def receive(c: Any, n: int, timeout: float = 10) -> list[dict[str, Any]]:
    async def take() -> list[dict[str, Any]]:
        return [await c.receive() for _ in range(n)]

    return await asyncio.wait_for(take(), timeout)


async def test_two_clients_exchange_messages_in_order(server: Server) -> None:
    async with client(server) as alice, client(server) as bob:
        await alice.subscribe("/chat/room")
        for i in range(10):
            await bob.publish("/chat/room", {"seq": i, "from": "bob"})
        messages = await receive(alice, 10)
    assert [m["data"]["seq"] for m in messages] == list(range(10))
    assert all(m["channel"] == "/chat/room" for m in messages)


async def test_wildcards_deliver_once_per_session(server: Server) -> None:
    async with client(server) as listener, client(server) as talker:
        for pattern in ("/w/*", "/w/**", "/w/a"):
            await listener.subscribe(pattern)
        await talker.publish("/w/a", {"n": 1})
        await talker.publish("/w/a/b", {"n": 2})
        await talker.publish("/elsewhere", {"n": 3})
        await talker.publish("/w/end", {"n": 4})
        messages = await receive(listener, 3)
        # Nothing more is queued: the first message was not sent three times.
        assert not listener.has_pending_messages
    assert [(m["channel"], m["data"]["n"]) for m in messages] == [
        ("/w/a", 1),
        ("/w/a/b", 2),
        ("/w/end", 4),
    ]


async def test_unsubscribe_stops_delivery(server: Server) -> None:
    async with client(server) as listener, client(server) as talker:
        await listener.subscribe("/gone")
        await listener.subscribe("/marker")
        await talker.publish("/gone", 1)
        [first] = await receive(listener, 1)
        await listener.unsubscribe("/gone")
        await talker.publish("/gone", 2)
        await talker.publish("/marker", "end")
        [second] = await receive(listener, 1)
    assert first["data"] == 1
    assert second == {"channel": "/marker", "data": "end", "id": second["id"]}


async def test_server_send_and_send_to_client(server: Server) -> None:
    events = server.context.rx()
    async with client(server) as one, client(server) as two:
        for c in (one, two):
            await c.subscribe("/news")
            await c.subscribe("/private")
        ids = [str(e.client_id) for e in _drain(events) if isinstance(e, SessionAdded)]
        assert len(ids) == 2
        await server.context.send("/news", {"headline": "hi"})
        await server.context.send_to_client("/private", ids[0], {"for": "one"})
        await server.context.send_to_client("/private", ids[1], {"for": "two"})
        got_one = await receive(one, 2)
        got_two = await receive(two, 2)
    assert [m["data"] for m in got_one] == [{"headline": "hi"}, {"for": "one"}]
    assert [m["data"] for m in got_two] == [{"headline": "hi"}, {"for": "two"}]


async def test_burst_of_400_server_messages_arrives_complete_and_in_order(
    server: Server,
) -> None:
    async with client(server) as c:
        await c.subscribe("/burst")
        for i in range(400):
            await server.context.send("/burst", {"seq": i})
        messages = await receive(c, 400, timeout=30)
    assert [m["data"]["seq"] for m in messages] == list(range(400))


async def test_events_seen_by_the_application(server: Server) -> None:
    events = server.context.rx()
    async with client(server) as c:
        await c.subscribe("/topic")
    seen = _drain(events)
    added = [e for e in seen if isinstance(e, SessionAdded)]
    subscribed = [e for e in seen if isinstance(e, Subscribe)]
    removed = [e for e in seen if isinstance(e, SessionRemoved)]
    assert len(added) == 1 and "aiohttp" in added[0].headers.get("user-agent", "").lower()
    assert subscribed[0].channels == ("/topic",)
    assert subscribed[0].client_id == added[0].client_id
    assert removed[0].reason is RemovalReason.DISCONNECTED


def _drain(receiver: CometdEventReceiver) -> list[Event]:
    """Events already delivered to a receiver, without waiting."""
    out = []
    while (event := receiver.try_recv()) is not None:
        out.append(event)
    return out
