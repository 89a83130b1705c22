"""The round-robin proxy the cluster tests put in front of several server processes: new
connections alternate between real ``starlette-cometd`` processes, a taken-out backend is
skipped, and long bodies, WebSockets and half-closed connections pass through unharmed."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import string
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import websockets

from support.bayeux import Message, connect_message, handshake, post, subscribe
from support.cli import start_cli, stop_cli, wait_listening
from support.cluster import cli_cluster
from support.round_robin import RoundRobinProxy
from support.servers import free_port
from support.ws_client import exchange, receive, ws_session


@asynccontextmanager
async def cli_servers(count: int) -> AsyncIterator[list[tuple[int, asyncio.subprocess.Process]]]:
    """``count`` standalone servers, each its own process on its own port, at ``/cometd``."""
    started: list[tuple[int, asyncio.subprocess.Process]] = []
    try:
        for _ in range(count):
            port = free_port()
            process = await start_cli(port, "--log-level", "warning")
            started.append((port, process))
        for port, process in started:
            await wait_listening(endpoint(port), process)
        yield started
    finally:
        for _, process in started:
            await stop_cli(process)


def endpoint(port: int) -> str:
    return f"http://127.0.0.1:{port}/cometd"


async def home(http: httpx.AsyncClient, client_id: str, backends: list[int]) -> int:
    """The backend that knows the session: a subscribe sent directly to each backend succeeds
    on that one and gets 402::session_unknown on the others."""
    knowing = []
    for port in backends:
        [reply] = await post(
            http,
            endpoint(port),
            {"channel": "/meta/subscribe", "clientId": client_id, "subscription": "/where"},
        )
        if reply["successful"]:
            knowing.append(port)
        else:
            assert reply["error"] == "402::session_unknown", reply
    assert len(knowing) == 1, (client_id, knowing)
    return knowing[0]


async def test_new_connections_alternate_between_two_server_processes() -> None:
    async with cli_servers(2) as servers, RoundRobinProxy([p for p, _ in servers]) as proxy:
        backends = [port for port, _ in servers]
        homes = []
        for _ in range(6):
            # A new client for each session: a new connection, and a cookie jar that keeps the
            # session's BAYEUX_BROWSER cookie for the direct requests.
            async with httpx.AsyncClient(timeout=20) as http:
                client_id = await handshake(http, endpoint(proxy.port))
                homes.append(await home(http, client_id, backends))
        first, second = backends
        assert homes == [first, second] * 3
        assert proxy.routed == homes


async def test_a_backend_taken_out_is_skipped_by_new_connections() -> None:
    async with cli_servers(2) as servers, RoundRobinProxy([p for p, _ in servers]) as proxy:
        (first, _), (second, second_process) = servers
        await stop_cli(second_process)  # killed, say; the proxy is told so
        proxy.take_out(second)
        for _ in range(3):
            async with httpx.AsyncClient(timeout=20) as http:
                client_id = await handshake(http, endpoint(proxy.port))
                assert await home(http, client_id, [first]) == first
        assert proxy.routed == [first] * 3

        # With no backend left, a new connection is closed at once.
        proxy.take_out(first)
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()

        proxy.put_back(first)
        async with httpx.AsyncClient(timeout=20) as http:
            client_id = await handshake(http, endpoint(proxy.port))
            assert await home(http, client_id, [first]) == first


def text_of(size: int) -> str:
    return "".join(random.Random(size).choices(string.ascii_letters + string.digits, k=size))


async def test_a_long_body_passes_both_ways_unharmed() -> None:
    async with cli_servers(2) as servers, RoundRobinProxy([p for p, _ in servers]) as proxy:
        url = endpoint(proxy.port)
        data = {"text": text_of(700_000)}  # most of the server's 1 MiB limit on a body
        # One connection, kept alive: every request of it reaches the same backend.
        async with httpx.AsyncClient(timeout=20, limits=httpx.Limits(max_connections=1)) as http:
            client_id = await handshake(http, url)
            await subscribe(http, url, client_id, "/big")
            [published] = await post(
                http, url, {"channel": "/big", "clientId": client_id, "data": data}
            )
            assert published["successful"] is True, published
            replies = await post(http, url, connect_message(client_id, timeout=0))
        [delivered] = [reply for reply in replies if reply["channel"] == "/big"]
        assert delivered["data"] == data
        assert len(proxy.routed) == 1


async def test_a_websocket_passes_through_unharmed() -> None:
    async with cli_servers(2) as servers, RoundRobinProxy([p for p, _ in servers]) as proxy:
        url = f"ws://127.0.0.1:{proxy.port}/cometd"
        async with websockets.connect(url, open_timeout=5, max_size=None) as ws:
            client_id = await ws_session(ws, "/chat")
            for size in (10, 300_000):
                data = {"text": text_of(size)}
                await ws.send(
                    json.dumps([{"channel": "/chat", "clientId": client_id, "data": data}])
                )
                got: list[Message] = []
                while not (
                    any(m["channel"] == "/chat" and "data" in m for m in got)
                    and any(m["channel"] == "/chat" and "successful" in m for m in got)
                ):
                    got += await receive(ws)
                [delivered] = [m for m in got if "data" in m]
                assert delivered["data"] == data
            [disconnected] = await exchange(
                ws, {"channel": "/meta/disconnect", "clientId": client_id}
            )
            assert disconnected["successful"] is True
        assert len(proxy.routed) == 1


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def plain_backend(handler: Handler) -> AsyncIterator[int]:
    """A TCP server on a free loopback port that runs ``handler`` per connection, for what a
    CometD server never does on its own (answering after the client's half-close)."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_the_clients_half_close_is_passed_on_and_the_reply_still_comes_back() -> None:
    async def count_until_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # until EOF, which only a passed-on half-close brings
        writer.write(f"got {len(data)}".encode())
        await writer.drain()
        writer.close()

    async with plain_backend(count_until_eof) as port, RoundRobinProxy([port]) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"x" * 300_000)
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 5) == b"got 300000"
        writer.close()


async def test_the_backends_half_close_is_passed_on_and_the_client_may_still_send() -> None:
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def banner_then_listen(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(b"banner")
        writer.write_eof()
        received.set_result(await reader.read())
        writer.close()

    async with plain_backend(banner_then_listen) as port, RoundRobinProxy([port]) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await asyncio.wait_for(reader.read(), 5) == b"banner"
        writer.write(b"after your EOF")
        writer.write_eof()
        assert await asyncio.wait_for(received, 5) == b"after your EOF"
        writer.close()


async def test_a_node_restarted_on_a_port_taken_meanwhile_comes_back_on_another(
    redis_url: str,
) -> None:
    """A killed node's port is an ephemeral one: any connection may take it before the node
    restarts. It then comes back on another, and the proxy sends new connections there."""
    async with cli_cluster(redis_url, 2) as cluster:
        taken = cluster.ports[1]
        await cluster.kill(1)
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", taken))
            squatter.listen()
            await cluster.restart(1)
        assert cluster.ports[1] != taken
        assert cluster.proxy.backends == cluster.ports
        before = len(cluster.proxy.routed)
        for _ in range(4):
            async with httpx.AsyncClient(timeout=10) as http:  # a connection each
                await handshake(http, cluster.url)
        assert set(cluster.proxy.routed[before:]) == set(cluster.ports)
