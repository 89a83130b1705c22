"""Fixtures: a real uvicorn server on a free loopback port, serving a CometD context, on both
stacks. Helpers live in tests/support."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from starlette_cometd import (
    CometdRoute,
    LongPollingServiceContext,
    LongPollingServiceContextBuilder,
    RouterBuilder,
    native_http_protocol,
)
from support.servers import ServeFactory, Server, free_port, start_uvicorn, stop_uvicorn


@pytest.fixture(params=["asgi", "native"])
async def serve(request: pytest.FixtureRequest) -> AsyncIterator[ServeFactory]:
    """``await serve(builder=..., router=..., data=..., wrap=...)`` starts a server and returns
    it; every server is stopped at the end of the test. ``wrap`` wraps the CometD ASGI app, to
    inject faults such as a slow network.

    Every test using it runs twice: on uvicorn's own HTTP protocol (``asgi``, as an app mounted
    in Starlette is served) and on :func:`native_http_protocol` (``native``, as the CLI serves)."""
    stack: str = request.param
    running: list[tuple[uvicorn.Server, asyncio.Task[None], LongPollingServiceContext]] = []

    async def start(
        builder: LongPollingServiceContextBuilder | None = None,
        router: RouterBuilder | None = None,
        data: Any = None,
        path: str = "/cometd",
        wrap: Callable[[Any], Any] | None = None,
    ) -> Server:
        context = (builder or LongPollingServiceContextBuilder()).build()
        router = router or RouterBuilder()
        app = (
            router.build(context)
            if data is None
            else router.build_with_additional_data(context, data)
        )
        http: Any = "auto"
        if stack == "native":
            if wrap is not None:
                pytest.skip("faults are injected around the ASGI app, which the native path skips")
            http = native_http_protocol(app, path)
        if wrap is not None:
            app = wrap(app)  # fault injection between the server and the app
        starlette = Starlette(routes=[CometdRoute(path, app)], lifespan=context.lifespan)
        port = free_port()
        server, task = await start_uvicorn(starlette, port, http)
        running.append((server, task, context))
        return Server(context, port, path)

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
