"""History and the replay extension (issue 12), as Salesforce's clients speak it, over raw HTTP
and WebSocket on both stacks: ids in ``data.event.replayId``, a subscribe that names the last id
seen gets what came after it, and every id or request that cannot be served is told, in
Salesforce's words where its clients parse them."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
import websockets

from starlette_cometd import InvalidChannelError, LongPollingServiceContextBuilder, ReplayIdError
from support.bayeux import connect_message, handshake, post
from support.servers import ServeFactory, Server

Message = dict[str, Any]


def invalid(replay_id: str) -> str:
    """Salesforce's error for an id that cannot be replayed, with the id as it was sent."""
    return (
        f"400::The replayId {{{replay_id}}} you provided was invalid.  Please provide a valid ID,"
        " -2 to replay all events, or -1 to replay only new events."
    )


def with_history(size: int = 1000) -> LongPollingServiceContextBuilder:
    return LongPollingServiceContextBuilder().timeout(1).history("/chat/**", size=size)


def replayed_ids(messages: list[Message]) -> list[int]:
    return [m["data"]["event"]["replayId"] for m in messages if m["channel"] != "/meta/connect"]


async def published(http: httpx.AsyncClient, server: Server, count: int, channel: str) -> None:
    """``count`` messages from a publisher of its own: ``{"n": 0}`` and on."""
    publisher = await handshake(http, server.ip_url)
    batch = [{"channel": channel, "clientId": publisher, "data": {"n": n}} for n in range(count)]
    replies = await post(http, server.ip_url, *batch)
    assert all(r["successful"] for r in replies), replies


async def subscribed(
    http: httpx.AsyncClient, server: Server, channel: str, replay: Any
) -> tuple[str, Message]:
    """A new session subscribing to ``channel`` with ``ext.replay`` = ``replay``: its id and
    the subscribe's reply."""
    client_id = await handshake(http, server.ip_url)
    subscribe = {
        "channel": "/meta/subscribe",
        "clientId": client_id,
        "subscription": channel,
        "ext": {"replay": replay},
    }
    [reply] = await post(http, server.ip_url, subscribe)
    return client_id, reply


async def delivered(http: httpx.AsyncClient, server: Server, client_id: str) -> list[Message]:
    """What one connect brings (held up to a second when nothing waits)."""
    replies = await post(http, server.ip_url, connect_message(client_id))
    return [r for r in replies if r["channel"] != "/meta/connect"]


async def test_the_handshake_says_the_server_speaks_replay_when_asked(serve: ServeFactory) -> None:
    handshake_message = {"channel": "/meta/handshake", "supportedConnectionTypes": ["long-polling"]}
    asking = {**handshake_message, "ext": {"replay": True}}
    with_it = await serve(with_history())
    without = await serve(LongPollingServiceContextBuilder())
    async with httpx.AsyncClient(timeout=10) as http:
        [reply] = await post(http, with_it.ip_url, asking)
        assert reply["ext"]["replay"] is True
        [reply] = await post(http, with_it.ip_url, handshake_message)
        assert "replay" not in reply.get("ext", {}), "only when asked"
        [reply] = await post(http, without.ip_url, asking)
        assert "replay" not in reply.get("ext", {}), "no history, no replay"


async def test_a_subscriber_gets_what_came_after_the_last_id_it_saw(serve: ServeFactory) -> None:
    server = await serve(with_history(size=3))
    async with httpx.AsyncClient(timeout=10) as http:
        await published(http, server, 5, "/chat/a")
        # Everything retained: the last three, ids one apart, each with its date.
        everything, reply = await subscribed(http, server, "/chat/a", {"/chat/a": -2})
        assert reply["successful"] is True, reply
        messages = await delivered(http, server, everything)
        assert [m["data"]["n"] for m in messages] == [2, 3, 4]
        ids = replayed_ids(messages)
        assert ids == list(range(ids[0], ids[0] + 3))
        for message in messages:
            assert re.fullmatch(
                r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", message["data"]["event"]["createdDate"]
            )
        # After an id: only what came later, then live messages with no gap.
        after, reply = await subscribed(http, server, "/chat/a", {"/chat/a": ids[0]})
        assert reply["successful"] is True, reply
        await published(http, server, 1, "/chat/a")
        messages = await delivered(http, server, after)
        assert replayed_ids(messages) == [ids[1], ids[2], ids[2] + 1]
        # The newest id pushed out (the last of those three: the sixth pushed it out) is
        # valid, since nothing after it is lost; an older one is not.
        _, reply = await subscribed(http, server, "/chat/a", {"/chat/a": ids[0]})
        assert reply["successful"] is True, reply
        _, reply = await subscribed(http, server, "/chat/a", {"/chat/a": ids[0] - 1})
        assert reply == {
            "channel": "/meta/subscribe",
            "successful": False,
            "error": invalid(str(ids[0] - 1)),
            "subscription": "/chat/a",
        }
        # -1, or no replay at all: only new messages.
        fresh, reply = await subscribed(http, server, "/chat/a", {"/chat/a": -1})
        assert reply["successful"] is True
        await published(http, server, 1, "/chat/a")
        assert len(await delivered(http, server, fresh)) == 1
        stats = server.context.stats()
        assert (stats["history_channels"], stats["history_messages"]) == (1, 3)


async def test_what_cannot_be_replayed_is_refused_and_nothing_subscribed(
    serve: ServeFactory,
) -> None:
    server = await serve(with_history())
    async with httpx.AsyncClient(timeout=10) as http:
        await published(http, server, 2, "/chat/a")
        cases: list[tuple[str, Any, str]] = [
            ("/chat/a", {"/chat/a": "abc"}, invalid('"abc"')),
            ("/chat/a", {"/chat/a": 1.5}, invalid("1.5")),
            ("/chat/a", {"/chat/a": -3}, invalid("-3")),
            ("/chat/a", {"/chat/a": 5}, invalid("5")),  # before this engine's first id
            ("/chat/a", {"/chat/a": 9 * 10**15}, invalid(str(9 * 10**15))),  # never given
            ("/news", {"/news": -2}, "400:/news:replay_not_available"),
            ("/chat/*", {"/chat/*": -2}, "400:/chat/*:replay_wildcard_unsupported"),
            ("/chat/a", [1], "400:ext.replay:invalid_type"),
        ]
        for channel, replay, error in cases:
            client_id, reply = await subscribed(http, server, channel, replay)
            assert reply["successful"] is False, (replay, reply)
            assert reply["error"] == error, replay
            info = server.context.session_info(client_id)
            assert info is not None and info["subscriptions"] == [], "nothing subscribed"
        # Entries for other channels are passed over (Salesforce's clients send them all), and
        # -1 is a plain subscribe anywhere, wildcards included.
        for channel, replay in [
            ("/chat/a", {"/chat/other": 5, "/elsewhere": "x"}),
            ("/chat/*", {"/chat/*": -1}),
            ("/news", {"/news": -1}),
        ]:
            client_id, reply = await subscribed(http, server, channel, replay)
            assert reply["successful"] is True, (replay, reply)
            assert await delivered(http, server, client_id) == []


async def test_an_id_from_before_a_restart_is_refused(serve: ServeFactory) -> None:
    before = await serve(with_history())
    async with httpx.AsyncClient(timeout=10) as http:
        await published(http, before, 1, "/chat/a")
        client_id, _ = await subscribed(http, before, "/chat/a", {"/chat/a": -2})
        [message] = await delivered(http, before, client_id)
        last = message["data"]["event"]["replayId"]
        after = await serve(with_history())  # the same settings, a new engine
        _, reply = await subscribed(http, after, "/chat/a", {"/chat/a": last})
        assert reply["error"] == invalid(str(last))
        # Its ids start past every id before it.
        await published(http, after, 1, "/chat/a")
        client_id, _ = await subscribed(http, after, "/chat/a", {"/chat/a": -2})
        [message] = await delivered(http, after, client_id)
        assert message["data"]["event"]["replayId"] > last


async def test_data_that_is_not_an_object_goes_unchanged_and_is_replayed(
    serve: ServeFactory,
) -> None:
    server = await serve(with_history())
    async with httpx.AsyncClient(timeout=10) as http:
        publisher = await handshake(http, server.ip_url)
        values = [[1, 2], "text", 3, {"event": "not an object"}]
        batch = [{"channel": "/chat/a", "clientId": publisher, "data": v} for v in values]
        assert all(r["successful"] for r in await post(http, server.ip_url, *batch))
        await server.context.send("/chat/a", {"from": "the server"})
        client_id, _ = await subscribed(http, server, "/chat/a", {"/chat/a": -2})
        messages = await delivered(http, server, client_id)
        assert [m["data"] for m in messages[:-1]] == values
        assert messages[-1]["data"]["from"] == "the server"
        assert isinstance(messages[-1]["data"]["event"]["replayId"], int)


async def test_a_replay_is_never_cut_by_the_queue_bound_over_websocket(
    serve: ServeFactory,
) -> None:
    """2,000 retained, past the 500 a session's queue holds: all arrive, in order, then live
    messages."""
    server = await serve(with_history(size=2000).client_channel_capacity(500))
    async with httpx.AsyncClient(timeout=30) as http:
        await published(http, server, 2000, "/chat/big")
    url = server.ip_url.replace("http://", "ws://")
    async with websockets.connect(url, open_timeout=5, max_size=None) as ws:
        await ws.send(
            json.dumps([{"channel": "/meta/handshake", "supportedConnectionTypes": ["websocket"]}])
        )
        [shaken] = json.loads(await ws.recv())
        client_id = shaken["clientId"]
        connect = {"channel": "/meta/connect", "clientId": client_id, "connectionType": "websocket"}
        await ws.send(json.dumps([connect]))
        await ws.recv()  # the first connect is answered at once
        subscribe = {
            "channel": "/meta/subscribe",
            "clientId": client_id,
            "subscription": "/chat/big",
            "ext": {"replay": {"/chat/big": -2}},
        }
        await ws.send(json.dumps([subscribe]))
        received: list[Message] = []
        while len(received) < 2000:
            for message in json.loads(await ws.recv()):
                if message["channel"] == "/chat/big":
                    received.append(message)
                elif message["channel"] == "/meta/subscribe":
                    assert message["successful"] is True, message
        assert [m["data"]["n"] for m in received] == list(range(2000))
        assert server.context.session_info(client_id)["dropped"] == 0  # type: ignore[index]


async def test_a_replay_is_never_cut_with_the_ack_extension_either(serve: ServeFactory) -> None:
    """Over long-polling with the ack extension, whose batches are sent again until
    acknowledged: 800 retained, past the 500 a session's queue holds, come in one batch."""
    builder = with_history(size=800).client_channel_capacity(500).ack_extension()
    server = await serve(builder)
    async with httpx.AsyncClient(timeout=30) as http:
        await published(http, server, 800, "/chat/big")
        shake = {
            "channel": "/meta/handshake",
            "supportedConnectionTypes": ["long-polling"],
            "ext": {"ack": True, "replay": True},
        }
        [reply] = await post(http, server.ip_url, shake)
        assert reply["ext"] == {"ack": True, "replay": True}
        client_id = reply["clientId"]
        await post(
            http, server.ip_url, {**connect_message(client_id, timeout=0), "ext": {"ack": -1}}
        )
        subscribe = {
            "channel": "/meta/subscribe",
            "clientId": client_id,
            "subscription": "/chat/big",
            "ext": {"replay": {"/chat/big": -2}},
        }
        [subscribed_reply] = await post(http, server.ip_url, subscribe)
        assert subscribed_reply["successful"] is True
        replies = await post(http, server.ip_url, {**connect_message(client_id), "ext": {"ack": 0}})
        messages = [r for r in replies if r["channel"] == "/chat/big"]
        assert [m["data"]["n"] for m in messages] == list(range(800))


def asked_again(client_id: str, channel: str, times: int) -> list[Message]:
    """A batch that subscribes ``times`` to ``channel`` replaying all, unsubscribing between."""
    subscribe: Message = {
        "channel": "/meta/subscribe",
        "clientId": client_id,
        "subscription": channel,
        "ext": {"replay": {channel: -2}},
    }
    unsubscribe: Message = {**subscribe, "channel": "/meta/unsubscribe", "ext": {}}
    return [subscribe, unsubscribe] * (times - 1) + [subscribe]


async def test_replays_asked_again_and_again_without_reading_are_bounded(
    serve: ServeFactory,
) -> None:
    """A session may have ten channels' worth of its largest history replayed and undelivered
    (here 10 x 20 = 200, its queue holding 5): past that a replay is refused, and nothing of
    it subscribed, until a connect takes what it has."""
    server = await serve(with_history(size=20).client_channel_capacity(5))
    async with httpx.AsyncClient(timeout=30) as http:
        await published(http, server, 20, "/chat/a")
        client_id = await handshake(http, server.ip_url)
        replies = await post(http, server.ip_url, *asked_again(client_id, "/chat/a", 10))
        assert all(r["successful"] for r in replies), replies
        [refused] = await post(http, server.ip_url, *asked_again(client_id, "/chat/a", 1))
        assert refused["successful"] is False
        assert refused["error"] == "400:/chat/a:replay_limit_exceeded"
        info = server.context.session_info(client_id)
        assert info is not None and info["queued"] == 200 and info["dropped"] == 0
        assert info["subscriptions"] == ["/chat/a"], "the refused one changed nothing"
        assert len(await delivered(http, server, client_id)) == 200
        [again] = await post(http, server.ip_url, *asked_again(client_id, "/chat/a", 1))
        assert again["successful"] is True, again


def test_history_settings_are_checked() -> None:
    for pattern in ("/meta/x", "/service/**", "chat", "/a/*/b"):
        with pytest.raises(ValueError, match=f'"{re.escape(pattern)}" is not a broadcast'):
            LongPollingServiceContextBuilder().history(pattern).build()
    with pytest.raises(ValueError, match="size"):
        LongPollingServiceContextBuilder().history("/a", size=0)
    with pytest.raises(ValueError, match="ttl"):
        LongPollingServiceContextBuilder().history("/a", ttl=0)
    clustered = LongPollingServiceContextBuilder().history("/a").redis("redis://127.0.0.1:1/0")
    assert clustered.build().cluster is not None, "a cluster keeps its history in Redis"


async def test_the_application_reads_the_history_and_its_figures(serve: ServeFactory) -> None:
    server = await serve(with_history(size=3))
    context = server.context
    assert await context.history("/chat/a") == []
    assert context.stats()["history_oldest_id"] == 0
    for n in range(4):
        await context.send("/chat/a", {"n": n})
    kept = await context.history("/chat/a")
    assert [m["data"]["n"] for m in kept] == [1, 2, 3]
    assert {m["channel"] for m in kept} == {"/chat/a"}
    ids = [m["data"]["event"]["replayId"] for m in kept]
    assert [m["data"]["n"] for m in await context.history("/chat/a", ids[0])] == [2, 3]
    assert await context.history("/chat/a", -1) == []
    assert context.stats()["history_oldest_id"] == ids[0]
    with pytest.raises(ReplayIdError) as refused:
        await context.history("/chat/a", ids[0] - 2)
    assert str(refused.value) == invalid(str(ids[0] - 2))
    with pytest.raises(ReplayIdError, match="400:/news:replay_not_available"):
        await context.history("/news")
    with pytest.raises(InvalidChannelError):
        await context.history("/chat/*")
