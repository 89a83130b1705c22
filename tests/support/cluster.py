"""Clusters for the tests: several server processes sharing one Redis, behind a round-robin
proxy that gives each new connection to the next one, as a load balancer without sticky
sessions does. ``cli_cluster`` runs the standalone server (the native stack) as processes;
``asgi_cluster`` runs nodes in this process on uvicorn's own protocol (the ASGI stack). Both take
the URL of a Redis, or the URLs of a Redis Cluster's nodes: node ``i`` is given the ``i``-th
(round the list), as processes told of different nodes of one Redis Cluster are."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from redis.asyncio import Redis
from starlette.applications import Starlette

from starlette_cometd import (
    CometdRoute,
    LongPollingServiceContext,
    LongPollingServiceContextBuilder,
    RouterBuilder,
)

from .cli import start_cli, stop_cli, wait_listening
from .round_robin import RoundRobinProxy
from .servers import free_port, start_uvicorn, stop_uvicorn

Message = dict[str, Any]


@dataclass
class Cluster:
    """The proxy in front and the nodes behind it (their ports, in order)."""

    proxy: RoundRobinProxy
    ports: list[int]
    processes: list[asyncio.subprocess.Process] = field(default_factory=list)
    contexts: list[LongPollingServiceContext] = field(default_factory=list)
    #: The command line options each process was started with (``cli_cluster``).
    options: list[tuple[str, ...]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.proxy.port}/cometd"

    def node_url(self, node: int) -> str:
        return f"http://127.0.0.1:{self.ports[node]}/cometd"

    async def kill(self, node: int) -> None:
        """``kill -9`` of a node process; new connections skip it from now on."""
        process = self.processes[node]
        process.send_signal(signal.SIGKILL)
        await process.wait()
        self.proxy.take_out(self.ports[node])

    async def restart(self, node: int) -> None:
        """Starts a node process killed before again, on its port, and gives it new
        connections once it listens. Should something else have taken the port meanwhile (it
        is an ephemeral one: any outgoing connection may get it), on another."""
        assert self.processes[node].returncode is not None, "still running"
        for attempt in range(3):
            port = self.ports[node] if attempt == 0 else free_port()
            self.processes[node] = process = await start_cli(port, *self.options[node])
            try:
                await wait_listening(f"http://127.0.0.1:{port}/cometd", process)
            except AssertionError:
                if process.returncode is None or attempt == 2:
                    raise
                continue  # it exited: the port was taken
            if port != self.ports[node]:
                self.proxy.move(self.ports[node], port)
                self.ports[node] = port
            self.proxy.put_back(port)
            return


def _urls(redis_url: str | Sequence[str], size: int) -> list[str]:
    urls = [redis_url] if isinstance(redis_url, str) else list(redis_url)
    return [urls[node % len(urls)] for node in range(size)]


@asynccontextmanager
async def cli_cluster(
    redis_url: str | Sequence[str], size: int = 3, *args: str
) -> AsyncIterator[Cluster]:
    """``size`` standalone server processes with ``--redis redis_url`` behind the proxy."""
    ports = [free_port() for _ in range(size)]
    processes: list[asyncio.subprocess.Process] = []
    proxy = RoundRobinProxy(ports)
    options = [
        ("--redis", url, "--max-sessions-per-address", "0", "--log-level", "warning", *args)
        for url in _urls(redis_url, size)
    ]
    try:
        for port, node_options in zip(ports, options, strict=True):
            processes.append(await start_cli(port, *node_options))
        for port, process in zip(ports, processes, strict=True):
            await wait_listening(f"http://127.0.0.1:{port}/cometd", process)
        await proxy.start()
        yield Cluster(proxy, ports, processes, options=options)
    finally:
        await proxy.close()
        await asyncio.gather(*(stop_cli(process) for process in processes))


@asynccontextmanager
async def asgi_cluster(
    redis_url: str | Sequence[str],
    size: int = 3,
    builder: Callable[[], LongPollingServiceContextBuilder] = LongPollingServiceContextBuilder,
    *,
    partitions: int = 1,
    per_address: int | None = None,
) -> AsyncIterator[Cluster]:
    """``size`` nodes in this process, each its own context and uvicorn server on uvicorn's
    own HTTP protocol, sharing the Redis at ``redis_url``, behind the proxy. Every client of a
    test comes from one address: its sessions are not limited by it, unless ``per_address``."""
    ports = [free_port() for _ in range(size)]
    running: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []
    contexts = []
    proxy = RoundRobinProxy(ports)
    try:
        for port, url in zip(ports, _urls(redis_url, size), strict=True):
            redis = builder().redis(url, partitions=partitions)
            context = redis.max_sessions_per_address(per_address).build()
            app = Starlette(
                routes=[CometdRoute("/cometd", RouterBuilder().build(context))],
                lifespan=context.lifespan,
            )
            running.append(await start_uvicorn(app, port, "httptools"))
            contexts.append(context)
        await proxy.start()
        yield Cluster(proxy, ports, contexts=contexts)
    finally:
        await proxy.close()
        for context in contexts:
            context.begin_shutdown()
        for server, task in running:
            await stop_uvicorn(server, task)


class Client:
    """A Bayeux client over long-polling that opens a new connection for every request, so
    that behind the proxy each request reaches another node. It keeps its cookie."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.cookies: dict[str, str] = {}
        self.client_id = ""

    async def send(self, *messages: Message, timeout: float = 30) -> list[Message]:
        headers = {"connection": "close"}
        async with httpx.AsyncClient(cookies=self.cookies, timeout=timeout) as http:
            response = await http.post(self.url, json=list(messages), headers=headers)
        assert response.status_code == 200, response.text
        self.cookies.update(dict(response.cookies))
        reply: list[Message] = response.json()
        return reply

    async def handshake(self, **fields: Any) -> Message:
        [reply] = await self.send(
            {
                "channel": "/meta/handshake",
                "version": "1.0",
                "supportedConnectionTypes": ["long-polling"],
                **fields,
            }
        )
        if reply["successful"]:
            self.client_id = reply["clientId"]
        return reply

    async def subscribe(self, *channels: str) -> list[Message]:
        return await self.send(
            *(
                {"channel": "/meta/subscribe", "clientId": self.client_id, "subscription": c}
                for c in channels
            )
        )

    async def publish(self, channel: str, data: Any) -> Message:
        [reply] = await self.send({"channel": channel, "clientId": self.client_id, "data": data})
        return reply

    async def connect(self, **fields: Any) -> tuple[Message, list[Message]]:
        """One connect: its reply, and the messages delivered with it."""
        replies = await self.send(
            {
                "channel": "/meta/connect",
                "clientId": self.client_id,
                "connectionType": "long-polling",
                **fields,
            }
        )
        [reply] = [r for r in replies if r["channel"] == "/meta/connect"]
        return reply, [r for r in replies if r["channel"] != "/meta/connect"]


# The key of a session's record in Redis (the default prefix; see cluster/keys.py): its field
# "n" names the process that serves the session now.
SESSION_KEY = "cometd:{{s:{}}}"


async def serving_node(redis: Redis, client_id: str) -> str:
    """The process that serves a session now, as its record in Redis says (``redis`` decodes
    replies: the ``redis`` fixture)."""
    node = await redis.hget(SESSION_KEY.format(client_id), "n")
    assert isinstance(node, str), f"no record of session {client_id}"
    return node


async def leave_without_ending(context: LongPollingServiceContext) -> None:
    """A node leaves the cluster without ending its sessions, as a process killed would. It is
    taken from its context first, so that the context, which goes on running, does nothing
    more in Redis (such as ending a session itself) while the node stops."""
    node = context.cluster
    assert node is not None
    context.cluster = None
    await node.stop()


async def gather_until(client: Client, count: int, seconds: float = 20) -> list[Message]:
    """Connects again and again until ``count`` messages came, or ``seconds`` passed."""
    received: list[Message] = []
    deadline = asyncio.get_running_loop().time() + seconds
    while len(received) < count and asyncio.get_running_loop().time() < deadline:
        reply, messages = await client.connect()
        assert reply["successful"] is True, reply
        received += messages
    return received
