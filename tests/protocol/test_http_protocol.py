"""The Bayeux protocol over HTTP long-polling, checked with raw requests against real uvicorn."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import pytest

from starlette_cometd import LongPollingServiceContextBuilder, RouterBuilder
from support.bayeux import connect_message, handshake, post, subscribe
from support.client_steps import connects_held
from support.servers import ServeFactory, Server

HEX40 = re.compile(r"^[0-9a-f]{40}$")


async def test_handshake_reply_and_cookie(server: Server, http: httpx.AsyncClient) -> None:
    response = await http.post(
        server.url,
        json=[
            {
                "channel": "/meta/handshake",
                "version": "1.0",
                "minimumVersion": "1.0",
                "supportedConnectionTypes": ["long-polling"],
                "id": 17,
            }
        ],
    )
    assert response.status_code == 200
    [reply] = response.json()
    assert reply["successful"] is True
    assert HEX40.match(reply["clientId"])
    assert reply["version"] == "1.0"
    assert reply["minimumVersion"] == "1.0"
    assert reply["supportedConnectionTypes"] == ["websocket", "long-polling", "callback-polling"]
    assert reply["advice"] == {"reconnect": "retry", "interval": 0, "timeout": 2000}
    assert reply["id"] == 17  # echoed with its JSON type
    assert "data" not in reply
    cookie = response.headers["set-cookie"]
    assert re.match(r"^BAYEUX_BROWSER=[0-9a-f]{40}; Path=/; HttpOnly; SameSite=Lax$", cookie)


@pytest.mark.parametrize("suffix", ["", "/", "/handshake", "/connect", "/subscribe", "/disconnect"])
async def test_every_route_dispatches_on_channel(
    server: Server, http: httpx.AsyncClient, suffix: str
) -> None:
    # Whatever the path, a handshake is a handshake: the path is never trusted.
    [reply] = await post(http, server.url + suffix, {"channel": "/meta/handshake"})
    assert reply["successful"] is True
    assert reply["channel"] == "/meta/handshake"


async def test_bare_mount_path_is_not_redirected(server: Server, http: httpx.AsyncClient) -> None:
    response = await http.post(server.url, json=[{"channel": "/meta/handshake"}])
    assert response.status_code == 200
    assert not response.history
    assert (await http.post(server.url + "/nope", json=[])).status_code == 404
    assert (await http.put(server.url, json=[])).status_code == 405
    # A GET is callback-polling, which needs its parameters.
    response = await http.get(server.url)
    assert response.status_code == 400
    assert response.json()[0]["error"] == "400::jsonp_invalid"


async def test_custom_base_paths(serve: ServeFactory, http: httpx.AsyncClient) -> None:
    router = RouterBuilder().handshake_base_path("/node/0").connect_base_path("/node/1")
    server = await serve(router=router)
    [hs] = await post(http, server.url + "/node/0/handshake", {"channel": "/meta/handshake"})
    client_id = hs["clientId"]
    [connect] = await post(http, server.url + "/node/1/connect", connect_message(client_id, 0))
    assert connect["successful"] is True
    # The default handshake path is not served when it was moved.
    response = await http.post(server.url + "/handshake", json=[{"channel": "/meta/handshake"}])
    assert response.status_code == 404


async def test_first_connect_is_answered_at_once_then_held(
    server: Server, http: httpx.AsyncClient
) -> None:
    [hs] = await post(http, server.url, {"channel": "/meta/handshake"})
    client_id = hs["clientId"]
    started = time.monotonic()
    # No advice.timeout (as aiocometd sends it): the first connect still returns at once.
    [first] = await post(http, server.url, connect_message(client_id))
    assert first["successful"] is True
    assert first["advice"]["reconnect"] == "retry"
    assert time.monotonic() - started < 1.5
    # The second is held until the server's timeout (2 s here), then answered empty.
    started = time.monotonic()
    [second] = await post(http, server.url, connect_message(client_id, id="c2"))
    assert second == {
        "channel": "/meta/connect",
        "successful": True,
        "clientId": client_id,
        "advice": {"reconnect": "retry", "interval": 0, "timeout": 2000},
        "id": "c2",
    }
    assert time.monotonic() - started >= 1.9


async def test_client_advice_timeout_is_honoured(server: Server, http: httpx.AsyncClient) -> None:
    client_id = await handshake(http, server.url)
    started = time.monotonic()
    [reply] = await post(http, server.url, connect_message(client_id, timeout=300))
    elapsed = time.monotonic() - started
    assert reply["successful"] is True
    assert 0.25 <= elapsed < 1.5


async def test_held_connect_returns_with_everything_queued_in_order(
    server: Server, http: httpx.AsyncClient
) -> None:
    client_id = await handshake(http, server.url)
    await subscribe(http, server.url, client_id, "/a")
    held = asyncio.ensure_future(post(http, server.url, connect_message(client_id, id="held")))
    await connects_held(server)
    for i in range(5):
        await server.context.send("/a", {"n": i})
    reply = await asyncio.wait_for(held, 5)
    assert [m["data"]["n"] for m in reply[:-1]] == [0, 1, 2, 3, 4]
    assert all(m["channel"] == "/a" for m in reply[:-1])
    assert reply[-1]["channel"] == "/meta/connect" and reply[-1]["id"] == "held"


async def test_connect_sharing_a_request_is_answered_at_once_with_messages(
    server: Server, http: httpx.AsyncClient
) -> None:
    client_id = await handshake(http, server.url)
    reply = await post(
        http,
        server.url,
        {"channel": "/meta/subscribe", "clientId": client_id, "subscription": "/b", "id": "s"},
        {"channel": "/b", "clientId": client_id, "data": "hello", "id": "p"},
        connect_message(client_id, id="c"),
    )
    assert [m.get("id") for m in reply] == ["s", "p", None, "c"]
    # The delivery, before the connect, without the publisher's id (as CometD: a client that
    # matches replies to requests by id would take it for a reply).
    assert reply[2] == {"channel": "/b", "data": "hello"}


async def test_second_connect_releases_the_first(server: Server, http: httpx.AsyncClient) -> None:
    client_id = await handshake(http, server.url)
    first = asyncio.ensure_future(post(http, server.url, connect_message(client_id, id="one")))
    await connects_held(server)
    second = asyncio.ensure_future(post(http, server.url, connect_message(client_id, id="two")))
    [released] = await asyncio.wait_for(first, 1.5)
    assert released["id"] == "one" and released["successful"] is True
    await server.context.send_to_client("/x", client_id, 1)
    reply = await asyncio.wait_for(second, 1.5)
    assert reply[0] == {"channel": "/x", "data": 1}
    assert reply[1]["id"] == "two"


async def test_disconnect_releases_a_held_connect(server: Server, http: httpx.AsyncClient) -> None:
    client_id = await handshake(http, server.url)
    held = asyncio.ensure_future(post(http, server.url, connect_message(client_id)))
    await connects_held(server)
    [bye] = await post(http, server.url, {"channel": "/meta/disconnect", "clientId": client_id})
    assert bye["successful"] is True
    [released] = await asyncio.wait_for(held, 1.5)
    # As CometD Java: a clean end with advice not to reconnect, not an error.
    assert released["successful"] is True
    assert released["advice"] == {"reconnect": "none", "interval": 0}
    assert server.context.stats()["sessions"] == 0


async def test_unknown_session_gets_402_with_handshake_advice(
    server: Server, http: httpx.AsyncClient
) -> None:
    for client_id in ["0" * 40, "not-an-id", "Z" * 40]:
        [reply] = await post(http, server.url, connect_message(client_id))
        assert reply["successful"] is False
        assert reply["error"] == "402::session_unknown"
        assert reply["advice"] == {"reconnect": "handshake", "interval": 0}
        assert reply["id"] == "c"


async def test_session_needs_its_own_cookie(server: Server, http: httpx.AsyncClient) -> None:
    client_id = await handshake(http, server.url)
    async with httpx.AsyncClient() as stranger:
        [reply] = await post(stranger, server.url, connect_message(client_id, timeout=0))
        assert reply["error"] == "402::session_unknown"
        stranger.cookies.set("BAYEUX_BROWSER", "f" * 40)
        [reply] = await post(stranger, server.url, connect_message(client_id, timeout=0))
        assert reply["error"] == "402::session_unknown"
    # The rightful owner is unaffected.
    [reply] = await post(http, server.url, connect_message(client_id, timeout=0))
    assert reply["successful"] is True


async def test_one_browser_may_hold_several_sessions(
    server: Server, http: httpx.AsyncClient
) -> None:
    first = await handshake(http, server.url)
    response = await http.post(server.url, json=[{"channel": "/meta/handshake"}])
    assert "set-cookie" not in response.headers  # the cookie it has is kept
    second = response.json()[0]["clientId"]
    assert first != second
    [reply] = await post(http, server.url, connect_message(second, timeout=0))
    assert reply["successful"] is True


async def test_trust_client_session_skips_the_cookie_check(
    serve: ServeFactory, http: httpx.AsyncClient
) -> None:
    server = await serve(LongPollingServiceContextBuilder().trust_client_session(True))
    client_id = await handshake(http, server.url)
    async with httpx.AsyncClient() as cookieless:
        [reply] = await post(cookieless, server.url, connect_message(client_id, timeout=0))
    assert reply["successful"] is True


async def test_subscribe_unsubscribe_replies_and_errors(
    server: Server, http: httpx.AsyncClient
) -> None:
    client_id = await handshake(http, server.url)
    replies = await post(
        http,
        server.url,
        {
            "channel": "/meta/subscribe",
            "clientId": client_id,
            "subscription": ["/a", "/b/**"],
            "id": "1",
        },
        {"channel": "/meta/subscribe", "clientId": client_id, "id": "2"},
        {"channel": "/meta/subscribe", "clientId": client_id, "subscription": "/a/*/b", "id": "3"},
        {
            "channel": "/meta/subscribe",
            "clientId": client_id,
            "subscription": "/meta/connect",
            "id": "4",
        },
        {
            "channel": "/meta/subscribe",
            "clientId": client_id,
            "subscription": "/service/x",
            "id": "5",
        },
        {"channel": "/meta/unsubscribe", "clientId": client_id, "subscription": "/a", "id": "6"},
    )
    assert replies[0]["successful"] is True and replies[0]["subscription"] == ["/a", "/b/**"]
    assert replies[1]["error"] == "403::subscription_missing"
    assert replies[2]["error"] == "403::subscription_invalid"
    assert replies[3]["error"] == "403:denied_by_security_policy:subscribe_denied"
    assert replies[4]["successful"] is True
    assert replies[5]["successful"] is True and replies[5]["channel"] == "/meta/unsubscribe"
    info = server.context.session_info(client_id)
    assert info is not None and info["subscriptions"] == ["/b/**"]


async def test_publish_replies_and_refusals(server: Server, http: httpx.AsyncClient) -> None:
    client_id = await handshake(http, server.url)
    replies = await post(
        http,
        server.url,
        {"channel": "/chat", "clientId": client_id, "data": {"t": 1}, "id": "1"},
        {"channel": "/service/echo", "clientId": client_id, "data": 1, "id": "2"},
        {"channel": "/chat/*", "clientId": client_id, "data": 1, "id": "3"},
        {"channel": "/meta/bogus", "clientId": client_id, "data": 1, "id": "4"},
        {"channel": "/chat", "clientId": client_id, "id": "5"},
        {"channel": "/chat", "data": 1, "id": "6"},
        {"channel": "/chat", "clientId": "0" * 40, "data": 1, "id": "7"},
    )
    assert [r["successful"] for r in replies] == [True, True, False, False, False, False, False]
    assert replies[2]["error"] == "405::channel_invalid"
    assert replies[3]["error"] == "400::channel_unknown"
    assert replies[4]["error"] == "400::data_missing"
    assert replies[5]["error"] == "402::client_id_missing"
    assert replies[6]["error"] == "402::session_unknown"
    assert all("data" not in r for r in replies)


async def test_service_channel_publishes_are_never_broadcast(
    server: Server, http: httpx.AsyncClient
) -> None:
    listener = await handshake(http, server.url)
    await subscribe(http, server.url, listener, "/**", "/service/x")
    await post(http, server.url, {"channel": "/service/x", "clientId": listener, "data": 1})
    await post(http, server.url, {"channel": "/marker", "clientId": listener, "data": 2})
    reply = await post(http, server.url, connect_message(listener, timeout=0))
    assert [m["channel"] for m in reply] == ["/marker", "/meta/connect"]


async def test_full_queue_drops_oldest_and_counts(
    serve: ServeFactory, http: httpx.AsyncClient
) -> None:
    server = await serve(LongPollingServiceContextBuilder().client_channel_capacity(3).timeout(2))
    client_id = await handshake(http, server.url)
    await subscribe(http, server.url, client_id, "/q")
    for i in range(5):
        await server.context.send("/q", i)
    info = server.context.session_info(client_id)
    assert info is not None and info["queued"] == 3 and info["dropped"] == 2
    assert server.context.stats()["dropped"] == 2
    reply = await post(http, server.url, connect_message(client_id))
    assert [m["data"] for m in reply[:-1]] == [2, 3, 4]


async def test_expired_session_is_removed(serve: ServeFactory, http: httpx.AsyncClient) -> None:
    server = await serve(LongPollingServiceContextBuilder().max_interval(0.3))
    events = server.context.rx()
    [hs] = await post(http, server.url, {"channel": "/meta/handshake"})
    added = await asyncio.wait_for(events.recv(), 2)
    removed = await asyncio.wait_for(events.recv(), 3)
    from starlette_cometd import RemovalReason, SessionAdded, SessionRemoved

    assert isinstance(added, SessionAdded) and str(added.client_id) == hs["clientId"]
    assert isinstance(removed, SessionRemoved)
    assert str(removed.client_id) == hs["clientId"]
    assert removed.reason is RemovalReason.EXPIRED
    [reply] = await post(http, server.url, connect_message(hs["clientId"]))
    assert reply["error"] == "402::session_unknown"
