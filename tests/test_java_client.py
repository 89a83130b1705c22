"""End-to-end tests with the CometD Java client (8.0, on Jetty 12) over long-polling and
WebSocket.

Each test drives one or more real ``BayeuxClient``s in a JVM (tests/java, see
tests/drivers.py) against a real uvicorn server. Waits are bounded and ordered by markers or
server events, never by sleeps: a session's queue is FIFO, so once a marker sent after some
message has arrived, that message has arrived too, or never will.

The jar is built by ``mvn -q -f tests/java package``; without it (or without java) the tests
skip, or fail when STARLETTE_COMETD_REQUIRE_CLIENTS=1. The WebSocket variants also check at
run time that the server's handshake offers ``websocket``, under the same rule.
"""

from __future__ import annotations

import asyncio
import json
import re
import string
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest
from starlette.requests import HTTPConnection

from conftest import ServeFactory, Server
from drivers import JavaClient, require
from starlette_cometd import (
    ClientId,
    CometdEventReceiver,
    Event,
    LongPollingServiceContextBuilder,
    RemovalReason,
    SessionAdded,
    SessionRemoved,
    Subscribe,
)

TRANSPORTS = pytest.mark.parametrize("transport", ["long-polling", "websocket"])

CLIENT_ID = re.compile(r"[0-9a-f]{40}")

# A JVM and Jetty start in about a second; leave room for a loaded machine.
START_TIMEOUT = 30

ClientFactory = Callable[..., Awaitable[JavaClient]]
E = TypeVar("E", SessionAdded, SessionRemoved, Subscribe)


async def offered_connection_types(server: Server) -> list[str]:
    """The connection types the server's handshake reply offers. The probe's session is
    disconnected at once, so it does not linger in the server's counters."""
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(
            server.url,
            json=[
                {
                    "channel": "/meta/handshake",
                    "version": "1.0",
                    "supportedConnectionTypes": ["websocket", "long-polling"],
                }
            ],
        )
        [reply] = response.json()
        assert reply["successful"], reply
        types: list[str] = reply["supportedConnectionTypes"]
        response = await http.post(
            server.url, json=[{"channel": "/meta/disconnect", "clientId": reply["clientId"]}]
        )
        [bye] = response.json()
        assert bye["successful"], bye
    return types


@pytest.fixture
async def clients(serve: ServeFactory) -> AsyncIterator[ClientFactory]:
    """``await clients(server, transport, options=...)`` starts a configured Java client that
    uses only ``transport``. Depends on ``serve`` so that clients are closed (and disconnect)
    before the servers stop."""
    started: list[JavaClient] = []
    checked: set[int] = set()

    async def start(
        server: Server, transport: str, options: dict[str, Any] | None = None
    ) -> JavaClient:
        client = JavaClient()
        require(client.name, client.missing())
        if transport != "long-polling" and server.port not in checked:
            types = await offered_connection_types(server)
            if transport not in types:
                require(
                    f"{client.name} over {transport}",
                    f"the server's handshake does not offer {transport!r} (it offers {types})",
                )
            checked.add(server.port)
        started.append(client)
        await client.start(
            server.url, transports=[transport], options=options, timeout=START_TIMEOUT
        )
        return client

    yield start
    for client in started:
        await client.close()


async def handshake(client: JavaClient) -> str:
    """Handshakes and returns the client id."""
    await client.send({"cmd": "handshake"})
    reply = await client.expect("handshake")
    assert reply["successful"], reply
    client_id: str = reply["clientId"]
    # Consume the listener's copy too, so that a later expect() finds only re-handshakes.
    await client.expect("meta", listener="/meta/handshake", clientId=client_id)
    return client_id


async def subscribe(client: JavaClient, channel: str) -> None:
    await client.send({"cmd": "subscribe", "channel": channel})
    reply = await client.expect("subscribed", channel=channel)
    assert reply["successful"], reply


async def publish(client: JavaClient, channel: str, data: Any, timeout: float = 10) -> None:
    await client.send({"cmd": "publish", "channel": channel, "data": data})
    reply = await client.expect("published", channel=channel, timeout=timeout)
    assert reply["successful"], reply


async def status(client: JavaClient) -> dict[str, Any]:
    await client.send({"cmd": "status"})
    return await client.expect("status")


async def settled_status(client: JavaClient, wanted: str, timeout: float = 10) -> dict[str, Any]:
    """The client's status once it is ``wanted``. The Java client calls its listeners before it
    moves to the state the reply leads to (CONNECTING to CONNECTED, for one), so a status asked
    for right after a listener event may still show the state before."""
    deadline = time.monotonic() + timeout
    while True:
        state = await status(client)
        if state["status"] == wanted:
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"status still {state!r} after {timeout}s, not {wanted!r}")
        await asyncio.sleep(0.02)


async def next_event(
    rx: CometdEventReceiver, kind: type[E], client_id: str | None = None, timeout: float = 10
) -> E:
    """The next server event of type ``kind`` (for ``client_id``, if given), skipping others."""
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
        if isinstance(event, kind) and (
            client_id is None or event.client_id == ClientId(client_id)
        ):
            return event


def received(client: JavaClient, channel: str) -> list[dict[str, Any]]:
    """Every message event the client has read so far on ``channel``."""
    return [e for e in client.events if e["event"] == "message" and e["channel"] == channel]


async def until(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    """Polls a server-side condition that has no event (e.g. a connect being held)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting until {what}")
        await asyncio.sleep(0.02)


def connection_path(connection: HTTPConnection) -> str:
    """Additional data for server events: the path of the request or socket."""
    return connection.url.path


@TRANSPORTS
async def test_handshake(serve: ServeFactory, clients: ClientFactory, transport: str) -> None:
    server = await serve(LongPollingServiceContextBuilder().timeout(2), data=connection_path)
    client = await clients(server, transport)
    rx = server.context.rx()

    client_id = await handshake(client)

    assert CLIENT_ID.fullmatch(client_id), client_id
    added = await next_event(rx, SessionAdded, client_id)
    assert str(added.client_id) == client_id
    # Over HTTP the Java client appends the type of a lone meta message to the URL (it has no
    # option to stop that); a socket is opened on the endpoint itself.
    assert added.data == ("/cometd/handshake" if transport == "long-polling" else "/cometd")
    # The client follows up with /meta/connect; the first one is answered at once.
    connect = await client.expect("meta", listener="/meta/connect")
    assert connect["successful"], connect
    assert connect["clientId"] == client_id
    assert server.context.stats()["sessions"] == 1
    state = await settled_status(client, "connected")
    assert state["transport"] == transport, state

    await subscribe(client, "/h")
    subscribed = await next_event(rx, Subscribe, client_id)
    assert subscribed.channels == ("/h",)


@TRANSPORTS
async def test_publish_subscribe(server: Server, clients: ClientFactory, transport: str) -> None:
    a = await clients(server, transport)
    b = await clients(server, transport)
    await handshake(a)
    await handshake(b)
    await subscribe(a, "/chat/room")

    # 20 messages in one batch: one request (or frame), in order.
    await b.send({"cmd": "publish_many", "channel": "/chat/room", "count": 20})
    done = await b.expect("published_many", timeout=20)
    assert done["successful"], done
    got = await a.messages(20, timeout=20, channel="/chat/room")
    assert [m["data"]["seq"] for m in got] == list(range(20))
    assert all(m["subscription"] == "/chat/room" for m in got)

    # 20 more, each published once the previous one is acknowledged. (Unacknowledged
    # publishes are not ordered over long-polling: the Java client sends each in its own
    # request, and Jetty's HttpClient runs them on parallel connections.)
    for seq in range(20, 40):
        await publish(b, "/chat/room", {"seq": seq})
    got = await a.messages(20, timeout=20, channel="/chat/room")
    assert [m["data"]["seq"] for m in got] == list(range(20, 40))

    # Exactly once: a marker sent after the 40 is the very next message.
    await publish(b, "/chat/room", {"marker": True})
    marker = await a.expect("message", channel="/chat/room")
    assert marker["data"] == {"marker": True}
    assert len(received(a, "/chat/room")) == 41


@TRANSPORTS
async def test_wildcard_subscriptions(
    server: Server, clients: ClientFactory, transport: str
) -> None:
    a = await clients(server, transport)
    b = await clients(server, transport)
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

    # The Java client itself hands one received message to every matching local subscriber:
    # /w/a reaches the /w/a, /w/* and /w/** subscribers once each. A second delivery by the
    # server would show up here as a count of 2.
    on_wa = Counter(m["subscription"] for m in received(a, "/w/a"))
    assert on_wa == {"/w/a": 1, "/w/*": 1, "/w/**": 1}
    assert all(m["data"] == {"n": 1} for m in received(a, "/w/a"))
    # /w/a/b is two segments below /w: only /w/** matches it.
    on_wab = Counter(m["subscription"] for m in received(a, "/w/a/b"))
    assert on_wab == {"/w/**": 1}
    assert received(a, "/w/a/b")[0]["data"] == {"n": 2}


@TRANSPORTS
async def test_server_send_and_send_to_client(
    server: Server, clients: ClientFactory, transport: str
) -> None:
    a = await clients(server, transport)
    b = await clients(server, transport)
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


@TRANSPORTS
async def test_removed_session_rehandshakes(
    server: Server, clients: ClientFactory, transport: str
) -> None:
    client = await clients(server, transport)
    rx = server.context.rx()
    old_id = await handshake(client)
    await subscribe(client, "/after")
    first = await client.expect("meta", listener="/meta/connect")
    assert first["successful"], first
    if transport == "long-polling":
        # Remove the session while its next connect is held, the usual state of an idle client.
        await until(lambda: server.context.stats()["held"] == 1, "the connect is held")

    await server.context.remove_session(old_id)

    removed = await next_event(rx, SessionRemoved, old_id)
    assert removed.reason is RemovalReason.REMOVED
    # The (held or next) connect is answered with 402 and the advice to handshake again.
    failed = await client.expect("meta", listener="/meta/connect", successful=False)
    assert failed["error"] == "402::session_unknown", failed
    assert failed["advice"]["reconnect"] == "handshake", failed
    # The client handshakes again by itself; the driver then re-subscribes.
    rehandshake = await client.expect("meta", listener="/meta/handshake", successful=True)
    new_id = rehandshake["clientId"]
    assert CLIENT_ID.fullmatch(new_id), new_id
    assert new_id != old_id
    await next_event(rx, SessionAdded, new_id)
    resubscribed = await client.expect("resubscribed")
    assert resubscribed["successful"], resubscribed
    assert resubscribed["channels"] == ["/after"]
    assert server.context.session_info(old_id) is None
    assert server.context.stats()["sessions"] == 1
    state = await status(client)
    assert state["transport"] == transport, state

    await server.context.send("/after", {"back": True})
    message = await client.expect("message", channel="/after")
    assert message["data"] == {"back": True}


@TRANSPORTS
async def test_disconnect(server: Server, clients: ClientFactory, transport: str) -> None:
    client = await clients(server, transport)
    rx = server.context.rx()
    client_id = await handshake(client)
    first = await client.expect("meta", listener="/meta/connect")
    assert first["successful"], first
    if transport == "long-polling":
        await until(lambda: server.context.stats()["held"] == 1, "the connect is held")

    await client.send({"cmd": "disconnect"})
    reply = await client.expect("disconnected")
    assert reply["successful"], reply

    removed = await next_event(rx, SessionRemoved, client_id)
    assert removed.reason is RemovalReason.DISCONNECTED
    stats = server.context.stats()
    assert stats["sessions"] == 0
    assert stats["held"] == 0
    state = await status(client)
    assert state["status"] == "disconnected", state
    # No failure reached the application on the way out, but one: over WebSocket the Java
    # client schedules its next /meta/connect on another thread as soon as the first one is
    # answered, and that connect can reach the socket after the /meta/disconnect sent right
    # then (seen in the client's own debug log). The server then rightly answers it as a
    # connect of an unknown session, or, when the client has already closed its own socket,
    # the client fails that connect itself with an EOFException.
    failures = [e for e in client.events if e["event"] == "meta" and not e["successful"]]
    if transport == "websocket":
        late_connect = ("402::session_unknown", "java.io.EOFException")
        failures = [
            e
            for e in failures
            if not (e["channel"] == "/meta/connect" and e["error"] in late_connect)
        ]
    assert not failures, json.dumps(failures)


@TRANSPORTS
async def test_large_payload(server: Server, clients: ClientFactory, transport: str) -> None:
    # 256 KiB of varied ASCII, so that a truncated or reordered chunk cannot go unnoticed;
    # well under the server's default max_body_size (1 MiB).
    alphabet = string.ascii_letters + string.digits
    size = 256 * 1024
    text = "".join(alphabet[(i * 7 + i // 61) % len(alphabet)] for i in range(size))
    # The Java client takes messages up to maxMessageSize: 1 MiB by default over HTTP; over
    # WebSocket the default is the WebSocket container's (64 KiB with Jetty's), so raise it.
    options = {"maxMessageSize": 1024 * 1024} if transport == "websocket" else None
    publisher = await clients(server, transport, options=options)
    subscriber = await clients(server, transport, options=options)
    await handshake(publisher)
    await handshake(subscriber)
    await subscribe(subscriber, "/big")

    await publish(publisher, "/big", {"text": text}, timeout=20)

    message = await subscriber.expect("message", channel="/big", timeout=20)
    assert len(message["data"]["text"]) == len(text)
    assert message["data"]["text"] == text
