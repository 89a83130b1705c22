"""End-to-end tests with the official CometD JavaScript client (9.x) over HTTP long-polling.

Each test drives one or more real clients in Node.js (see tests/drivers.py) against a real
uvicorn server. Waits are bounded and ordered by markers or server events, never by sleeps:
a session's queue is FIFO, so once a marker sent after some message has arrived, that message
has arrived too, or never will.
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
from starlette.requests import Request

from conftest import ServeFactory, Server
from drivers import JsClient, require_node
from starlette_cometd import (
    ClientId,
    CometdEventReceiver,
    Event,
    LongPollingServiceContextBuilder,
    RemovalReason,
    SessionAdded,
    SessionRemoved,
    Subscribe,
    Unsubscribe,
)

# appendMessageTypeToURL changes the URL of every meta request (/cometd/handshake, ...).
APPEND = pytest.mark.parametrize("append", [True, False], ids=["append", "no-append"])

# How a client connects: long-polling with and without appendMessageTypeToURL, and WebSocket
# (the client's default preference, with long-polling as its fallback).
MODES: dict[str, dict[str, Any]] = {
    "long-polling-append": {"append": True, "transports": ["long-polling"]},
    "long-polling": {"append": False, "transports": ["long-polling"]},
    "websocket": {"append": True, "transports": ["websocket", "long-polling"]},
}
MODE = pytest.mark.parametrize("mode", list(MODES))

CLIENT_ID = re.compile(r"[0-9a-f]{40}")

ClientFactory = Callable[..., Awaitable[JsClient]]
E = TypeVar("E", SessionAdded, SessionRemoved, Subscribe, Unsubscribe)


@pytest.fixture
async def clients(serve: ServeFactory) -> AsyncIterator[ClientFactory]:
    """``await clients(url, append=..., options=...)`` starts a configured JS client. Depends on
    ``serve`` so that clients are closed (and disconnect) before the servers stop."""
    started: list[JsClient] = []

    async def start(
        url: str,
        append: bool = True,
        options: dict[str, Any] | None = None,
        transports: list[str] | None = None,
    ) -> JsClient:
        client = JsClient()
        started.append(client)
        await client.start(url, append, options=options, transports=transports)
        return client

    yield start
    for client in started:
        await client.close()


async def handshake(client: JsClient) -> str:
    """Handshakes and returns the client id."""
    await client.send({"cmd": "handshake"})
    reply = await client.expect("handshake")
    assert reply["successful"], reply
    client_id: str = reply["clientId"]
    # Consume the listener's copy too, so that a later expect() finds only re-handshakes.
    await client.expect("meta", listener="/meta/handshake", clientId=client_id)
    return client_id


async def subscribe(client: JsClient, channel: str) -> None:
    await client.send({"cmd": "subscribe", "channel": channel})
    reply = await client.expect("subscribed", channel=channel)
    assert reply["successful"], reply


async def unsubscribe(client: JsClient, channel: str) -> None:
    await client.send({"cmd": "unsubscribe", "channel": channel})
    reply = await client.expect("unsubscribed", channel=channel)
    assert reply["successful"], reply


async def publish(client: JsClient, channel: str, data: Any) -> None:
    await client.send({"cmd": "publish", "channel": channel, "data": data})
    reply = await client.expect("published", channel=channel)
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


def received(client: JsClient, channel: str) -> list[dict[str, Any]]:
    """Every message event the client has read so far on ``channel``."""
    return [e for e in client.events if e["event"] == "message" and e["channel"] == channel]


async def until(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    """Polls a server-side condition that has no event (e.g. a connect being held)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting until {what}")
        await asyncio.sleep(0.02)


def request_path(request: Request) -> str:
    """Additional data for server events: the path the client POSTed to."""
    return request.url.path


@APPEND
async def test_handshake(serve: ServeFactory, clients: ClientFactory, append: bool) -> None:
    require_node()
    server = await serve(LongPollingServiceContextBuilder().timeout(2), data=request_path)
    rx = server.context.rx()
    client = await clients(server.url, append)

    client_id = await handshake(client)

    assert CLIENT_ID.fullmatch(client_id), client_id
    added = await next_event(rx, SessionAdded)
    assert added.client_id == ClientId(client_id)
    assert str(added.client_id) == client_id
    # The parameter really changes the URL: the message type is appended, or not.
    assert added.data == ("/cometd/handshake" if append else "/cometd")
    # The client follows up with /meta/connect; the first one is answered at once.
    connect = await client.expect("meta", listener="/meta/connect")
    assert connect["successful"], connect
    assert connect["clientId"] == client_id
    assert server.context.stats()["sessions"] == 1

    await subscribe(client, "/h")
    subscribed = await next_event(rx, Subscribe)
    assert subscribed.client_id == added.client_id
    assert subscribed.channels == ("/h",)
    # CometD JS 9 appends a type only to handshake, connect and disconnect; others get "/".
    assert subscribed.data == ("/cometd/" if append else "/cometd")


@MODE
async def test_publish_subscribe(server: Server, clients: ClientFactory, mode: str) -> None:
    require_node()
    a = await clients(server.url, **MODES[mode])
    b = await clients(server.url, **MODES[mode])
    await handshake(a)
    await handshake(b)
    await subscribe(a, "/chat/room")

    # One request per publish: the client sends them one after another (one connection is kept
    # for /meta/connect), so the server sees them in order.
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


@MODE
async def test_wildcard_subscriptions(server: Server, clients: ClientFactory, mode: str) -> None:
    require_node()
    a = await clients(server.url, **MODES[mode])
    b = await clients(server.url, **MODES[mode])
    a_id = await handshake(a)
    await handshake(b)
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
    # /w/a: one delivery per message (B subscribed to nothing).
    assert server.context.stats()["delivered"] - before == 3
    info = server.context.session_info(a_id)
    assert info is not None
    assert info["dropped"] == 0

    # The JS client itself fans one received message out to every matching local listener:
    # /w/a reaches the /w/a, /w/* and /w/** listeners once each. A second delivery by the
    # server would show up here as a count of 2.
    on_wa = Counter(m["subscription"] for m in received(a, "/w/a"))
    assert on_wa == {"/w/a": 1, "/w/*": 1, "/w/**": 1}
    assert all(m["data"] == {"n": 1} for m in received(a, "/w/a"))
    # /w/a/b is two segments below /w: only /w/** matches it.
    on_wab = Counter(m["subscription"] for m in received(a, "/w/a/b"))
    assert on_wab == {"/w/**": 1}
    assert received(a, "/w/a/b")[0]["data"] == {"n": 2}


@MODE
async def test_unsubscribe(server: Server, clients: ClientFactory, mode: str) -> None:
    require_node()
    rx = server.context.rx()
    a = await clients(server.url, **MODES[mode])
    b = await clients(server.url, **MODES[mode])
    a_id = await handshake(a)
    await handshake(b)
    await subscribe(a, "/u/gone")
    await subscribe(a, "/u/kept")

    await publish(b, "/u/gone", {"n": 1})
    first = await a.expect("message", channel="/u/gone")
    assert first["data"] == {"n": 1}

    await unsubscribe(a, "/u/gone")
    event = await next_event(rx, Unsubscribe)
    assert event.client_id == ClientId(a_id)
    assert event.channels == ("/u/gone",)
    info = server.context.session_info(a_id)
    assert info is not None
    assert "/u/gone" not in info["subscriptions"]

    # Published after the unsubscribe; the marker on a kept channel comes after it, so by the
    # time the marker arrives the second /u/gone message would have arrived too.
    await publish(b, "/u/gone", {"n": 2})
    await publish(b, "/u/kept", {"marker": True})
    marker = await a.expect("message", channel="/u/kept")
    assert marker["data"] == {"marker": True}
    assert [m["data"] for m in received(a, "/u/gone")] == [{"n": 1}]


@MODE
async def test_disconnect(server: Server, clients: ClientFactory, mode: str) -> None:
    require_node()
    rx = server.context.rx()
    client = await clients(server.url, **MODES[mode])
    client_id = await handshake(client)
    first = await client.expect("meta", listener="/meta/connect")
    assert first["successful"], first
    # Disconnect while the next /meta/connect is held, the usual state of an idle client.
    await until(lambda: server.context.stats()["held"] == 1, "the connect is held")

    await client.send({"cmd": "disconnect"})
    reply = await client.expect("disconnected")
    assert reply["successful"], reply

    removed = await next_event(rx, SessionRemoved)
    assert removed.client_id == ClientId(client_id)
    assert removed.reason is RemovalReason.DISCONNECTED
    stats = server.context.stats()
    assert stats["sessions"] == 0
    assert stats["held"] == 0
    # The held connect is answered too (not left to time out). Its reply is the last thing that
    # could make the client handshake again; the client decides at once, on receipt, and being
    # disconnected it stays so. As in CometD Java it is a success advising no reconnect, so the
    # application's /meta/unsuccessful listeners see no false failure.
    released = await client.expect("meta", listener="/meta/connect")
    assert released["successful"], released
    assert released["advice"]["reconnect"] == "none", released
    await client.send({"cmd": "status"})
    status = await client.expect("status")
    assert status["status"] == "disconnected"
    assert server.context.stats()["sessions"] == 0


@MODE
async def test_server_send_and_send_to_client(
    server: Server, clients: ClientFactory, mode: str
) -> None:
    require_node()
    a = await clients(server.url, **MODES[mode])
    b = await clients(server.url, **MODES[mode])
    a_id = await handshake(a)
    await handshake(b)
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


@MODE
async def test_removed_session_rehandshakes(
    server: Server, clients: ClientFactory, mode: str
) -> None:
    require_node()
    rx = server.context.rx()
    client = await clients(server.url, **MODES[mode])
    old_id = await handshake(client)
    await subscribe(client, "/after")
    await until(lambda: server.context.stats()["held"] == 1, "the connect is held")

    await server.context.remove_session(old_id)

    removed = await next_event(rx, SessionRemoved)
    assert removed.client_id == ClientId(old_id)
    assert removed.reason is RemovalReason.REMOVED
    # The held connect is answered with 402 and the advice to handshake again.
    failed = await client.expect("meta", listener="/meta/connect", successful=False)
    assert failed["error"] == "402::session_unknown", failed
    assert failed["advice"]["reconnect"] == "handshake", failed
    # The client handshakes again by itself; the driver then re-subscribes.
    rehandshake = await client.expect("meta", listener="/meta/handshake", successful=True)
    new_id = rehandshake["clientId"]
    assert CLIENT_ID.fullmatch(new_id), new_id
    assert new_id != old_id
    added = await next_event(rx, SessionAdded)
    assert added.client_id == ClientId(new_id)
    resubscribed = await client.expect("resubscribed")
    assert resubscribed["successful"], resubscribed
    assert resubscribed["channels"] == ["/after"]
    assert server.context.session_info(old_id) is None
    assert server.context.stats()["sessions"] == 1

    await server.context.send("/after", {"back": True})
    message = await client.expect("message", channel="/after")
    assert message["data"] == {"back": True}


@MODE
async def test_server_burst(serve: ServeFactory, clients: ClientFactory, mode: str) -> None:
    require_node()
    count = 400
    # The queue holds the whole burst even if the client is between two connects.
    server = await serve(LongPollingServiceContextBuilder().timeout(2).client_channel_capacity(500))
    client = await clients(server.url, **MODES[mode])
    await handshake(client)
    await subscribe(client, "/burst")

    for seq in range(count):
        await server.context.send("/burst", {"seq": seq})

    got = await client.messages(count, timeout=30, channel="/burst")
    assert [m["data"]["seq"] for m in got] == list(range(count))
    # No duplicates after the burst either: a marker is the very next message.
    await server.context.send("/burst", {"marker": True})
    marker = await client.expect("message", channel="/burst")
    assert marker["data"] == {"marker": True}
    assert len(received(client, "/burst")) == count + 1
    assert server.context.stats()["dropped"] == 0


@MODE
async def test_large_payload(server: Server, clients: ClientFactory, mode: str) -> None:
    require_node()
    # 256 KiB of varied ASCII, so that a truncated or reordered chunk cannot go unnoticed.
    # (ASCII: cometd-nodejs-client decodes each HTTP chunk on its own, which corrupts a
    # multi-byte character split between chunks; the WebSocket tests with aiocometd cover that.)
    alphabet = string.ascii_letters + string.digits
    text = "".join(alphabet[(i * 7 + i // 61) % len(alphabet)] for i in range(256 * 1024))
    # The client refuses to send a message over maxSendBayeuxMessageSize (8192 by default).
    publisher = await clients(
        server.url, **MODES[mode], options={"maxSendBayeuxMessageSize": 512 * 1024}
    )
    subscriber = await clients(server.url, **MODES[mode])
    await handshake(publisher)
    await handshake(subscriber)
    await subscribe(subscriber, "/big")

    await publish(publisher, "/big", {"text": text})

    message = await subscriber.expect("message", channel="/big", timeout=20)
    assert len(message["data"]["text"]) == len(text)
    assert message["data"]["text"] == text


async def test_websocket_is_used_when_offered(server: Server, clients: ClientFactory) -> None:
    require_node()
    client = await clients(server.url, **MODES["websocket"])
    await handshake(client)
    await client.expect("meta", listener="/meta/connect", successful=True)
    await client.send({"cmd": "status"})
    status = await client.expect("status")
    assert status["transportType"] == "websocket", status


async def test_falls_back_to_long_polling_when_websocket_is_off(
    serve: ServeFactory, clients: ClientFactory
) -> None:
    require_node()
    builder = LongPollingServiceContextBuilder().timeout(2)
    server = await serve(builder.connection_types("long-polling", "callback-polling"))
    a = await clients(server.url, **MODES["websocket"])
    b = await clients(server.url, **MODES["websocket"])
    for client in (a, b):
        # The WebSocket handshake fails (the upgrade is refused); the retry uses long-polling.
        await client.send({"cmd": "handshake"})
        await client.expect("meta", listener="/meta/handshake", successful=True)
    await a.expect("meta", listener="/meta/connect", successful=True)
    await a.send({"cmd": "status"})
    status = await a.expect("status")
    assert status["transportType"] == "long-polling", status
    await subscribe(a, "/fallback")
    for i in range(5):
        await publish(b, "/fallback", {"seq": i})
    got = await a.messages(5, channel="/fallback")
    assert [m["data"]["seq"] for m in got] == list(range(5))
