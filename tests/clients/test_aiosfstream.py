"""The replay extension (issue 12) with aiosfstream 0.5 (PyPI), the asyncio client of
Salesforce's Streaming API, pointed at this server by an authenticator of its own: it stores a
replay marker (``data.event.replayId`` and ``createdDate``) for every message it receives, and
subscribes again from the marker it kept.

aiosfstream imports ``aiocometd``, whose last release calls ``asyncio.wait(loop=...)``, gone
since Python 3.10; the tests give it ``aiocometd_noloop`` (the same package with that fixed,
which the aiocometd tests use) under that name, before importing it."""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from starlette_cometd import LongPollingServiceContextBuilder
from support.servers import ServeFactory, Server

for _name in ("", ".exceptions", ".typing", ".constants", ".extensions"):
    sys.modules["aiocometd" + _name] = importlib.import_module("aiocometd_noloop" + _name)

from aiosfstream.auth import AuthenticatorBase  # noqa: E402
from aiosfstream.client import Client  # noqa: E402
from aiosfstream.replay import ReplayMarker, ReplayOption  # noqa: E402

PATH = "/cometd/45.0"  # where aiosfstream looks, after the instance URL
CHANNEL = "/topic/orders"
WAIT = 10.0


class LocalAuthenticator(AuthenticatorBase):
    """Says the instance is this test's server; there is nothing to log in to."""

    def __init__(self, instance_url: str) -> None:
        super().__init__()
        self._instance_url = instance_url

    async def _authenticate(self) -> tuple[int, dict[str, str]]:
        return 200, {
            "instance_url": self._instance_url,
            "access_token": "token",
            "token_type": "Bearer",
        }


@pytest.fixture
async def server(serve: ServeFactory) -> Server:
    builder = LongPollingServiceContextBuilder().timeout(2).history("/topic/**", size=100)
    return await serve(builder, path=PATH)


@pytest.fixture
def instance_url(server: Server) -> Iterator[str]:
    # localhost: aiohttp's cookie jar drops cookies from IP-address hosts.
    yield f"http://localhost:{server.port}"


async def receive(client: Any, count: int) -> list[dict[str, Any]]:
    async def take() -> list[dict[str, Any]]:
        return [await client.receive() for _ in range(count)]

    return await asyncio.wait_for(take(), WAIT)


async def test_aiosfstream_resumes_from_the_marker_it_stored(
    server: Server, instance_url: str
) -> None:
    for n in range(3):
        await server.context.send(CHANNEL, {"n": n})
    markers: dict[str, ReplayMarker] = {}
    async with Client(LocalAuthenticator(instance_url), replay=markers) as client:
        # No marker yet: aiosfstream asks for new events only, so nothing is replayed.
        await client.subscribe(CHANNEL)
        await server.context.send(CHANNEL, {"n": 3})
        [live] = await receive(client, 1)
        assert live["data"]["n"] == 3
    assert markers[CHANNEL].replay_id == live["data"]["event"]["replayId"]
    assert markers[CHANNEL].date == live["data"]["event"]["createdDate"]

    # Away: two more published; back with the marker, it gets exactly those, then live.
    for n in range(4, 6):
        await server.context.send(CHANNEL, {"n": n})
    async with Client(LocalAuthenticator(instance_url), replay=markers) as client:
        await client.subscribe(CHANNEL)
        await server.context.send(CHANNEL, {"n": 6})
        assert [m["data"]["n"] for m in await receive(client, 3)] == [4, 5, 6]


async def test_aiosfstream_falls_back_when_its_marker_cannot_be_replayed(
    server: Server, instance_url: str
) -> None:
    """A marker from another server (or from before this one restarted) is refused with
    Salesforce's 400, and aiosfstream subscribes again with its fallback: everything kept."""
    for n in range(2):
        await server.context.send(CHANNEL, {"n": n})
    stale = {CHANNEL: ReplayMarker(date="2020-01-01T00:00:00.000Z", replay_id=5)}
    authenticator = LocalAuthenticator(instance_url)
    async with Client(
        authenticator, replay=stale, replay_fallback=ReplayOption.ALL_EVENTS
    ) as client:
        await client.subscribe(CHANNEL)
        assert [m["data"]["n"] for m in await receive(client, 2)] == [0, 1]
