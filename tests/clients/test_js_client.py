"""End-to-end tests with the official CometD JavaScript client (9.x) that only it needs: the
effect of its ``appendMessageTypeToURL`` option, and its WebSocket transport with the
long-polling fallback. The scenarios every client runs over every transport are in
tests/clients/test_real_clients.py.

Each test drives one or more real clients in Node.js (see tests/support/drivers.py) against a
real uvicorn server. Waits are bounded and ordered by markers or server events, never by sleeps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from starlette.requests import Request

from starlette_cometd import (
    ClientId,
    LongPollingServiceContextBuilder,
    SessionAdded,
    Subscribe,
)
from support.client_steps import (
    CLIENT_ID,
    check_transport,
    client_pool,
    handshake,
    next_event,
    publish,
    subscribe,
    unsubscribe,
)
from support.drivers import JsClient, require_node
from support.servers import ServeFactory, Server

# appendMessageTypeToURL changes the URL of every meta request (/cometd/handshake, ...).
APPEND = pytest.mark.parametrize("append", [True, False], ids=["append", "no-append"])

# WebSocket, the client's default preference, with long-polling as its fallback.
WEBSOCKET = ["websocket", "long-polling"]

ClientFactory = Callable[..., Awaitable[JsClient]]


@pytest.fixture
async def clients(serve: ServeFactory) -> AsyncIterator[ClientFactory]:
    """``await clients(url, append=..., transports=...)`` starts a configured JS client. Depends
    on ``serve`` so that clients are closed (and disconnect) before the servers stop."""
    async with client_pool() as pool:

        async def start(
            url: str, append: bool = True, transports: list[str] | None = None
        ) -> JsClient:
            return await pool.start(JsClient(), url, append, transports=transports)

        yield start


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


async def test_websocket_is_used_when_offered(server: Server, clients: ClientFactory) -> None:
    require_node()
    client = await clients(server.url, transports=WEBSOCKET)
    await handshake(client)
    await client.expect("meta", listener="/meta/connect", successful=True)
    await check_transport(client, "websocket")


async def test_falls_back_to_long_polling_when_websocket_is_off(
    serve: ServeFactory, clients: ClientFactory
) -> None:
    require_node()
    builder = LongPollingServiceContextBuilder().timeout(2)
    server = await serve(builder.connection_types("long-polling", "callback-polling"))
    a = await clients(server.url, transports=WEBSOCKET)
    b = await clients(server.url, transports=WEBSOCKET)
    for client in (a, b):
        # The WebSocket handshake fails (the upgrade is refused); the retry uses long-polling.
        await client.send({"cmd": "handshake"})
        await client.expect("meta", listener="/meta/handshake", successful=True)
    await a.expect("meta", listener="/meta/connect", successful=True)
    await check_transport(a, "long-polling")
    await subscribe(a, "/fallback")
    for i in range(5):
        await publish(b, "/fallback", {"seq": i})
    got = await a.messages(5, channel="/fallback")
    assert [m["data"]["seq"] for m in got] == list(range(5))


@pytest.mark.parametrize("transports", [["long-polling"], WEBSOCKET], ids=["http", "websocket"])
async def test_a_subscribe_refused_at_a_limit_may_be_asked_again(
    serve: ServeFactory, clients: ClientFactory, transports: list[str]
) -> None:
    # The refusal names its subscription, so the client drops the one it had added locally;
    # otherwise it would take the channel for subscribed and never ask the server again.
    require_node()
    builder = LongPollingServiceContextBuilder().timeout(2).max_subscriptions_per_session(1)
    server = await serve(builder)
    client = await clients(server.url, transports=transports)
    await handshake(client)
    await client.expect("meta", listener="/meta/connect", successful=True)
    await subscribe(client, "/a")
    await client.send({"cmd": "subscribe", "channel": "/b"})
    refused = await client.expect("subscribed", channel="/b")
    assert refused["successful"] is False
    assert refused["error"] == "403:too_many_subscriptions:subscribe_denied"
    await unsubscribe(client, "/a")
    await subscribe(client, "/b")
    await server.context.send("/b", "room at last")
    [message] = await client.messages(1, channel="/b")
    assert message["data"] == "room at last"
