"""End-to-end tests with Faye's Node.js client (npm ``faye`` 1.4), over long-polling and websocket.

Each test drives real Faye clients (see tests/drivers.py and tests/js/faye_driver.mjs) against a
real uvicorn server. Waits are bounded and ordered by markers or server events, never by sleeps:
a session's queue is FIFO, so once a marker sent after some message has arrived, that message
has arrived too, or never will.

The websocket parameter lets Faye upgrade after its handshake (Faye always handshakes over
HTTP). Where the server does not offer ``websocket`` in its handshake reply the parameter is
skipped, or fails when STARLETTE_COMETD_REQUIRE_CLIENTS=1 (CI).
"""

from __future__ import annotations

import asyncio
import re
import string
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest

from conftest import ServeFactory, Server
from drivers import FayeClient, require
from starlette_cometd import (
    ClientId,
    CometdEventReceiver,
    Event,
    RemovalReason,
    SessionAdded,
    SessionRemoved,
    Unsubscribe,
)

TRANSPORTS = pytest.mark.parametrize("transport", ["long-polling", "websocket"])

CLIENT_ID = re.compile(r"[0-9a-f]{40}")

ClientFactory = Callable[[str], Awaitable[FayeClient]]
E = TypeVar("E", SessionAdded, SessionRemoved, Unsubscribe)


def transports_for(transport: str) -> list[str]:
    """Faye's allowed connection types: websocket also needs long-polling for the handshake."""
    return ["websocket", "long-polling"] if transport == "websocket" else ["long-polling"]


@pytest.fixture
async def clients(serve: ServeFactory, transport: str) -> AsyncIterator[ClientFactory]:
    """``await clients(url)`` starts a configured Faye client on the test's ``transport``.
    Depends on ``serve`` so that clients are closed (and disconnect) before the servers stop."""
    started: list[FayeClient] = []

    async def start(url: str) -> FayeClient:
        client = FayeClient()
        started.append(client)
        await client.start(url, transports=transports_for(transport), options={"retry": 1})
        return client

    yield start
    for client in started:
        await client.close()


async def status(client: FayeClient) -> dict[str, Any]:
    await client.send({"cmd": "status"})
    return await client.expect("status")


async def wait_for_transport(client: FayeClient, transport: str, timeout: float = 10) -> None:
    """Faye opens its websocket after the handshake and switches to it once it is up; polls the
    driver's status until the client sends through ``transport``."""
    deadline = time.monotonic() + timeout
    while (current := (await status(client))["connectionType"]) != transport:
        if time.monotonic() > deadline:
            raise AssertionError(f"the client still uses {current!r} after {timeout}s")
        await asyncio.sleep(0.02)


async def handshake(client: FayeClient, transport: str) -> str:
    """Handshakes, checks the server offers ``transport`` and that the client uses it; returns
    the client id."""
    await client.send({"cmd": "handshake"})
    reply = await client.expect("handshake")
    assert reply["successful"], reply
    client_id: str = reply["clientId"]
    assert CLIENT_ID.fullmatch(client_id), client_id
    # Consume the extension's copy too, so that a later expect() finds only re-handshakes.
    await client.expect("meta", listener="/meta/handshake", clientId=client_id)
    offered = reply["reply"].get("supportedConnectionTypes", [])
    if transport not in offered:
        require(f"Faye client over {transport}", f"the server offers only {offered}")
    await wait_for_transport(client, transport)
    return client_id


async def subscribe(client: FayeClient, channel: str) -> None:
    await client.send({"cmd": "subscribe", "channel": channel})
    reply = await client.expect("subscribed", channel=channel)
    assert reply["successful"], reply


async def publish(client: FayeClient, channel: str, data: Any, timeout: float = 10) -> None:
    await client.send({"cmd": "publish", "channel": channel, "data": data})
    reply = await client.expect("published", channel=channel, timeout=timeout)
    assert reply["successful"], reply


async def next_event(rx: CometdEventReceiver, kind: type[E], timeout: float = 10) -> E:
    """The next server event of type ``kind``, skipping the others."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no {kind.__name__} event within {timeout}s")
        try:
            event: Event | None = await asyncio.wait_for(rx.recv(), remaining)
        except TimeoutError:
            raise AssertionError(f"no {kind.__name__} event within {timeout}s") from None
        assert event is not None, "the context closed"
        if isinstance(event, kind):
            return event


def received(client: FayeClient, channel: str) -> list[dict[str, Any]]:
    """Every message event the client has read so far on ``channel``."""
    return [e for e in client.events if e["event"] == "message" and e["channel"] == channel]


@TRANSPORTS
async def test_handshake(server: Server, clients: ClientFactory, transport: str) -> None:
    rx = server.context.rx()
    client = await clients(server.url)

    client_id = await handshake(client, transport)

    added = await next_event(rx, SessionAdded)
    assert added.client_id == ClientId(client_id)
    info = server.context.session_info(client_id)
    assert info is not None
    # Faye's first /meta/connect follows the handshake by itself.
    connect = await client.expect("meta", listener="/meta/connect")
    assert connect["successful"], connect
    assert connect["clientId"] == client_id
    assert (await status(client))["status"] == "connected"


@TRANSPORTS
async def test_publish_subscribe(server: Server, clients: ClientFactory, transport: str) -> None:
    a = await clients(server.url)
    b = await clients(server.url)
    await handshake(a, transport)
    await handshake(b, transport)
    await subscribe(a, "/chat/room")

    # The driver sends each publish once the previous one is acknowledged, so the server sees
    # them in order even though Faye would use a new HTTP request (and socket) for each.
    await b.send({"cmd": "publish_many", "channel": "/chat/room", "count": 20, "batch": False})
    done = await b.expect("published_many", timeout=20)
    assert done["successful"], done

    got = await a.messages(20, timeout=20, channel="/chat/room")
    assert [m["data"]["seq"] for m in got] == list(range(20))
    assert all(m["subscription"] == "/chat/room" for m in got)

    # Exactly once: a marker sent after the 20 is the very next message.
    await publish(b, "/chat/room", {"marker": True})
    marker = await a.expect("message", channel="/chat/room")
    assert marker["data"] == {"marker": True}
    assert len(received(a, "/chat/room")) == 21


@TRANSPORTS
async def test_wildcard_subscriptions(
    server: Server, clients: ClientFactory, transport: str
) -> None:
    a = await clients(server.url)
    b = await clients(server.url)
    a_id = await handshake(a, transport)
    await handshake(b, transport)
    for channel in ("/w/*", "/w/**", "/w/a", "/marker"):
        await subscribe(a, channel)
    before = server.context.stats()["delivered"]

    await publish(b, "/w/a", {"n": 1})
    await publish(b, "/w/a/b", {"n": 2})
    # B's publishes reach the server in order and A's queue is FIFO, so once the marker is
    # in, every earlier delivery to A has been read too.
    await publish(b, "/marker", {"n": 3})
    await a.expect("message", channel="/marker")

    # The server queued each message for A once, although three of A's subscriptions match
    # /w/a: one delivery per message and session (B subscribed to nothing).
    assert server.context.stats()["delivered"] - before == 3
    info = server.context.session_info(a_id)
    assert info is not None
    assert info["dropped"] == 0

    # Faye itself hands one received message to every matching local subscription: /w/a
    # reaches /w/a, /w/* and /w/** once each. A second delivery would count 2 here.
    on_wa = Counter(m["subscription"] for m in received(a, "/w/a"))
    assert on_wa == {"/w/a": 1, "/w/*": 1, "/w/**": 1}
    assert all(m["data"] == {"n": 1} for m in received(a, "/w/a"))
    # /w/a/b is two segments below /w: only /w/** matches it.
    on_wab = Counter(m["subscription"] for m in received(a, "/w/a/b"))
    assert on_wab == {"/w/**": 1}
    assert received(a, "/w/a/b")[0]["data"] == {"n": 2}


@TRANSPORTS
async def test_unsubscribe(server: Server, clients: ClientFactory, transport: str) -> None:
    rx = server.context.rx()
    a = await clients(server.url)
    b = await clients(server.url)
    a_id = await handshake(a, transport)
    await handshake(b, transport)
    await subscribe(a, "/u/gone")
    await subscribe(a, "/u/kept")

    await publish(b, "/u/gone", {"n": 1})
    first = await a.expect("message", channel="/u/gone")
    assert first["data"] == {"n": 1}

    await a.send({"cmd": "unsubscribe", "channel": "/u/gone"})
    reply = await a.expect("unsubscribed", channel="/u/gone")
    assert reply["successful"], reply
    event = await next_event(rx, Unsubscribe)
    assert event.client_id == ClientId(a_id)
    assert event.channels == ("/u/gone",)

    # Published after the unsubscribe; the marker on a kept channel comes after it.
    await publish(b, "/u/gone", {"n": 2})
    await publish(b, "/u/kept", {"marker": True})
    marker = await a.expect("message", channel="/u/kept")
    assert marker["data"] == {"marker": True}
    assert [m["data"] for m in received(a, "/u/gone")] == [{"n": 1}]


@TRANSPORTS
async def test_disconnect(server: Server, clients: ClientFactory, transport: str) -> None:
    rx = server.context.rx()
    client = await clients(server.url)
    client_id = await handshake(client, transport)
    await subscribe(client, "/d")

    await client.send({"cmd": "disconnect"})
    reply = await client.expect("disconnected")
    assert reply["successful"], reply

    removed = await next_event(rx, SessionRemoved)
    assert removed.client_id == ClientId(client_id)
    assert removed.reason is RemovalReason.DISCONNECTED
    assert server.context.session_info(client_id) is None
    assert (await status(client))["status"] == "disconnected"


@TRANSPORTS
async def test_server_send_and_send_to_client(
    server: Server, clients: ClientFactory, transport: str
) -> None:
    a = await clients(server.url)
    b = await clients(server.url)
    a_id = await handshake(a, transport)
    await handshake(b, transport)
    for client in (a, b):
        await subscribe(client, "/news")
        await subscribe(client, "/private")

    await server.context.send("/news", {"headline": "hello"})
    for client in (a, b):
        news = await client.expect("message", channel="/news")
        assert news["data"] == {"headline": "hello"}

    await server.context.send_to_client("/private", a_id, {"secret": 42})
    # A broadcast marker on the same channel: B's queue is FIFO, so if the private message
    # had been queued for B it would arrive before the marker.
    await server.context.send("/private", {"marker": True})
    got_a = await a.messages(2, channel="/private")
    assert [m["data"] for m in got_a] == [{"secret": 42}, {"marker": True}]
    got_b = await b.expect("message", channel="/private")
    assert got_b["data"] == {"marker": True}
    assert [m["data"] for m in received(b, "/private")] == [{"marker": True}]


@TRANSPORTS
async def test_removed_session_rehandshakes(
    server: Server, clients: ClientFactory, transport: str
) -> None:
    rx = server.context.rx()
    client = await clients(server.url)
    old_id = await handshake(client, transport)
    await subscribe(client, "/after")
    await subscribe(client, "/after/*")
    added = await next_event(rx, SessionAdded)
    assert added.client_id == ClientId(old_id)

    await server.context.remove_session(old_id)

    removed = await next_event(rx, SessionRemoved)
    assert removed.client_id == ClientId(old_id)
    assert removed.reason is RemovalReason.REMOVED
    # The client's (held or next) connect is answered with 402 and the advice to handshake.
    failed = await client.expect("meta", listener="/meta/connect", successful=False)
    assert failed["error"] == "402::session_unknown", failed
    assert failed["advice"]["reconnect"] == "handshake", failed
    # Faye handshakes again and re-subscribes its channels by itself.
    rehandshake = await client.expect("meta", listener="/meta/handshake", successful=True)
    new_id = rehandshake["clientId"]
    assert CLIENT_ID.fullmatch(new_id), new_id
    assert new_id != old_id
    added = await next_event(rx, SessionAdded)
    assert added.client_id == ClientId(new_id)
    resubscribed = await client.expect("resubscribed")
    assert resubscribed["successful"], resubscribed
    assert sorted(resubscribed["channels"]) == ["/after", "/after/*"]
    assert server.context.session_info(old_id) is None
    info = server.context.session_info(new_id)
    assert info is not None
    assert sorted(info["subscriptions"]) == ["/after", "/after/*"]
    await wait_for_transport(client, transport)

    await server.context.send("/after", {"back": True})
    message = await client.expect("message", channel="/after")
    assert message["data"] == {"back": True}
    await server.context.send("/after/x", {"wild": True})
    message = await client.expect("message", channel="/after/x")
    assert message["data"] == {"wild": True}
    assert message["subscription"] == "/after/*"


@TRANSPORTS
async def test_large_payload(server: Server, clients: ClientFactory, transport: str) -> None:
    # 256 KiB of varied ASCII, so that a truncated or reordered chunk cannot go unnoticed.
    alphabet = string.ascii_letters + string.digits
    text = "".join(alphabet[(i * 7 + i // 61) % len(alphabet)] for i in range(256 * 1024))
    publisher = await clients(server.url)
    subscriber = await clients(server.url)
    await handshake(publisher, transport)
    await handshake(subscriber, transport)
    await subscribe(subscriber, "/big")

    await publish(publisher, "/big", {"text": text}, timeout=20)

    message = await subscriber.expect("message", channel="/big", timeout=20)
    assert len(message["data"]["text"]) == len(text)
    assert message["data"]["text"] == text
