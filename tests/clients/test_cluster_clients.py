"""Every real client against a cluster (issue 11): three standalone server processes sharing a
Redis, behind the round-robin proxy of tests/support/round_robin.py, which gives each new
connection to the next process as a load balancer without sticky sessions would.

Each client kind (the CometD JS and Java clients, Faye's Node client, aiocometd) runs one
scenario over long-polling and over WebSocket: a subscriber on a plain channel and a wildcard
receives, exactly once and in order, what a publisher of its own kind and a raw client (a new
connection per request, so on every process in turn) publish; then it disconnects, and the
cluster forgets its session. What the proxy routed and which process Redis says serves each
session are checked rather than assumed: over long-polling the real clients' requests reach
more than one process; over WebSocket the subscriber's session stays on its socket's process
while the raw publisher's requests reach the others.

Waits are bounded and end on markers: each publisher ends with a marker on its channel, and a
session gets a channel's messages in the order they were published, so when both markers are
in, everything published before them is in too (and a duplicate would have taken a marker's
place in the count).

A client that is not installed skips, or fails when STARLETTE_COMETD_REQUIRE_CLIENTS=1 (CI).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import pytest
from redis.asyncio import Redis

from support.client_steps import (
    ClientPool,
    Mode,
    client_pool,
    handshake_in_mode,
    publish,
    subscribe,
)
from support.cluster import SESSION_KEY, Client, Cluster, cli_cluster, serving_node
from support.drivers import DriverClient, require

try:
    from aiocometd_noloop import Client as AioClient  # type: ignore[import-untyped]
    from aiocometd_noloop import ConnectionType
except ImportError:
    AIOCOMETD_MISSING: str | None = "aiocometd-noloop is not installed"
else:
    AIOCOMETD_MISSING = None

# Every wait in this module is bounded by this many seconds.
WAIT = 20.0
# How long messages may take to arrive: well under the CLI's connect timeout (20 s), since a
# held connect must be answered when messages come for it, not when it times out.
DELIVERY = 8.0
# Messages each publisher sends before its marker.
COUNT = 15
PLAIN, WILDCARD, RAW_CHANNEL = "/cluster/room", "/cluster/w/*", "/cluster/w/raw"

KINDS = ["js", "java", "faye", "aiocometd"]
TRANSPORTS = ["long-polling", "websocket"]


class Party(Protocol):
    """One real client, as the scenario drives it."""

    client_id: str

    async def subscribe(self, channel: str) -> None: ...

    async def publish(self, channel: str, data: Any) -> None: ...

    async def messages(self, count: int) -> list[tuple[str, Any]]:
        """The next ``count`` messages received: (channel, data)."""
        ...

    async def disconnect(self) -> None: ...


@dataclass
class DriverParty:
    """A client run by a driver program (CometD JS or Java, Faye)."""

    client: DriverClient
    client_id: str

    async def subscribe(self, channel: str) -> None:
        await subscribe(self.client, channel)

    async def publish(self, channel: str, data: Any) -> None:
        await publish(self.client, channel, data, timeout=WAIT)

    async def messages(self, count: int) -> list[tuple[str, Any]]:
        got = await self.client.messages(count, timeout=DELIVERY)
        return [(m["channel"], m["data"]) for m in got]

    async def disconnect(self) -> None:
        await self.client.send({"cmd": "disconnect"})
        reply = await self.client.expect("disconnected", timeout=WAIT)
        assert reply["successful"], reply


@dataclass
class AioParty:
    """An aiocometd client."""

    client: Any
    client_id: str

    async def subscribe(self, channel: str) -> None:
        await self.client.subscribe(channel)

    async def publish(self, channel: str, data: Any) -> None:
        # Raises unless the server answers successfully.
        await self.client.publish(channel, data)

    async def messages(self, count: int) -> list[tuple[str, Any]]:
        async def take() -> list[tuple[str, Any]]:
            received = [await self.client.receive() for _ in range(count)]
            return [(m["channel"], m["data"]) for m in received]

        return await asyncio.wait_for(take(), DELIVERY)

    async def disconnect(self) -> None:
        await self.client.close()


PartyFactory = Callable[[], Awaitable[Party]]


@pytest.fixture
async def cluster(redis_url: str) -> AsyncIterator[Cluster]:
    async with cli_cluster(redis_url, 3) as running:
        yield running


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


async def start_driver(pool: ClientPool, mode: Mode, url: str) -> Party:
    client = await pool.start_in_mode(mode, url)
    return DriverParty(client, await handshake_in_mode(client, mode))


async def start_aiocometd(opened: list[Any], websocket: bool, url: str) -> Party:
    require("aiocometd", AIOCOMETD_MISSING)
    types = [ConnectionType.LONG_POLLING]
    if websocket:
        types.insert(0, ConnectionType.WEBSOCKET)
    client = AioClient(url, types, connection_timeout=WAIT)
    opened.append(client)
    await client.open()
    assert client.connection_type is types[0]
    # aiocometd keeps the client id on its transport only.
    return AioParty(client, client._transport.client_id)


@pytest.fixture
async def parties(cluster: Cluster, kind: str, transport: str) -> AsyncIterator[PartyFactory]:
    """``await parties()`` starts a client of the test's kind on its transport, through the
    proxy, handshaken. Depends on ``cluster`` so that clients close before the servers stop."""
    opened: list[Any] = []
    async with client_pool() as pool:

        async def start() -> Party:
            if kind == "aiocometd":
                # aiohttp's cookie jar drops cookies from IP-address hosts: name localhost.
                url = f"http://localhost:{cluster.proxy.port}/cometd"
                return await start_aiocometd(opened, transport == "websocket", url)
            return await start_driver(pool, Mode(kind, transport), cluster.url)

        yield start
        for client in opened:
            await client.close()


async def test_delivery_across_processes(
    cluster: Cluster, parties: PartyFactory, redis: Redis, kind: str, transport: str
) -> None:
    first_routed = len(cluster.proxy.routed)
    subscriber = await parties()
    await subscriber.subscribe(PLAIN)
    await subscriber.subscribe(WILDCARD)
    subscriber_node = await serving_node(redis, subscriber.client_id)
    publisher = await parties()
    real_clients_routed = cluster.proxy.routed[first_routed:]

    raw = Client(cluster.url)
    assert (await raw.handshake())["successful"] is True
    raw_backends = set()
    for seq in [*range(COUNT), "end"]:
        await publisher.publish(PLAIN, {"seq": seq})
        routed = len(cluster.proxy.routed)
        reply = await raw.publish(RAW_CHANNEL, {"seq": seq})
        assert reply["successful"] is True, reply
        raw_backends.add(cluster.proxy.routed[routed])

    got = await subscriber.messages(2 * (COUNT + 1))
    expected = [{"seq": seq} for seq in [*range(COUNT), "end"]]
    assert [data for channel, data in got if channel == PLAIN] == expected
    assert [data for channel, data in got if channel == RAW_CHANNEL] == expected

    # The raw client's requests (each on a new connection) went to every process.
    assert len(raw_backends) == 3, raw_backends
    if transport == "websocket":
        # The subscriber's session stayed on its socket's process, and got what was
        # published on the others.
        assert await serving_node(redis, subscriber.client_id) == subscriber_node
    else:
        # The real clients' own connections reached more than one process.
        assert len(set(real_clients_routed)) > 1, real_clients_routed

    key = SESSION_KEY.format(subscriber.client_id)
    assert await redis.exists(key) == 1
    await subscriber.disconnect()
    # The session is gone from the whole cluster, not just from the process that answered
    # (aiocometd closes its socket without waiting for the reply: wait for the record to go).
    for _ in range(100):
        if await redis.exists(key) == 0:
            break
        await asyncio.sleep(0.05)
    assert await redis.exists(key) == 0, await redis.hgetall(key)
