"""End-to-end tests with Faye's Node.js client (npm ``faye`` 1.4) that only it needs: its lazy
handshake, over long-polling and websocket. The scenarios every client runs over every
transport are in tests/clients/test_real_clients.py.

Each test drives a real Faye client (see tests/support/drivers.py and
tests/js/faye_driver.mjs) against a real uvicorn server. Waits are bounded and ordered by
server events, never by sleeps.

The websocket parameter lets Faye upgrade after its handshake (Faye always handshakes over
HTTP). Where the server does not offer ``websocket`` in its handshake reply the parameter is
skipped, or fails when STARLETTE_COMETD_REQUIRE_CLIENTS=1 (CI).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from starlette_cometd import ClientId, SessionAdded
from support.client_steps import client_pool, handshake, next_event, settled_status, status
from support.drivers import FayeClient
from support.servers import ServeFactory, Server

TRANSPORTS = pytest.mark.parametrize("transport", ["long-polling", "websocket"])

ClientFactory = Callable[[Server], Awaitable[FayeClient]]


@pytest.fixture
async def clients(serve: ServeFactory, transport: str) -> AsyncIterator[ClientFactory]:
    """``await clients(server)`` starts a configured Faye client on the test's ``transport``.
    Depends on ``serve`` so that clients are closed (and disconnect) before the servers stop."""
    async with client_pool() as pool:

        async def start(server: Server) -> FayeClient:
            client = FayeClient()
            if transport != "long-polling":
                await pool.require_offered(server.url, client.name, transport)
            # Faye always handshakes over HTTP, so websocket needs long-polling too. Faye
            # retries a failed request after 1 s, not its default 5 s.
            transports = [transport, "long-polling"] if transport != "long-polling" else None
            return await pool.start(client, server.url, transports=transports, options={"retry": 1})

        yield start


@TRANSPORTS
async def test_handshake(server: Server, clients: ClientFactory, transport: str) -> None:
    client = await clients(server)
    rx = server.context.rx()

    # Faye handshakes lazily; the driver's handshake command makes it handshake now.
    client_id = await handshake(client)
    # Faye opens its websocket after the handshake and switches to it once it is up.
    await settled_status(client, "connectionType", transport)

    added = await next_event(rx, SessionAdded, client_id)
    assert added.client_id == ClientId(client_id)
    info = server.context.session_info(client_id)
    assert info is not None
    # Faye's first /meta/connect follows the handshake by itself.
    connect = await client.expect("meta", listener="/meta/connect")
    assert connect["successful"], connect
    assert connect["clientId"] == client_id
    assert (await status(client))["status"] == "connected"
