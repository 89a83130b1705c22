"""What one client can make the server hold in sessions: limits per browser cookie and per
address, expiry in slices, and lifecycle events that a flood of sessions cannot push out of
the application's receiver."""

from __future__ import annotations

import json
from typing import Any

import httpx
import websockets

from starlette_cometd import LongPollingServiceContextBuilder, SessionAdded, SessionRemoved
from support.bayeux import post
from support.client_steps import until
from support.servers import ServeFactory, Server

Message = dict[str, Any]
HANDSHAKE: Message = {"channel": "/meta/handshake", "supportedConnectionTypes": ["long-polling"]}


async def handshake_replies(server: Server, count: int, cookie: str | None = None) -> list[Message]:
    """``count`` handshakes in one batch, with ``cookie`` as the browser cookie or none."""
    async with httpx.AsyncClient(timeout=30) as http:
        replies, _ = await handshakes(http, server, count, cookie)
    return replies


async def handshakes(
    http: httpx.AsyncClient, server: Server, count: int, cookie: str | None = None
) -> tuple[list[Message], str | None]:
    """The replies to ``count`` handshakes in one batch, and the cookie the batch was given."""
    headers = {"cookie": f"BAYEUX_BROWSER={cookie}"} if cookie else {}
    response = await http.post(server.ip_url, json=[HANDSHAKE] * count, headers=headers)
    assert response.status_code == 200, response.text
    replies: list[Message] = response.json()
    return replies, response.cookies.get("BAYEUX_BROWSER")


def refused(replies: list[Message]) -> list[str]:
    return [reply["error"] for reply in replies if not reply["successful"]]


async def test_sessions_per_address_are_limited_on_http_and_websocket(serve: ServeFactory) -> None:
    builder = LongPollingServiceContextBuilder().max_sessions_per_address(3)
    server = await serve(builder.max_sessions_per_cookie(None))
    async with httpx.AsyncClient(timeout=30) as http:
        replies, cookie = await handshakes(http, server, 2)
    assert refused(replies) == []
    ws_url = server.ip_url.replace("http://", "ws://")
    async with websockets.connect(ws_url, open_timeout=5) as ws:
        handshake = {**HANDSHAKE, "supportedConnectionTypes": ["websocket"]}
        await ws.send(json.dumps([handshake, handshake]))
        third, fourth = json.loads(await ws.recv())
    assert third["successful"] is True
    assert fourth == {
        "channel": "/meta/handshake",
        "successful": False,
        "error": "403:address:too_many_sessions",
    }
    assert refused(await handshake_replies(server, 1)) == ["403:address:too_many_sessions"]
    assert server.context.stats()["sessions"] == 3
    # A session that ends makes room for another.
    async with httpx.AsyncClient(timeout=30) as http:
        disconnect = {"channel": "/meta/disconnect", "clientId": replies[0]["clientId"]}
        headers = {"cookie": f"BAYEUX_BROWSER={cookie}"}
        response = await http.post(server.ip_url, json=[disconnect], headers=headers)
        assert response.json()[0]["successful"] is True
    assert refused(await handshake_replies(server, 2)) == ["403:address:too_many_sessions"]


async def test_sessions_per_cookie_are_limited(serve: ServeFactory) -> None:
    server = await serve(LongPollingServiceContextBuilder().max_sessions_per_cookie(2))
    async with httpx.AsyncClient(timeout=30) as http:
        replies, cookie = await handshakes(http, server, 3)
        assert refused(replies) == ["403:browser:too_many_sessions"]
        [again] = await post(http, server.ip_url, HANDSHAKE)
        assert again["error"] == "403:browser:too_many_sessions", "the cookie was kept"
    # Another browser is not affected; the address limit (10,000 by default) is far.
    assert refused(await handshake_replies(server, 2)) == []
    assert refused(await handshake_replies(server, 1, cookie)) == ["403:browser:too_many_sessions"]


async def test_default_limit_per_cookie_is_one_hundred(serve: ServeFactory) -> None:
    server = await serve(LongPollingServiceContextBuilder())
    replies = await handshake_replies(server, 150)
    assert refused(replies) == ["403:browser:too_many_sessions"] * 50
    assert server.context.stats()["sessions"] == 100


async def test_a_flood_of_sessions_expires_in_slices_and_frees_its_counts(
    serve: ServeFactory,
) -> None:
    builder = LongPollingServiceContextBuilder().max_interval(2).max_sessions_per_cookie(None)
    server = await serve(builder.max_sessions_per_address(2500))
    for _ in range(5):
        assert refused(await handshake_replies(server, 500)) == []
    assert refused(await handshake_replies(server, 1)) == ["403:address:too_many_sessions"]
    await until(lambda: server.context.stats()["sessions"] == 0, "the flood expired")
    stats = server.context.stats()
    assert (stats["sessions_created"], stats["sessions_removed"]) == (2500, 2500)
    assert refused(await handshake_replies(server, 10)) == [], "the address has room again"


async def test_lifecycle_events_survive_a_flood_of_expiring_sessions(serve: ServeFactory) -> None:
    """A slow application still learns that its sessions ended, however many sessions an
    attacker makes meanwhile: an attacker's session that comes and goes unread costs the
    receiver nothing, and removals of sessions the application saw are never dropped."""
    builder = LongPollingServiceContextBuilder().events_channel_capacity(10).max_interval(0.5)
    server = await serve(builder.max_sessions_per_cookie(None))
    receiver = server.context.rx()
    seen = [reply["clientId"] for reply in await handshake_replies(server, 20)]
    added = [receiver.try_recv() for _ in seen]
    assert [str(e.client_id) for e in added if isinstance(e, SessionAdded)] == seen
    # The application stops reading; an attacker's sessions come and expire.
    for _ in range(6):
        await handshake_replies(server, 500)
    await until(lambda: server.context.stats()["sessions_removed"] == 3020, "all expired")
    removed = []
    while (event := receiver.try_recv()) is not None:
        assert isinstance(event, SessionRemoved), event
        removed.append(str(event.client_id))
    assert removed == seen
    assert receiver.missed == 0


async def test_custom_data_past_capacity_is_dropped_but_lifecycle_events_are_not(
    serve: ServeFactory,
) -> None:
    server = await serve(LongPollingServiceContextBuilder().events_channel_capacity(3))
    receiver = server.context.rx()
    sender = server.context.tx()
    [reply] = await handshake_replies(server, 1)
    assert isinstance(receiver.try_recv(), SessionAdded)
    for i in range(10):
        await sender.send(i)
    await server.context.remove_session(reply["clientId"])
    events = []
    while (event := receiver.try_recv()) is not None:
        events.append(event)
    assert [type(e).__name__ for e in events] == [
        "CustomData",
        "CustomData",
        "CustomData",
        "SessionRemoved",
    ]
    assert receiver.missed == 7


async def test_a_full_receiver_leaves_out_sessions_that_came_and_went_unread(
    serve: ServeFactory,
) -> None:
    server = await serve(LongPollingServiceContextBuilder().events_channel_capacity(3))
    receiver = server.context.rx()
    async with httpx.AsyncClient(timeout=30) as http:
        replies, _ = await handshakes(http, server, 10)
        ids = [reply["clientId"] for reply in replies]
        subscribes = [
            {"channel": "/meta/subscribe", "clientId": c, "subscription": "/a"} for c in ids
        ]
        assert all(reply["successful"] for reply in await post(http, server.ip_url, *subscribes))
    for client_id in ids:
        await server.context.remove_session(client_id)
    # Past the capacity the oldest Subscribe events were dropped; then each session that ended
    # unread left with its events while the receiver stayed full, and the last one, once
    # there was room, was delivered whole.
    events = []
    while (event := receiver.try_recv()) is not None:
        events.append((type(event).__name__, str(getattr(event, "client_id", ""))))
    last = ids[-1]
    assert events == [("SessionAdded", last), ("Subscribe", last), ("SessionRemoved", last)]
    assert receiver.missed == 7
