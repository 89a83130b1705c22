"""The replay extension (issue 12) with the CometD Java client and a replay extension that
behaves as Salesforce's Java connector (EMP-Connector) does: it asks on the handshake, and once
agreed sends the whole map of the channels it tracks with every subscribe, including channels
that subscribe is not for (the server passes those over). Over long-polling and websocket."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from starlette_cometd import LongPollingServiceContextBuilder
from support.client_steps import client_pool, handshake, status, subscribe
from support.drivers import JavaReplayClient
from support.servers import ServeFactory, Server

Start = Callable[[dict[str, int]], Awaitable[JavaReplayClient]]


@pytest.fixture
async def server(serve: ServeFactory) -> Server:
    builder = LongPollingServiceContextBuilder().timeout(2).history("/topic/**", size=100)
    return await serve(builder)


@pytest.fixture(params=["long-polling", "websocket"])
async def start(request: pytest.FixtureRequest, server: Server) -> AsyncIterator[Start]:
    transport: str = request.param
    async with client_pool() as pool:

        async def started(replay_from: dict[str, int]) -> JavaReplayClient:
            client = JavaReplayClient(replay_from)
            if transport != "long-polling":
                await pool.require_offered(server.url, client.name, transport)
            return await pool.start(client, server.url, transports=[transport])

        yield started


async def received(client: JavaReplayClient, count: int) -> list[tuple[str, Any]]:
    return [(event["channel"], event["data"]) for event in await client.messages(count)]


async def test_an_emp_style_client_replays_each_topic_from_its_last_id(
    server: Server, start: Start
) -> None:
    for n in range(3):
        await server.context.send("/topic/a", {"n": n})
    await server.context.send("/topic/b", {"n": 0})
    client = await start({"/topic/a": -2, "/topic/b": -1})
    await handshake(client)
    assert (await status(client))["replaySupported"] is True
    # Each subscribe carries both topics: /topic/a replays all, /topic/b only new ones.
    await subscribe(client, "/topic/a")
    await subscribe(client, "/topic/b")
    await server.context.send("/topic/b", {"n": 1})
    messages = await received(client, 4)
    assert [(channel, data["n"]) for channel, data in messages[:3]] == [
        ("/topic/a", n) for n in range(3)
    ]
    assert messages[3][0] == "/topic/b" and messages[3][1]["n"] == 1
    last = (await status(client))["replay"]
    assert last == {
        "/topic/a": messages[2][1]["event"]["replayId"],
        "/topic/b": messages[3][1]["event"]["replayId"],
    }

    # Away, then back with the ids it kept: what it missed on each topic, once.
    await client.close()
    await server.context.send("/topic/a", {"n": 3})
    await server.context.send("/topic/b", {"n": 2})
    back = await start(last)
    await handshake(back)
    await subscribe(back, "/topic/a")
    await subscribe(back, "/topic/b")
    again = await received(back, 2)
    assert sorted((channel, data["n"]) for channel, data in again) == [
        ("/topic/a", 3),
        ("/topic/b", 2),
    ]
