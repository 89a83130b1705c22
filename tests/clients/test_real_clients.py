"""End-to-end scenarios run by every real client over every transport: the CometD JavaScript
client (9.x, in Node.js), the CometD Java client (8.0, on Jetty 12) and Faye's Node.js client
(1.4), over long-polling and WebSocket. Each test drives real clients (see
tests/support/drivers.py) against a real uvicorn server; what only one client does is tested in
its own file (test_js_client.py, test_java_client.py and test_faye_client.py, beside this one).

Waits are bounded and ordered by markers or server events, never by sleeps: a session's queue
is FIFO, so once a marker sent after some message has arrived, that message has arrived too, or
never will.

A client that is not installed skips, or fails when STARLETTE_COMETD_REQUIRE_CLIENTS=1 (CI).
The WebSocket variants also check that the server's handshake offers ``websocket``, under the
same rule, and every client is checked to use the transport of its variant.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from starlette_cometd import (
    LongPollingServiceContextBuilder,
    RemovalReason,
    SessionAdded,
    SessionRemoved,
    Unsubscribe,
)
from support.client_steps import (
    CLIENT_ID,
    MODES,
    Mode,
    check_mode_transport,
    client_pool,
    handshake_in_mode,
    next_event,
    publish,
    received,
    status,
    subscribe,
    unsubscribe,
    until,
    varied_ascii,
)
from support.drivers import DriverClient
from support.servers import ServeFactory, Server


@pytest.fixture(params=MODES, ids=[mode.id for mode in MODES])
def mode(request: pytest.FixtureRequest) -> Mode:
    """The client kind and transport of a test (``[js-websocket]``, ``[faye-long-polling]``...)."""
    m: Mode = request.param
    return m


ClientFactory = Callable[..., Awaitable[DriverClient]]


@pytest.fixture
async def clients(serve: ServeFactory, mode: Mode) -> AsyncIterator[ClientFactory]:
    """``await clients(server, options=...)`` starts a configured client of the test's ``mode``.
    Depends on ``serve`` so that clients are closed (and disconnect) before the servers stop."""
    async with client_pool() as pool:

        async def start(server: Server, options: dict[str, Any] | None = None) -> DriverClient:
            return await pool.start_in_mode(mode, server.url, options)

        yield start


async def test_publish_subscribe(server: Server, clients: ClientFactory, mode: Mode) -> None:
    a = await clients(server)
    b = await clients(server)
    await handshake_in_mode(a, mode)
    await handshake_in_mode(b, mode)
    await subscribe(a, "/chat/room")

    # 20 messages without waiting for acknowledgements, in an order the server must keep.
    # JS: one request per publish, sent one after another (one connection is kept for
    # /meta/connect). Faye: the driver sends each once the previous one is acknowledged, as
    # Faye would use a new request (and socket) for each. Java: in one batch, one request (or
    # frame); unbatched, the Java client sends each publish in its own request, and Jetty's
    # HttpClient runs them on parallel connections, unordered.
    batch = mode.kind == "java"
    await b.send({"cmd": "publish_many", "channel": "/chat/room", "count": 20, "batch": batch})
    done = await b.expect("published_many", timeout=20)
    assert done["successful"], done
    got = await a.messages(20, timeout=20, channel="/chat/room")
    assert [m["data"]["seq"] for m in got] == list(range(20))
    assert all(m["subscription"] == "/chat/room" for m in got)

    # 20 more, each published once the previous one is acknowledged.
    for seq in range(20, 40):
        await publish(b, "/chat/room", {"seq": seq})
    got = await a.messages(20, timeout=20, channel="/chat/room")
    assert [m["data"]["seq"] for m in got] == list(range(20, 40))

    # Exactly once: a marker sent after the 40 is the very next message.
    await publish(b, "/chat/room", {"marker": True})
    marker = await a.expect("message", channel="/chat/room")
    assert marker["data"] == {"marker": True}
    assert len(received(a, "/chat/room")) == 41


async def test_wildcard_subscriptions(server: Server, clients: ClientFactory, mode: Mode) -> None:
    a = await clients(server)
    b = await clients(server)
    a_id = await handshake_in_mode(a, mode)
    await handshake_in_mode(b, mode)
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

    # Each client itself hands one received message to every matching local subscriber:
    # /w/a reaches the /w/a, /w/* and /w/** subscribers once each. A second delivery by the
    # server would show up here as a count of 2.
    on_wa = Counter(m["subscription"] for m in received(a, "/w/a"))
    assert on_wa == {"/w/a": 1, "/w/*": 1, "/w/**": 1}
    assert all(m["data"] == {"n": 1} for m in received(a, "/w/a"))
    # /w/a/b is two segments below /w: only /w/** matches it.
    on_wab = Counter(m["subscription"] for m in received(a, "/w/a/b"))
    assert on_wab == {"/w/**": 1}
    assert received(a, "/w/a/b")[0]["data"] == {"n": 2}


async def test_unsubscribe(server: Server, clients: ClientFactory, mode: Mode) -> None:
    rx = server.context.rx()
    a = await clients(server)
    b = await clients(server)
    a_id = await handshake_in_mode(a, mode)
    await handshake_in_mode(b, mode)
    await subscribe(a, "/u/gone")
    await subscribe(a, "/u/kept")

    await publish(b, "/u/gone", {"n": 1})
    first = await a.expect("message", channel="/u/gone")
    assert first["data"] == {"n": 1}

    await unsubscribe(a, "/u/gone")
    event = await next_event(rx, Unsubscribe, a_id)
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


async def test_disconnect(server: Server, clients: ClientFactory, mode: Mode) -> None:
    rx = server.context.rx()
    client = await clients(server)
    client_id = await handshake_in_mode(client, mode)
    first = await client.expect("meta", listener="/meta/connect")
    assert first["successful"], first
    await subscribe(client, "/d")
    # Disconnect while the next /meta/connect is held, the usual state of an idle client.
    await until(lambda: server.context.stats()["held"] == 1, "the connect is held")

    await client.send({"cmd": "disconnect"})
    reply = await client.expect("disconnected")
    assert reply["successful"], reply

    removed = await next_event(rx, SessionRemoved, client_id)
    assert removed.reason is RemovalReason.DISCONNECTED
    stats = server.context.stats()
    assert stats["sessions"] == 0
    assert stats["held"] == 0
    assert server.context.session_info(client_id) is None
    state = await status(client)
    assert state["status"] == "disconnected", state
    # The held connect is answered too (not left to time out). Its reply is the last thing that
    # could make the client handshake again; the client decides at once, on receipt, and being
    # disconnected it stays so. As in CometD Java it is a success advising no reconnect, so the
    # application's /meta/unsuccessful listeners see no false failure.
    released = await client.expect("meta", listener="/meta/connect")
    if mode.kind == "faye":
        # Faye sends its next /meta/connect in the same request as other messages queued in
        # the same tick (the subscribe, here), and a connect is held only when it stands alone:
        # the server answers such a connect at once, advising a retry. Skip those.
        while released["successful"] and released["advice"]["reconnect"] == "retry":
            released = await client.expect("meta", listener="/meta/connect")
    assert released["successful"], released
    assert released["advice"]["reconnect"] == "none", released
    assert (await status(client))["status"] == "disconnected"
    assert server.context.stats()["sessions"] == 0
    # No failure reached the application on the way out, but one: over WebSocket the Java
    # client schedules its next /meta/connect on another thread as soon as the first one is
    # answered, and that connect can reach the socket after the /meta/disconnect sent right
    # then (seen in the client's own debug log). The server then rightly answers it as a
    # connect of an unknown session, or, when the client has already closed its own socket,
    # the client fails that connect itself with an EOFException.
    failures = [e for e in client.events if e["event"] == "meta" and not e["successful"]]
    if mode.kind == "java" and mode.websocket:
        late_connect = ("402::session_unknown", "java.io.EOFException")
        failures = [
            e
            for e in failures
            if not (e["channel"] == "/meta/connect" and e["error"] in late_connect)
        ]
    assert not failures, json.dumps(failures)


async def test_server_send_and_send_to_client(
    server: Server, clients: ClientFactory, mode: Mode
) -> None:
    a = await clients(server)
    b = await clients(server)
    a_id = await handshake_in_mode(a, mode)
    await handshake_in_mode(b, mode)
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


async def test_removed_session_rehandshakes(
    server: Server, clients: ClientFactory, mode: Mode
) -> None:
    rx = server.context.rx()
    client = await clients(server)
    old_id = await handshake_in_mode(client, mode)
    await subscribe(client, "/after")
    await subscribe(client, "/after/*")
    await next_event(rx, SessionAdded, old_id)
    first = await client.expect("meta", listener="/meta/connect")
    assert first["successful"], first
    # Remove the session while its next connect is held, the usual state of an idle client.
    await until(lambda: server.context.stats()["held"] == 1, "the connect is held")

    await server.context.remove_session(old_id)

    removed = await next_event(rx, SessionRemoved, old_id)
    assert removed.reason is RemovalReason.REMOVED
    # The held connect is answered with 402 and the advice to handshake again.
    failed = await client.expect("meta", listener="/meta/connect", successful=False)
    assert failed["error"] == "402::session_unknown", failed
    assert failed["advice"]["reconnect"] == "handshake", failed
    # The client handshakes again by itself; then the JS and Java drivers re-subscribe, as
    # those clients expect of the application, while Faye re-subscribes by itself.
    rehandshake = await client.expect("meta", listener="/meta/handshake", successful=True)
    new_id = rehandshake["clientId"]
    assert CLIENT_ID.fullmatch(new_id), new_id
    assert new_id != old_id
    await next_event(rx, SessionAdded, new_id)
    resubscribed = await client.expect("resubscribed")
    assert resubscribed["successful"], resubscribed
    assert sorted(resubscribed["channels"]) == ["/after", "/after/*"]
    assert server.context.session_info(old_id) is None
    info = server.context.session_info(new_id)
    assert info is not None
    assert sorted(info["subscriptions"]) == ["/after", "/after/*"]
    assert server.context.stats()["sessions"] == 1
    await check_mode_transport(client, mode)

    await server.context.send("/after", {"back": True})
    message = await client.expect("message", channel="/after")
    assert message["data"] == {"back": True}
    await server.context.send("/after/x", {"wild": True})
    message = await client.expect("message", channel="/after/x")
    assert message["data"] == {"wild": True}
    assert message["subscription"] == "/after/*"


async def test_server_burst(serve: ServeFactory, clients: ClientFactory, mode: Mode) -> None:
    count = 400
    # The queue holds the whole burst even if the client is between two connects.
    server = await serve(LongPollingServiceContextBuilder().timeout(2).client_channel_capacity(500))
    client = await clients(server)
    await handshake_in_mode(client, mode)
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


def large_message_options(mode: Mode) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The (publisher, subscriber) options that let a client send and take 256 KiB messages."""
    if mode.kind == "js":
        # The JS client refuses to send a message over maxSendBayeuxMessageSize (8192 by
        # default); it takes messages of any size.
        return {"maxSendBayeuxMessageSize": 512 * 1024}, None
    if mode.kind == "java" and mode.websocket:
        # The Java client takes messages up to maxMessageSize: 1 MiB by default over HTTP; over
        # WebSocket the default is the WebSocket container's (64 KiB with Jetty's), so raise it.
        both = {"maxMessageSize": 1024 * 1024}
        return both, both
    # Faye has no such limits.
    return None, None


async def test_large_payload(server: Server, clients: ClientFactory, mode: Mode) -> None:
    # 256 KiB, well under the server's default max_body_size (1 MiB). ASCII: the
    # cometd-nodejs-client decodes each HTTP chunk on its own, which corrupts a multi-byte
    # character split between chunks; the WebSocket tests with aiocometd cover UTF-8.
    text = varied_ascii(256 * 1024)
    publisher_options, subscriber_options = large_message_options(mode)
    publisher = await clients(server, options=publisher_options)
    subscriber = await clients(server, options=subscriber_options)
    await handshake_in_mode(publisher, mode)
    await handshake_in_mode(subscriber, mode)
    await subscribe(subscriber, "/big")

    await publish(publisher, "/big", {"text": text}, timeout=20)

    message = await subscriber.expect("message", channel="/big", timeout=20)
    assert len(message["data"]["text"]) == len(text)
    assert message["data"]["text"] == text
