"""Fixtures: a real uvicorn server on a free loopback port, serving a CometD context, on both
stacks; Redis servers and a Redis Cluster for the Redis engine. Helpers live in
tests/support."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.types import ASGIApp

from starlette_cometd import (
    CometdRoute,
    LongPollingServiceContext,
    LongPollingServiceContextBuilder,
    RouterBuilder,
    native_http_protocol,
)
from support.drivers import require
from support.faults import Faults, with_faults
from support.redis_servers import RedisCluster, RedisServer, redis_missing
from support.servers import ServeFactory, Server, free_port, start_uvicorn, stop_uvicorn


@pytest.fixture(params=["asgi", "native"])
async def serve(request: pytest.FixtureRequest) -> AsyncIterator[ServeFactory]:
    """``await serve(builder=..., router=..., data=..., path=..., faults=...)`` starts a server
    and returns it; every server is stopped at the end of the test. ``faults`` (a
    :class:`support.faults.Faults`) injects faults such as a slow network or lost replies.

    Every test using it runs twice: on uvicorn's own HTTP protocol (``asgi``, as an app mounted
    in Starlette is served; faults wrap the CometD ASGI app) and on :func:`native_http_protocol`
    (``native``, as the CLI serves; faults wrap each connection's transport)."""
    stack: str = request.param
    running: list[tuple[uvicorn.Server, asyncio.Task[None], LongPollingServiceContext]] = []

    async def start(
        builder: LongPollingServiceContextBuilder | None = None,
        router: RouterBuilder | None = None,
        data: Any = None,
        path: str = "/cometd",
        faults: Faults | None = None,
    ) -> Server:
        context = (builder or LongPollingServiceContextBuilder()).build()
        router = router or RouterBuilder()
        app = (
            router.build(context)
            if data is None
            else router.build_with_additional_data(context, data)
        )
        http: Any = "auto"
        served: ASGIApp = app
        if stack == "native":
            http = native_http_protocol(app, path)
            if faults is not None:
                http = with_faults(http, faults)
        elif faults is not None:
            served = faults.asgi(app)
        starlette = Starlette(routes=[CometdRoute(path, served)], lifespan=context.lifespan)
        port = free_port()
        server, task = await start_uvicorn(starlette, port, http)
        running.append((server, task, context))
        return Server(context, port, path, stack)

    yield start
    for server, task, context in running:
        context.begin_shutdown()
        await stop_uvicorn(server, task)


@pytest.fixture
async def server(serve: ServeFactory) -> Server:
    """A server with default settings but a short connect timeout, so tests stay quick."""
    return await serve(LongPollingServiceContextBuilder().timeout(2))


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis server of the test's own (it starts in some tens of milliseconds), which the
    test may stop and restart empty on the same port; stopped at the end of the test. Skips
    without redis-server (fails under STARLETTE_COMETD_REQUIRE_CLIENTS=1, as in CI)."""
    require("redis-server", redis_missing())
    # DEBUG SLEEP makes a slow Redis for the fault tests; only from loopback clients.
    server = RedisServer(tmp_path / "redis", None, "--enable-debug-command", "local")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """``redis://127.0.0.1:PORT/0`` of an empty Redis server of the test's own."""
    return redis_server.url


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """A client of that Redis, decoding replies, to see what a cluster records there."""
    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A three-node Redis Cluster shared by the session, since joining one takes seconds. A
    test that stops its nodes should start a RedisCluster of its own instead."""
    require("redis-server", redis_missing())
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_cluster_urls(redis_cluster: RedisCluster) -> list[str]:
    """The URLs of the shared Redis Cluster's three nodes, emptied (FLUSHALL) for the test."""
    redis_cluster.flush()
    return redis_cluster.urls
