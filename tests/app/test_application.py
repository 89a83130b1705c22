"""The application's side (issue 4) with real clients: services called with the CometD JS
client's ``remoteCall``, channel listeners changing and refusing publishes, a security policy,
the ack extension with the connection cut mid-stream (the JS and Java clients, over long-polling
and WebSocket), timesync, the ``multiple-clients`` advice for two sessions under one browser
cookie, and ``broadcast_to_publisher``.

Waits are bounded and ordered by markers or events, never by sleeps: a session's queue is FIFO,
so once a marker sent after some message has arrived, that message has arrived too, or never
will. Faults are injected on both stacks with ``serve(faults=...)`` (tests/support/faults.py).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest
from starlette.datastructures import Headers

from starlette_cometd import (
    Extension,
    LongPollingServiceContextBuilder,
    Message,
    MessageRefused,
    RemovalReason,
    SecurityPolicy,
    ServerSession,
    SessionAdded,
    SessionRemoved,
    Subscribe,
)
from support.client_steps import (
    ClientPool,
    check_transport,
    client_pool,
    handshake,
    next_event,
    publish,
    publish_reply,
    received_data,
    status,
    subscribe,
    transport_key,
    until,
)
from support.drivers import DriverClient, JavaClient, JsClient
from support.faults import LoseDeliveries
from support.servers import ServeFactory

# How the JS client connects. "websocket" alone, without the long-polling fallback, so that a
# test over WebSocket cannot silently pass over HTTP.
TRANSPORTS = pytest.mark.parametrize("transport", ["long-polling", "websocket"])

# Quick retries after an injected fault (the clients' default backoff starts at 1 s).
FAST_RETRY = {"backoffIncrement": 100, "maxBackoff": 500}

C = TypeVar("C", JsClient, JavaClient)
JsFactory = Callable[..., Awaitable[JsClient]]
JavaFactory = Callable[..., Awaitable[JavaClient]]


def starter(pool: ClientPool, kind: type[C]) -> Callable[..., Awaitable[C]]:
    """``await start(url, transport, options=..., extensions=...)``: starts a client of
    ``kind`` on ``transport`` alone."""

    async def start(
        url: str,
        transport: str = "long-polling",
        options: dict[str, Any] | None = None,
        extensions: list[str] | None = None,
    ) -> C:
        return await pool.start(
            kind(), url, transports=[transport], options=options, extensions=extensions
        )

    return start


@pytest.fixture
async def js(serve: ServeFactory) -> AsyncIterator[JsFactory]:
    """``await js(url, transport, options=..., extensions=...)`` starts a configured JS client.
    Depends on ``serve`` so that clients are closed (and disconnect) before the servers stop."""
    async with client_pool() as pool:
        yield starter(pool, JsClient)


@pytest.fixture
async def java(serve: ServeFactory) -> AsyncIterator[JavaFactory]:
    """``await java(url, transport, options=..., extensions=...)`` starts a Java client."""
    async with client_pool() as pool:
        yield starter(pool, JavaClient)


async def remote_call(client: JsClient, target: str, data: Any) -> dict[str, Any]:
    """Calls a service with the JS client's ``remoteCall`` (the JS driver only)."""
    await client.send({"cmd": "remote_call", "target": target, "data": data, "timeout": 5000})
    return await client.expect("remote_call", target=target)


def is_connect_reply(event: dict[str, Any]) -> bool:
    return event.get("listener") == "/meta/connect"


# --- 1. Services and remoteCall -------------------------------------------------------------


@TRANSPORTS
async def test_remote_call_to_services(serve: ServeFactory, js: JsFactory, transport: str) -> None:
    server = await serve(LongPollingServiceContextBuilder().timeout(2))
    context = server.context
    calls: list[tuple[str, str]] = []

    @context.service("/service/echo")
    async def echo(session: ServerSession, message: Message) -> Any:
        calls.append(("echo", str(session.client_id)))
        return {"echo": message["data"], "clientId": str(session.client_id)}

    @context.service("/service/rooms/{room}")
    async def rooms(session: ServerSession, message: Message, room: str) -> Any:
        calls.append((f"room {room}", str(session.client_id)))
        return {"room": room, "channel": message["channel"], "data": message["data"]}

    @context.service("/service/calc/*")
    async def calc(session: ServerSession, message: Message) -> Any:
        operation = message["channel"].rsplit("/", 1)[1]
        a, b = message["data"]["a"], message["data"]["b"]
        return {"add": a + b, "mul": a * b}[operation]

    @context.service("/service/forbidden")
    async def forbidden(session: ServerSession, message: Message) -> Any:
        raise MessageRefused("403::not_allowed", data={"reason": "members only"})

    @context.service("/service/broken")
    async def broken(session: ServerSession, message: Message) -> Any:
        raise RuntimeError("a bug in the application")

    client = await js(server.url, transport)
    client_id = await handshake(client)

    reply = await remote_call(client, "echo", {"text": "hi", "n": [1, 2]})
    assert reply["successful"], reply
    assert reply["data"] == {"echo": {"text": "hi", "n": [1, 2]}, "clientId": client_id}
    assert reply["error"] is None

    # A template: the segment reaches the service as a keyword argument.
    reply = await remote_call(client, "/rooms/lobby", {"join": True})
    assert reply["successful"], reply
    assert reply["data"] == {
        "room": "lobby",
        "channel": "/service/rooms/lobby",
        "data": {"join": True},
    }

    # A wildcard: one service for every operation; a bare number is a reply's data too.
    reply = await remote_call(client, "calc/add", {"a": 6, "b": 7})
    assert (reply["successful"], reply["data"]) == (True, 13), reply
    reply = await remote_call(client, "calc/mul", {"a": 6, "b": 7})
    assert (reply["successful"], reply["data"]) == (True, 42), reply

    # Refused: the callback sees the error and the data the service attached.
    reply = await remote_call(client, "forbidden", {"please": True})
    assert reply["successful"] is False, reply
    assert reply["error"] == "403::not_allowed"
    assert reply["data"] == {"reason": "members only"}

    # A service that fails unexpectedly still answers the call (and the error is logged).
    reply = await remote_call(client, "broken", {})
    assert (reply["successful"], reply["error"]) == (False, "500::service_failed"), reply

    assert calls == [("echo", client_id), ("room lobby", client_id)]
    await check_transport(client, transport)


# --- 2. Channel listeners -------------------------------------------------------------------


@TRANSPORTS
async def test_listener_changes_and_refuses_messages(
    serve: ServeFactory, js: JsFactory, transport: str
) -> None:
    server = await serve(LongPollingServiceContextBuilder().timeout(2))
    seen: list[tuple[str, Any]] = []

    @server.context.listener("/chat/*")
    async def moderate(session: ServerSession, message: Message) -> bool | None:
        data = message["data"]
        seen.append((str(session.client_id), data))
        text = data.get("text") if isinstance(data, dict) else None
        if text == "spam":
            return False
        if text == "rude":
            raise MessageRefused("403::moderated")
        if text is not None:
            message["data"] = {**data, "text": text.upper(), "moderated": True}
        return None

    publisher = await js(server.url, transport)
    subscriber = await js(server.url, transport)
    publisher_id = await handshake(publisher)
    await handshake(subscriber)
    await subscribe(subscriber, "/chat/room")

    await publish(publisher, "/chat/room", {"text": "hello"})
    changed = await subscriber.expect("message", channel="/chat/room")
    assert changed["data"] == {"text": "HELLO", "moderated": True}

    reply = await publish_reply(publisher, "/chat/room", {"text": "spam"})
    assert (reply["successful"], reply["error"]) == (False, "404::message_deleted"), reply
    reply = await publish_reply(publisher, "/chat/room", {"text": "rude"})
    assert (reply["successful"], reply["error"]) == (False, "403::moderated"), reply

    # Nothing of the refused ones was delivered: the marker is the very next message.
    await publish(publisher, "/chat/room", {"marker": 1})
    marker = await subscriber.expect("message", channel="/chat/room")
    assert marker["data"] == {"marker": 1}
    assert received_data(subscriber, "/chat/room") == [
        {"text": "HELLO", "moderated": True},
        {"marker": 1},
    ]
    # The listener saw every publish, with the publisher's session.
    assert seen == [
        (publisher_id, {"text": "hello"}),
        (publisher_id, {"text": "spam"}),
        (publisher_id, {"text": "rude"}),
        (publisher_id, {"marker": 1}),
    ]
    await check_transport(publisher, transport)


# --- 3. Security policy ---------------------------------------------------------------------


class TokenPolicy(SecurityPolicy):
    """Handshakes need ``ext.token == "secret"`` and keep ``ext.user`` as the session's user;
    nobody subscribes to ``/private`` or publishes to ``/readonly``."""

    def __init__(self) -> None:
        self.handshakes: list[dict[str, Any]] = []

    async def can_handshake(
        self, attributes: dict[str, Any], message: Message, headers: Headers
    ) -> bool:
        ext = message.get("ext") or {}
        self.handshakes.append(ext)
        if ext.get("token") != "secret":
            return False
        attributes["user"] = ext.get("user")
        return True

    async def can_subscribe(self, session: ServerSession, channel: str, message: Message) -> bool:
        return channel != "/private"

    async def can_publish(self, session: ServerSession, channel: str, message: Message) -> bool:
        return channel != "/readonly"


def secured(policy: TokenPolicy) -> LongPollingServiceContextBuilder:
    return LongPollingServiceContextBuilder().timeout(2).security_policy(policy)


@TRANSPORTS
async def test_denied_handshake_is_not_retried(
    serve: ServeFactory, js: JsFactory, transport: str
) -> None:
    policy = TokenPolicy()
    server = await serve(secured(policy))
    # Quick retries, had the client been told to retry.
    denied = await js(server.url, transport, options=FAST_RETRY)

    await denied.send({"cmd": "handshake", "ext": {"token": "wrong"}})
    reply = await denied.expect("handshake")
    assert reply["successful"] is False, reply
    assert reply["error"] == "403::handshake_denied"
    assert reply["reply"]["advice"]["reconnect"] == "none", reply
    listener = await denied.expect("meta", listener="/meta/handshake")
    assert (listener["successful"], listener["error"]) == (False, "403::handshake_denied")
    assert listener["advice"]["reconnect"] == "none"

    # The client gave up at once (a client about to retry would be "handshaking").
    state = await status(denied)
    assert state["status"] == "disconnected", state
    assert state["clientId"] is None
    # A whole handshake and call by another client later, the denied one has not tried again.
    other = await js(server.url, transport)
    await handshake(other, {"token": "secret", "user": "bob"})
    await publish(other, "/public", {"n": 1})
    assert policy.handshakes == [{"token": "wrong"}, {"token": "secret", "user": "bob"}]
    assert (await status(denied))["status"] == "disconnected"
    assert server.context.stats()["sessions"] == 1
    assert not [e for e in denied.events if e["event"] == "meta" and e["successful"]]


@TRANSPORTS
async def test_attributes_from_handshake_reach_services_and_events(
    serve: ServeFactory, js: JsFactory, transport: str
) -> None:
    policy = TokenPolicy()
    server = await serve(secured(policy))
    rx = server.context.rx()

    @server.context.service("/service/whoami")
    async def whoami(session: ServerSession, message: Message) -> Any:
        return {"user": session.attributes.get("user"), "clientId": str(session.client_id)}

    client = await js(server.url, transport)
    client_id = await handshake(client, {"token": "secret", "user": "alice"})

    added = await next_event(rx, SessionAdded, client_id)
    assert added.attributes == {"user": "alice"}
    assert server.context.server_session(client_id).attributes == {"user": "alice"}

    reply = await remote_call(client, "whoami", {})
    assert reply["successful"], reply
    assert reply["data"] == {"user": "alice", "clientId": client_id}

    await subscribe(client, "/public")
    subscribed = await next_event(rx, Subscribe, client_id)
    assert subscribed.channels == ("/public",)
    assert subscribed.attributes == {"user": "alice"}
    await check_transport(client, transport)


@TRANSPORTS
async def test_denied_subscribe_and_publish(
    serve: ServeFactory, js: JsFactory, transport: str
) -> None:
    policy = TokenPolicy()
    server = await serve(secured(policy))
    a = await js(server.url, transport)
    b = await js(server.url, transport)
    await handshake(a, {"token": "secret", "user": "alice"})
    await handshake(b, {"token": "secret", "user": "bob"})

    await a.send({"cmd": "subscribe", "channel": "/private"})
    reply = await a.expect("subscribed", channel="/private")
    assert reply["successful"] is False, reply
    assert reply["error"] == "403:denied_by_security_policy:subscribe_denied"
    state = await status(a)
    assert "/private" not in state["subscriptions"], state

    # b may listen on /readonly, but nobody may publish there.
    await subscribe(b, "/readonly")
    await subscribe(b, "/public")
    reply = await publish_reply(a, "/readonly", {"n": 1})
    assert reply["successful"] is False, reply
    assert reply["error"] == "403:denied_by_security_policy:publish_denied"

    await publish(a, "/public", {"marker": 1})
    await b.expect("message", channel="/public")
    assert received_data(b, "/readonly") == []
    assert received_data(b, "/public") == [{"marker": 1}]
    await check_transport(a, transport)


@TRANSPORTS
async def test_disconnect_with_a_security_policy(
    serve: ServeFactory, js: JsFactory, transport: str
) -> None:
    """With hooks registered, ``/meta/disconnect`` still succeeds, and the removal event carries
    the session's attributes."""
    server = await serve(secured(TokenPolicy()))
    rx = server.context.rx()
    client = await js(server.url, transport)
    client_id = await handshake(client, {"token": "secret", "user": "alice"})

    await client.send({"cmd": "disconnect"})
    reply = await client.expect("disconnected")
    assert reply["successful"], reply
    removed = await next_event(rx, SessionRemoved, client_id)
    assert removed.reason == RemovalReason.DISCONNECTED
    assert removed.attributes == {"user": "alice"}
    assert server.context.stats()["sessions"] == 0


# --- 4. The ack extension with the connection cut mid-stream ---------------------------------


# (client, transport, how the reply is lost, hooked): the JS and Java clients over long-polling
# and WebSocket. "hooked" registers a no-op extension and listener, so that requests take the
# server's per-message path through the application's hooks instead of the core's fast path,
# and adds timesync on both sides, whose ext travels with the ack's.
ACK_CASES = {
    "js-long-polling-500": ("js", "long-polling", "500", False),
    "js-long-polling-cut": ("js", "long-polling", "cut", False),
    "js-websocket-close": ("js", "websocket", "close", False),
    "js-long-polling-cut-hooked": ("js", "long-polling", "cut", True),
    "js-websocket-close-hooked": ("js", "websocket", "close", True),
    "java-long-polling-500": ("java", "long-polling", "500", False),
    "java-long-polling-cut": ("java", "long-polling", "cut", False),
    "java-websocket-close": ("java", "websocket", "close", False),
}
# The 1st and 2nd replies carrying messages are lost (the first burst, then its first resend),
# and the 4th (the second burst, after the first got through).
LOSE = {1, 2, 4}
BURSTS = 3
BURST = 20


@pytest.mark.parametrize("case", list(ACK_CASES))
async def test_ack_extension_loses_nothing_when_replies_are_lost(
    serve: ServeFactory,
    js: JsFactory,
    java: JavaFactory,
    case: str,
) -> None:
    kind, transport, how, hooked = ACK_CASES[case]
    fault = LoseDeliveries(LOSE, how, "/stream")
    builder = LongPollingServiceContextBuilder().timeout(5).ack_extension()
    if kind == "js" and transport == "websocket":
        # The JS client in Node (a plain `ws` WebSocket) sends no cookie with its upgrade, so
        # its next socket cannot show that the session is its own; without trust it would
        # handshake again (the Java client and browsers keep the cookie set on the upgrade).
        builder = builder.trust_client_session()
    server = await serve(builder.timesync() if hooked else builder, faults=fault)
    if hooked:
        server.context.add_extension(Extension())

        @server.context.listener("/elsewhere")
        async def elsewhere(session: ServerSession, message: Message) -> None:
            return None

    start = js if kind == "js" else java
    extensions = ["ack", "timesync"] if hooked else ["ack"]
    client: DriverClient = await start(
        server.url, transport, options=FAST_RETRY, extensions=extensions
    )
    await client.send({"cmd": "handshake"})
    reply = await client.expect("handshake", timeout=15)
    assert reply["successful"], reply
    client_id = reply["clientId"]
    # The server agreed to acknowledgements.
    assert reply["reply"]["ext"]["ack"] in (True, {"enabled": True, "batch": 0}), reply
    await subscribe(client, "/stream")

    seq = 0
    for _ in range(BURSTS):
        # Each burst is published while the client's connect is held, in one loop turn: the
        # reply that the burst wakes carries all of it.
        await until(lambda: server.context.stats()["held"] == 1, "the connect is held")
        for _ in range(BURST):
            await server.context.send("/stream", {"seq": seq})
            seq += 1
        # Every message so far arrives before the next burst (lost replies are sent again).
        await client.messages(BURST, timeout=30, channel="/stream")
    await server.context.send("/stream", {"marker": True})
    await client.expect("message", channel="/stream", data={"marker": True}, timeout=30)

    # Exactly once, in order: nothing lost, nothing twice, up to the marker.
    assert received_data(client, "/stream") == [{"seq": i} for i in range(BURSTS * BURST)] + [
        {"marker": True}
    ]
    # The faults really happened, mid-stream: the first burst was lost twice, then the second.
    assert len(fault.lost) == len(LOSE), fault.lost
    assert fault.lost[0] == fault.lost[1] == [{"seq": i} for i in range(BURST)]
    assert fault.lost[2] == [{"seq": i} for i in range(BURST, 2 * BURST)]
    # The same session all along: no re-handshake hid the faults.
    handshakes = [
        e for e in client.events if e["event"] == "meta" and e["listener"] == "/meta/handshake"
    ]
    assert [e["clientId"] for e in handshakes] == [client_id], handshakes
    state = await status(client)
    assert state["clientId"] == client_id, state
    assert state[transport_key(client)] == transport, state


# --- 5. Timesync ----------------------------------------------------------------------------


@TRANSPORTS
async def test_timesync_gives_a_sane_offset(
    serve: ServeFactory, js: JsFactory, transport: str
) -> None:
    timeout = 1.0
    server = await serve(LongPollingServiceContextBuilder().timeout(timeout).timesync())
    client = await js(server.url, transport, extensions=["timesync"])
    await handshake(client)

    # The first connect is answered at once, the next ones are held for the timeout.
    connects = [await client.expect("meta", listener="/meta/connect", timeout=10) for _ in range(3)]
    now = time.time() * 1000
    for connect in connects:
        assert connect["successful"], connect
        timesync = connect["ext"]["timesync"]
        assert set(timesync) >= {"tc", "ts", "p", "a"}, timesync
        # Same machine: the server's clock is the client's.
        assert abs(timesync["ts"] - timesync["tc"]) < 1000, timesync
        assert now - 60_000 < timesync["ts"] <= now + 1000, timesync
    # p is how long the server kept the message: about the timeout for a held connect.
    for held in connects[1:]:
        p = held["ext"]["timesync"]["p"]
        assert 0.8 * timeout * 1000 <= p <= timeout * 1000 + 2000, held
    state = await status(client)
    assert abs(state["timeOffset"]) < 1000, state
    assert 0 <= state["networkLag"] < 1000, state
    assert abs(state["serverTime"] - time.time() * 1000) < 2000, state
    assert state["transportType"] == transport, state


# --- 6. The multiple-clients advice ---------------------------------------------------------


def is_multiple_clients(event: dict[str, Any], instance: str | None = None) -> bool:
    advice = event.get("advice") or {}
    return (
        is_connect_reply(event)
        and advice.get("multiple-clients") is True
        and (instance is None or event.get("instance") == instance)
    )


async def test_multiple_clients_advice_for_two_sessions_under_one_cookie(
    serve: ServeFactory, js: JsFactory
) -> None:
    interval = 0.5
    server = await serve(
        LongPollingServiceContextBuilder().timeout(10).multi_session_interval(interval)
    )
    # Two CometD instances in one Node process share one cookie jar, like two browser tabs.
    client = await js(server.url)
    first = await handshake(client)
    await subscribe(client, "/news", instance="default")
    await until(lambda: server.context.stats()["held"] == 1, "the first tab holds a long-poll")

    await client.configure(server.url, instance="second")
    await client.send({"cmd": "handshake", "instance": "second"})
    reply = await client.expect("handshake", instance="second")
    assert reply["successful"], reply
    second = reply["clientId"]
    assert second != first
    await subscribe(client, "/news", instance="second")

    # The second tab is told so, and polls every multi_session_interval instead of holding.
    advised = [
        await client.expect_where("meta", lambda e: is_multiple_clients(e, "second"), timeout=10)
        for _ in range(3)
    ]
    for event in advised:
        assert event["successful"], event
        assert event["clientId"] == second
        assert event["advice"]["interval"] == interval * 1000, event
    gaps = [later["at"] - earlier["at"] for earlier, later in itertools.pairwise(advised)]
    assert all(gap >= interval * 1000 * 0.9 for gap in gaps), gaps
    # The first tab keeps its held long-poll all along.
    assert not [e for e in client.events if is_multiple_clients(e, "default")]
    assert server.context.stats()["held"] == 1

    # Both still receive messages.
    await server.context.send("/news", {"n": 1})
    got = await client.expect("message", channel="/news", instance="default")
    assert got["data"] == {"n": 1}
    got = await client.expect("message", channel="/news", instance="second", timeout=5)
    assert got["data"] == {"n": 1}
    await client.send(
        {"cmd": "publish", "channel": "/news", "data": {"n": 2}, "instance": "second"}
    )
    assert (await client.expect("published", instance="second"))["successful"]
    for instance in ("default", "second"):
        got = await client.expect("message", channel="/news", instance=instance, timeout=5)
        assert got["data"] == {"n": 2}
    # Still the same sessions ("connecting" while waiting out the advised interval).
    for instance, client_id in (("default", first), ("second", second)):
        state = await status(client, instance=instance)
        assert state["clientId"] == client_id, state
        assert state["status"] in ("connected", "connecting"), state
    handshakes = [
        e for e in client.events if e["event"] == "meta" and e["listener"] == "/meta/handshake"
    ]
    assert [e["clientId"] for e in handshakes] == [first, second], handshakes

    # Once the first tab leaves, the second one may hold its long-poll: a message wakes it.
    await client.send({"cmd": "disconnect", "instance": "default"})
    assert (await client.expect("disconnected", instance="default"))["successful"]
    stats = server.context.stats
    await until(lambda: (stats()["sessions"], stats()["held"]) == (1, 1), "the second tab holds")
    await server.context.send("/news", {"n": 3})
    got = await client.expect("message", channel="/news", instance="second")
    assert got["data"] == {"n": 3}
    woken = await client.expect_where(
        "meta",
        lambda e: is_connect_reply(e) and e["instance"] == "second" and not is_multiple_clients(e),
    )
    assert woken["successful"], woken
    assert woken["advice"] is None or "multiple-clients" not in woken["advice"], woken


async def test_two_sessions_under_one_cookie_both_hold_when_allowed(
    serve: ServeFactory, js: JsFactory
) -> None:
    server = await serve(LongPollingServiceContextBuilder().timeout(10).max_sessions_per_browser(2))
    client = await js(server.url)
    await handshake(client)
    await client.configure(server.url, instance="second")
    await client.send({"cmd": "handshake", "instance": "second"})
    assert (await client.expect("handshake", instance="second"))["successful"]
    await until(lambda: server.context.stats()["held"] == 2, "both tabs hold a long-poll")
    assert not [e for e in client.events if is_multiple_clients(e)]


# --- 7. broadcast_to_publisher --------------------------------------------------------------


@TRANSPORTS
@pytest.mark.parametrize("to_publisher", [False, True], ids=["not-to-publisher", "to-publisher"])
async def test_broadcast_to_publisher(
    serve: ServeFactory, js: JsFactory, transport: str, to_publisher: bool
) -> None:
    server = await serve(
        LongPollingServiceContextBuilder().timeout(2).broadcast_to_publisher(to_publisher)
    )
    a = await js(server.url, transport)
    b = await js(server.url, transport)
    await handshake(a)
    await handshake(b)
    await subscribe(a, "/room")
    await subscribe(b, "/room")

    await publish(a, "/room", {"from": "a"})
    assert (await b.expect("message", channel="/room"))["data"] == {"from": "a"}
    # b's marker follows a's own message in a's queue, if a's message was queued at all.
    await publish(b, "/room", {"marker": "b"})
    await a.expect("message", channel="/room", data={"marker": "b"})
    own = [{"from": "a"}] if to_publisher else []
    assert received_data(a, "/room") == [*own, {"marker": "b"}]
    # And the other way round.
    await publish(a, "/room", {"marker": "a"})
    await b.expect("message", channel="/room", data={"marker": "a"})
    own = [{"marker": "b"}] if to_publisher else []
    assert received_data(b, "/room") == [{"from": "a"}, *own, {"marker": "a"}]
    await check_transport(a, transport)
