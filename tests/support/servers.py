"""Running uvicorn on a free loopback port for a test, and what a test knows of a server."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from starlette_cometd import (
    CometdRoute,
    LongPollingServiceContext,
    LongPollingServiceContextBuilder,
    RouterBuilder,
    native_http_protocol,
)
from starlette_cometd.transports.native_http import CometdHttpProtocol


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    """A running server: its context, and URLs for clients. ``url`` uses ``localhost`` because
    aiohttp's cookie jar ignores cookies set by an IP-address host."""

    context: LongPollingServiceContext
    port: int
    path: str
    stack: str = "asgi"  # or "native": which protocol serves it (see the serve fixture)

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}{self.path}"

    @property
    def ip_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"


# ``await serve(builder=..., router=..., data=..., path=..., faults=...)``: see the ``serve``
# fixture in tests/conftest.py.
ServeFactory = Callable[..., Awaitable[Server]]

# How long uvicorn may take to start listening on a loaded machine.
START_TIMEOUT = 5.0


async def start_uvicorn(
    app: Any, port: int, http: Any = "auto"
) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    """Starts uvicorn serving ``app`` on ``port`` in a task; returns once it listens."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        http=http,
    )
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve())
    for _ in range(int(START_TIMEOUT / 0.01)):
        if server.started:
            return server, task
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    raise RuntimeError("uvicorn did not start")


async def stop_uvicorn(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    server.should_exit = True
    # Waited for without cancelling it (as wait_for would): a server slow to stop is then
    # told to stop at once, and a shutdown that still hangs fails here, by name.
    done, _ = await asyncio.wait({task}, timeout=10)
    if not done:
        server.force_exit = True
        await asyncio.wait_for(task, 10)
    task.result()


@asynccontextmanager
async def running(app: Any) -> AsyncIterator[int]:
    """Serves ``app`` with uvicorn on a free loopback port for the block; yields the port."""
    port = free_port()
    server, task = await start_uvicorn(app, port)
    try:
        yield port
    finally:
        await stop_uvicorn(server, task)


@asynccontextmanager
async def beside_cometd(context: LongPollingServiceContext, *routes: Any) -> AsyncIterator[str]:
    """An application serving ``routes`` (an operator's: health, metrics) beside the CometD
    endpoint at /cometd, on uvicorn's own protocol, for the block; yields its base URL."""
    app = Starlette(
        routes=[*routes, CometdRoute("/cometd", RouterBuilder().build(context))],
        lifespan=context.lifespan,
    )
    async with running(app) as port:
        yield f"http://127.0.0.1:{port}"


@dataclass
class NativeServer:
    """The endpoint and a plain route beside it, served by the native protocol."""

    context: LongPollingServiceContext
    port: int
    server: uvicorn.Server

    def protocols(self) -> list[CometdHttpProtocol]:
        """The connections the native protocol serves now."""
        connections = self.server.server_state.connections
        return [c for c in connections if isinstance(c, CometdHttpProtocol)]


@asynccontextmanager
async def native_server(
    builder: LongPollingServiceContextBuilder | None = None, native: bool = True
) -> AsyncIterator[NativeServer]:
    """The endpoint at ``/cometd`` and ``/hello``, which reads its whole body and says how
    long it was, on the native protocol (a 2 s connect timeout unless ``builder`` says); with
    ``native=False``, the same app on uvicorn's own protocol, to compare with."""
    context = (builder or LongPollingServiceContextBuilder().timeout(2)).build()
    cometd = RouterBuilder().build(context)

    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse(f"hello {request.method} {len(await request.body())}")

    app = Starlette(
        routes=[Route("/hello", hello, methods=["GET", "POST"]), CometdRoute("/cometd", cometd)],
        lifespan=context.lifespan,
    )
    port = free_port()
    http = native_http_protocol(cometd, "/cometd") if native else "httptools"
    server, task = await start_uvicorn(app, port, http)
    try:
        yield NativeServer(context, port, server)
    finally:
        context.begin_shutdown()
        await stop_uvicorn(server, task)
