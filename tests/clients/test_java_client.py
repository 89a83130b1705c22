"""End-to-end tests with the CometD Java client (8.0, on Jetty 12) that only it needs: the URL
it handshakes on and the transport it reports, over long-polling and WebSocket. The scenarios
every client runs over every transport are in tests/clients/test_real_clients.py.

Each test drives a real ``BayeuxClient`` in a JVM (tests/java, see
tests/support/drivers.py) against a real uvicorn server. Waits are bounded and ordered by
server events, never by sleeps.

The jar is built by ``mvn -q -f tests/java package``; without it (or without java) the tests
skip, or fail when STARLETTE_COMETD_REQUIRE_CLIENTS=1. The WebSocket variants also check at
run time that the server's handshake offers ``websocket``, under the same rule.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from starlette.requests import HTTPConnection

from starlette_cometd import LongPollingServiceContextBuilder, SessionAdded, Subscribe
from support.client_steps import (
    CLIENT_ID,
    client_pool,
    handshake,
    next_event,
    settled_status,
    subscribe,
)
from support.drivers import JavaClient, require
from support.servers import ServeFactory, Server

TRANSPORTS = pytest.mark.parametrize("transport", ["long-polling", "websocket"])

ClientFactory = Callable[[Server, str], Awaitable[JavaClient]]


@pytest.fixture
async def clients(serve: ServeFactory) -> AsyncIterator[ClientFactory]:
    """``await clients(server, transport)`` starts a configured Java client that uses only
    ``transport``. Depends on ``serve`` so that clients are closed (and disconnect) before the
    servers stop."""
    async with client_pool() as pool:

        async def start(server: Server, transport: str) -> JavaClient:
            client = JavaClient()
            require(client.name, client.missing())
            if transport != "long-polling":
                await pool.require_offered(server.url, client.name, transport)
            return await pool.start(client, server.url, transports=[transport])

        yield start


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
    # The Java client calls its listeners before it moves to the state the reply leads to
    # (CONNECTING to CONNECTED), so a status asked for right after may still show the state
    # before.
    state = await settled_status(client, "status", "connected")
    assert state["transport"] == transport, state

    await subscribe(client, "/h")
    subscribed = await next_event(rx, Subscribe, client_id)
    assert subscribed.channels == ("/h",)
