"""The replay extension (issue 12) with jsforce 3, the Node.js client of Salesforce's Streaming
API: its Faye client and ``StreamingExtension.Replay``, unchanged, against a server mounted
where jsforce looks (``/cometd/50.0``), over long-polling and websocket.

A client that was away comes back with the last id it saw (as jsforce keeps it, from
``data.event.replayId``) and gets what was published meanwhile, once, in order, then live
messages; an id the server cannot replay after is refused in Salesforce's words, which jsforce
passes on as the subscription's error."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from starlette_cometd import LongPollingServiceContextBuilder
from support.client_steps import client_pool, handshake, status, subscribe
from support.drivers import JsforceClient
from support.servers import ServeFactory, Server

PATH = "/cometd/50.0"
CHANNEL = "/chat/room"

Start = Callable[[int], Awaitable[JsforceClient]]


@pytest.fixture
async def server(serve: ServeFactory) -> Server:
    builder = LongPollingServiceContextBuilder().timeout(2).history("/chat/**", size=100)
    return await serve(builder, path=PATH)


@pytest.fixture(params=["long-polling", "websocket"])
async def start(request: pytest.FixtureRequest, server: Server) -> AsyncIterator[Start]:
    """``await start(replay_id)``: a jsforce client replaying ``CHANNEL`` from ``replay_id``."""
    transport: str = request.param
    async with client_pool() as pool:

        async def started(replay_id: int) -> JsforceClient:
            client = JsforceClient(f"http://localhost:{server.port}", CHANNEL, replay_id)
            if transport != "long-polling":
                await pool.require_offered(server.url, client.name, transport)
            transports = [transport, "long-polling"] if transport != "long-polling" else None
            return await pool.start(client, server.url, transports=transports)

        yield started


async def received(client: JsforceClient, count: int) -> list[dict[str, Any]]:
    """The data of the next ``count`` messages the client receives."""
    return [event["data"] for event in await client.messages(count)]


async def test_jsforce_gets_what_it_missed_then_live_messages(server: Server, start: Start) -> None:
    for n in range(5):
        await server.context.send(CHANNEL, {"n": n})
    first = await start(-2)  # everything retained
    await handshake(first)
    await subscribe(first, CHANNEL)
    seen = await received(first, 5)
    await server.context.send(CHANNEL, {"n": 5})
    seen += await received(first, 1)
    assert [d["n"] for d in seen] == list(range(6)), "once each, in order, then live"
    ids = [d["event"]["replayId"] for d in seen]
    assert ids == list(range(ids[0], ids[0] + 6))
    # jsforce keeps the last id it saw, to replay from next time.
    assert (await status(first))["replay"] == ids[-1]

    # Away: what is published meanwhile waits in the history.
    await first.close()
    for n in range(6, 9):
        await server.context.send(CHANNEL, {"n": n})
    back = await start(ids[-1])
    await handshake(back)
    await subscribe(back, CHANNEL)
    await server.context.send(CHANNEL, {"n": 9})
    assert [d["n"] for d in await received(back, 4)] == [6, 7, 8, 9]


async def test_jsforce_is_told_when_its_id_cannot_be_replayed(start: Start) -> None:
    client = await start(5)  # no id this server gave
    await handshake(client)
    await client.send({"cmd": "subscribe", "channel": CHANNEL})
    reply = await client.expect("subscribed", channel=CHANNEL)
    assert reply["successful"] is False
    assert reply["error"] == (
        "400::The replayId {5} you provided was invalid.  Please provide a valid ID, -2 to replay"
        " all events, or -1 to replay only new events."
    )
