"""Services, listeners, the security policy, extensions and session attributes, over raw HTTP
and WebSocket against a real uvicorn."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import websockets
from starlette.datastructures import Headers

from starlette_cometd import (
    Extension,
    LongPollingServiceContextBuilder,
    Message,
    MessageRefused,
    SecurityPolicy,
    ServerSession,
    SessionAdded,
    Subscribe,
)
from support.bayeux import connect_message, handshake, post, subscribe
from support.client_steps import connects_held, until
from support.servers import ServeFactory, Server
from support.ws_client import receive, socket, ws_connect, ws_session


def publish(client_id: str, channel: str, data: Any, id: str = "p") -> Message:
    return {"channel": channel, "clientId": client_id, "data": data, "id": id}


async def test_service_replies_follow_the_remote_call_convention(
    server: Server, http: httpx.AsyncClient
) -> None:
    calls: list[tuple[str, Any]] = []

    @server.context.service("/service/echo")
    async def echo(session: ServerSession, message: Message) -> Any:
        calls.append((str(session.client_id), message["data"]))
        return {"echo": message["data"]}

    @server.context.service("/service/rooms/{room}")
    async def room(session: ServerSession, message: Message, room: str) -> Any:
        return {"room": room}

    @server.context.service("/service/calc/*")
    async def calc(session: ServerSession, message: Message) -> Any:
        raise MessageRefused("403::not_allowed", data={"why": "no maths today"})

    @server.context.service("/service/broken")
    async def broken(session: ServerSession, message: Message) -> Any:
        raise RuntimeError("a bug in the application")

    client_id = await handshake(http, server.url)
    replies = await post(
        http,
        server.url,
        publish(client_id, "/service/echo", "hi", id="1"),
        publish(client_id, "/service/rooms/lobby", None, id="2") | {"data": {}},
        publish(client_id, "/service/calc/add", [1, 2], id="3"),
        publish(client_id, "/service/broken", 1, id="4"),
        publish(client_id, "/service/unserved", 1, id="5"),
    )
    assert replies[0] == {
        "channel": "/service/echo",
        "id": "1",
        "successful": True,
        "data": {"echo": "hi"},
    }
    assert replies[1]["data"] == {"room": "lobby"}
    assert replies[2] == {
        "channel": "/service/calc/add",
        "id": "3",
        "successful": False,
        "error": "403::not_allowed",
        "data": {"why": "no maths today"},
    }
    assert replies[3]["error"] == "500::service_failed"
    # A service channel nobody serves is acknowledged, as without hooks.
    assert replies[4] == {"channel": "/service/unserved", "successful": True, "id": "5"}
    assert calls == [(client_id, "hi")]


async def test_hooks_never_run_for_a_session_the_request_may_not_use(
    server: Server, http: httpx.AsyncClient
) -> None:
    ran: list[str] = []

    @server.context.service("/service/secret")
    async def secret(session: ServerSession, message: Message) -> Any:
        ran.append("service")
        return "secret"

    @server.context.listener("/chat/**")
    async def listen(session: ServerSession, message: Message) -> None:
        ran.append("listener")

    victim = await handshake(http, server.url)
    async with httpx.AsyncClient() as stranger:  # no cookie
        replies = await post(
            stranger,
            server.url,
            publish(victim, "/service/secret", 1),
            publish(victim, "/chat/room", 1),
        )
    assert [r["error"] for r in replies] == ["402::session_unknown"] * 2
    # Unknown and malformed ids are refused by the core, as without hooks.
    replies = await post(
        http,
        server.url,
        publish("0" * 40, "/chat/room", 1),
        publish("nope", "/chat/room", 1),
        {"channel": "/meta/disconnect", "clientId": "0" * 40},
    )
    assert [r["error"] for r in replies] == ["402::session_unknown"] * 3
    assert ran == []
    # A disconnect with hooks registered succeeds, its reply passing the outgoing hooks.
    [bye] = await post(http, server.url, {"channel": "/meta/disconnect", "clientId": victim})
    assert bye["successful"] is True


async def test_listeners_change_or_refuse_publishes(
    server: Server, http: httpx.AsyncClient
) -> None:
    @server.context.listener("/chat/*")
    async def moderate(session: ServerSession, message: Message) -> bool | None:
        text = message["data"]["text"]
        if text == "spam":
            return False
        if text == "rude":
            raise MessageRefused("403::moderated", data={"rule": "be kind"})
        message["data"]["text"] = text.upper()
        return None

    client_id = await handshake(http, server.url)
    await subscribe(http, server.url, client_id, "/chat/room")
    replies = await post(
        http,
        server.url,
        publish(client_id, "/chat/room", {"text": "hello"}, id="1"),
        publish(client_id, "/chat/room", {"text": "spam"}, id="2"),
        publish(client_id, "/chat/room", {"text": "rude"}, id="3"),
        publish(client_id, "/other", {"text": "untouched"}, id="4"),
    )
    assert [r.get("error") for r in replies] == [
        None,
        "404::message_deleted",
        "403::moderated",
        None,
    ]
    # A refusal's data travels in ext, never as the reply's data, which clients would take
    # for a delivered message.
    assert "data" not in replies[2] and replies[2]["ext"] == {"refusal": {"rule": "be kind"}}
    delivered = await post(http, server.url, connect_message(client_id))
    assert delivered[0] == {"channel": "/chat/room", "data": {"text": "HELLO"}}
    assert delivered[1]["channel"] == "/meta/connect"


class TokenPolicy(SecurityPolicy):
    async def can_handshake(
        self, attributes: dict[str, Any], message: Message, headers: Headers
    ) -> bool:
        token = (message.get("ext") or {}).get("token")
        if token is None:
            return False
        attributes["user"] = token
        return True

    async def can_subscribe(self, session: ServerSession, channel: str, message: Message) -> bool:
        return not channel.startswith("/admin")

    async def can_publish(self, session: ServerSession, channel: str, message: Message) -> bool:
        return bool(session.attributes["user"] != "reader")


async def test_security_policy_and_attributes(serve: ServeFactory, http: httpx.AsyncClient) -> None:
    server = await serve(
        LongPollingServiceContextBuilder().timeout(2).security_policy(TokenPolicy())
    )
    events = server.context.rx()
    [denied] = await post(http, server.url, {"channel": "/meta/handshake", "id": "h"})
    assert denied == {
        "channel": "/meta/handshake",
        "successful": False,
        "error": "403::handshake_denied",
        "advice": {"reconnect": "none", "interval": 0},
        "id": "h",
    }
    [hs] = await post(http, server.url, {"channel": "/meta/handshake", "ext": {"token": "ann"}})
    client_id = hs["clientId"]
    added = await asyncio.wait_for(events.recv(), 2)
    assert isinstance(added, SessionAdded) and added.attributes == {"user": "ann"}
    assert server.context.server_session(client_id).attributes == {"user": "ann"}
    replies = await post(
        http,
        server.url,
        {
            "channel": "/meta/subscribe",
            "clientId": client_id,
            "subscription": ["/news", "/admin/x"],
        },
        {"channel": "/meta/subscribe", "clientId": client_id, "subscription": "/news"},
        publish(client_id, "/news", 1),
    )
    assert replies[0]["error"] == "403:denied_by_security_policy:subscribe_denied"
    assert replies[0]["subscription"] == ["/news", "/admin/x"]
    assert replies[1]["successful"] is True and replies[2]["successful"] is True
    subscribed = await asyncio.wait_for(events.recv(), 2)
    assert isinstance(subscribed, Subscribe) and subscribed.attributes == {"user": "ann"}
    [hs] = await post(http, server.url, {"channel": "/meta/handshake", "ext": {"token": "reader"}})
    [refused] = await post(http, server.url, publish(hs["clientId"], "/news", 1))
    assert refused["error"] == "403:denied_by_security_policy:publish_denied"


class Recorder(Extension):
    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    async def incoming(self, session: ServerSession | None, message: Message) -> bool:
        self.log.append(f"{self.name} in {message['channel']}")
        return message.get("data") != "drop me"

    async def outgoing(self, session: ServerSession | None, message: Message) -> bool:
        self.log.append(f"{self.name} out {message['channel']}")
        message.setdefault("ext", {})[self.name] = True
        return True


async def test_extensions_run_in_order_and_reverse(server: Server, http: httpx.AsyncClient) -> None:
    log: list[str] = []
    server.context.add_extension(Recorder("first", log))
    server.context.add_extension(Recorder("second", log))
    [hs] = await post(http, server.url, {"channel": "/meta/handshake"})
    assert log == [
        "first in /meta/handshake",
        "second in /meta/handshake",
        "second out /meta/handshake",
        "first out /meta/handshake",
    ]
    assert hs["ext"] == {"first": True, "second": True}
    client_id = hs["clientId"]
    await subscribe(http, server.url, client_id, "/x")
    [dropped, kept] = await post(
        http,
        server.url,
        publish(client_id, "/x", "drop me", "1"),
        publish(client_id, "/x", "ok", "2"),
    )
    assert dropped["error"] == "404::message_deleted"
    assert kept["successful"] is True
    reply = await post(http, server.url, connect_message(client_id))
    # Delivered messages are not passed through outgoing hooks; the connect reply is.
    assert reply[0] == {"channel": "/x", "data": "ok"}
    assert reply[1]["ext"] == {"first": True, "second": True}


async def test_held_connect_reply_passes_outgoing_hooks(
    server: Server, http: httpx.AsyncClient
) -> None:
    log: list[str] = []
    server.context.add_extension(Recorder("only", log))
    client_id = await handshake(http, server.url)
    held = asyncio.ensure_future(post(http, server.url, connect_message(client_id, id="h")))
    await connects_held(server)
    await server.context.send_to_client("/x", client_id, 1)
    reply = await asyncio.wait_for(held, 3)
    assert reply[0] == {"channel": "/x", "data": 1}
    assert reply[1]["ext"] == {"only": True} and reply[1]["id"] == "h"


async def test_meta_connect_deliver_only_over_websocket(serve: ServeFactory) -> None:
    builder = LongPollingServiceContextBuilder().timeout(5).meta_connect_deliver_only()
    server = await serve(builder)
    url = server.ip_url.replace("http://", "ws://")
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps([{"channel": "/meta/handshake"}]))
        client_id = json.loads(await ws.recv())[0]["clientId"]
        await ws.send(json.dumps([connect_message(client_id, id="1")]))
        await ws.recv()
        await ws.send(json.dumps([connect_message(client_id, id="2")]))
        await connects_held(server)
        await server.context.send_to_client("/x", client_id, "hello")
        # The message comes with the connect reply, in one frame, not pushed on its own.
        frame = json.loads(await asyncio.wait_for(ws.recv(), 3))
        assert frame[0] == {"channel": "/x", "data": "hello"}
        assert frame[1]["channel"] == "/meta/connect" and frame[1]["id"] == "2"


async def test_a_held_connect_over_websocket_sends_nothing_before_its_reply(
    serve: ServeFactory,
) -> None:
    server = await serve(LongPollingServiceContextBuilder().timeout(30))
    server.context.add_extension(Extension())
    async with socket(server) as ws:
        client_id = await ws_session(ws, "/after")
        await ws.send(json.dumps([ws_connect(client_id, "held")]))
        await connects_held(server)
        await server.context.send("/after", 1)
        # The first frame since the connect is the pushed message, as on the fast path.
        assert await receive(ws) == [{"channel": "/after", "data": 1}]


class Broken(Extension):
    """An extension with a bug in its outgoing hook."""

    def __init__(self) -> None:
        self.calls = 0

    async def outgoing(self, session: ServerSession | None, message: Message) -> bool:
        self.calls += 1
        raise RuntimeError("a bug in the extension")


@pytest.mark.parametrize("transport", ["long-polling", "websocket"])
async def test_a_failing_outgoing_extension_still_answers_a_held_connect(
    serve: ServeFactory, http: httpx.AsyncClient, transport: str, caplog: Any
) -> None:
    # The extension is added while the connect is held, so that on the native stack the
    # native protocol itself answers it (requests with hooks go to the ASGI path). Every path
    # answers alike, as CometD does: the failure is logged and the reply goes out without it.
    # Over WebSocket messages are pushed, and the held connect is answered at its timeout.
    server = await serve(LongPollingServiceContextBuilder().timeout(2))
    broken = Broken()
    if transport == "long-polling":
        client_id = await handshake(http, server.url)
        await post(http, server.url, connect_message(client_id, id="first"))
        held = asyncio.ensure_future(post(http, server.url, connect_message(client_id, id="h")))
        await until(lambda: server.context.stats()["held"] == 1, "the connect is held")
        server.context.add_extension(broken)
        await server.context.send_to_client("/x", client_id, "hello")
        reply = await asyncio.wait_for(held, 5)
    else:
        async with websockets.connect(server.ip_url.replace("http://", "ws://")) as ws:
            await ws.send(json.dumps([{"channel": "/meta/handshake"}]))
            client_id = json.loads(await ws.recv())[0]["clientId"]
            connect = {**connect_message(client_id, id="first"), "connectionType": "websocket"}
            await ws.send(json.dumps([connect]))
            await ws.recv()
            await ws.send(json.dumps([{**connect, "id": "h"}]))
            await until(lambda: server.context.stats()["held"] == 1, "the connect is held")
            server.context.add_extension(broken)
            await server.context.send_to_client("/x", client_id, "hello")
            frames: list[Message] = []
            while not any(m.get("id") == "h" for m in frames):
                frames += json.loads(await asyncio.wait_for(ws.recv(), 6))
            reply = frames
    assert {"channel": "/x", "data": "hello"} in reply, reply
    [connect_reply] = [m for m in reply if m.get("id") == "h"]
    assert connect_reply["channel"] == "/meta/connect" and connect_reply["successful"] is True
    assert broken.calls >= 1
    assert "extension hook" in caplog.text and "a bug in the extension" in caplog.text


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 5000 + b"]" * 5000,
        b'[{"channel":"/meta/connect","clientId":"\\ud800"}]',
        b'[{"channel":"/x","clientId":"\\ud800\\udfff\\ud800","data":1}]',
    ],
    ids=["deep-nesting", "lone-surrogate-connect", "lone-surrogate-publish"],
)
async def test_hooks_answer_bad_input_as_the_fast_path_does(
    serve: ServeFactory, http: httpx.AsyncClient, body: bytes
) -> None:
    server = await serve()
    fast = await http.post(server.url, content=body)
    server.context.add_extension(Extension())
    hooked = await http.post(server.url, content=body)
    assert hooked.status_code == fast.status_code < 500
    assert hooked.json() == fast.json()
