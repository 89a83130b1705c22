"""The native long-polling protocol (``native_http_protocol``) at the byte level: one connection
that mixes native requests with requests it hands to uvicorn, pipelining behind a held connect,
refusals, and a client that drops its held connect. Everything else about the endpoint runs on
both stacks through the ``serve`` fixture."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import websockets
from starlette.applications import Starlette
from websockets.typing import Subprotocol

from starlette_cometd import (
    CometdRoute,
    LongPollingServiceContext,
    LongPollingServiceContextBuilder,
    RouterBuilder,
    native_http_protocol,
)
from support import servers
from support.bayeux import connect_message, handshake, post, subscribe
from support.client_steps import until
from support.raw_http import HANDSHAKE, browser_cookie, raw
from support.servers import free_port, start_uvicorn

Message = dict[str, Any]


@asynccontextmanager
async def native_server(
    builder: LongPollingServiceContextBuilder | None = None,
) -> AsyncIterator[tuple[LongPollingServiceContext, int]]:
    """The shared native server, as these tests use it: its context and port."""
    async with servers.native_server(builder) as server:
        yield server.context, server.port


async def test_one_connection_mixes_native_and_handed_over_requests() -> None:
    async with native_server() as (_, port), raw(port) as conn:
        await conn.send(conn.post_bytes("/cometd", HANDSHAKE))
        status, headers, body = await conn.response()
        assert status == 200
        assert headers["content-type"].startswith("application/json")
        [reply] = json.loads(body)
        assert reply["successful"] is True
        cookie = browser_cookie(headers)
        # A request for another route on the same connection goes to the Starlette app...
        await conn.send(b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\n")
        status, _, body = await conn.response()
        assert (status, body) == (200, b"hello GET 0")
        # ...and so does everything after it on this connection, CometD requests included.
        batch = json.dumps([connect_message(reply["clientId"], timeout=0)]).encode()
        await conn.send(conn.post_bytes("/cometd", batch, cookie))
        status, _, body = await conn.response()
        assert status == 200
        assert json.loads(body)[0]["successful"] is True


async def test_chunked_body_is_handed_over_intact() -> None:
    async with native_server() as (_, port), raw(port) as conn:
        chunks = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        head = b"POST /hello HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
        await conn.send(head + chunks)
        status, _, body = await conn.response()
        assert (status, body) == (200, b"hello POST 11")


async def test_pipelined_requests_wait_behind_a_held_connect() -> None:
    async with native_server() as (context, port), httpx.AsyncClient() as http:
        url = f"http://127.0.0.1:{port}/cometd"
        client_id = await handshake(http, url)
        await subscribe(http, url, client_id, "/pipelined")
        cookie = http.cookies["BAYEUX_BROWSER"]
        async with raw(port) as conn:
            held = json.dumps([connect_message(client_id)]).encode()
            publish = json.dumps(
                [{"channel": "/pipelined", "clientId": client_id, "data": {"n": 1}}]
            ).encode()
            # The connect is held; the publish behind it on the same connection is read but
            # answered only after the connect's reply, which it wakes.
            await conn.send(
                conn.post_bytes("/cometd", held, cookie)
                + conn.post_bytes("/cometd", publish, cookie)
            )
            _, _, first = await conn.response()
            _, _, second = await conn.response()
        assert [m["channel"] for m in json.loads(first)] == ["/meta/connect"]
        assert json.loads(second) == [{"channel": "/pipelined", "successful": True}]
        # The published message waits for the next connect.
        replies = await post(http, url, connect_message(client_id))
        assert replies[0] == {"channel": "/pipelined", "data": {"n": 1}}
        assert context.stats()["held"] == 0


async def test_a_dropped_held_connect_loses_no_message() -> None:
    async with native_server() as (context, port), httpx.AsyncClient() as http:
        url = f"http://127.0.0.1:{port}/cometd"
        client_id = await handshake(http, url)
        await subscribe(http, url, client_id, "/dropped")
        cookie = http.cookies["BAYEUX_BROWSER"]
        async with raw(port) as conn:
            batch = json.dumps([connect_message(client_id)]).encode()
            await conn.send(conn.post_bytes("/cometd", batch, cookie))
            await until(lambda: context.stats()["held"] == 1, "the connect is held", 1)
        await until(lambda: context.stats()["held"] == 0, "the server sees the connection go", 1)
        await context.send("/dropped", {"kept": True})
        replies = await post(http, url, connect_message(client_id))
        assert replies[0] == {"channel": "/dropped", "data": {"kept": True}}


async def test_oversized_and_malformed_requests_are_refused() -> None:
    builder = LongPollingServiceContextBuilder().max_body_size(1000)
    async with native_server(builder) as (_, port):
        async with raw(port) as conn:
            # Refused from its declared length, before the body is read.
            await conn.send(b"POST /cometd HTTP/1.1\r\nhost: x\r\ncontent-length: 5000\r\n\r\n")
            status, headers, body = await conn.response()
            assert status == 413
            assert headers["connection"] == "close"
            assert json.loads(body)[0]["error"] == "413::request_too_large"
        async with raw(port) as conn:
            # Chunked, so only counted while read.
            chunk = b"x" * 1500
            head = b"POST /cometd HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
            await conn.send(head + b"%x\r\n%s\r\n0\r\n\r\n" % (len(chunk), chunk))
            status, _, body = await conn.response()
            assert status == 413
        async with raw(port) as conn:
            await conn.send(b"NOT HTTP AT ALL\r\n\r\n")
            status, _, body = await conn.response()
            assert (status, body) == (400, b"invalid HTTP request")
        async with raw(port) as conn:
            await conn.send(conn.post_bytes("/cometd", b"[{"))
            status, _, body = await conn.response()
            assert status == 400
            assert json.loads(body)[0]["error"] == "400::json_malformed"


WS_HANDSHAKE = HANDSHAKE.replace(b'"long-polling"', b'"websocket"').decode()


async def ws_session(socket: Any, *channels: str) -> str:
    """Handshakes, subscribes and connects over a socket; returns the client id."""
    await socket.send(WS_HANDSHAKE)
    [reply] = json.loads(await asyncio.wait_for(socket.recv(), 10))
    client_id: str = reply["clientId"]
    batch = [
        {"channel": "/meta/subscribe", "clientId": client_id, "subscription": list(channels)},
        {"channel": "/meta/connect", "clientId": client_id, "connectionType": "websocket"},
    ]
    await socket.send(json.dumps(batch))
    replies = json.loads(await asyncio.wait_for(socket.recv(), 10))
    assert all(r["successful"] for r in replies), replies
    return client_id


async def test_native_websocket_serves_fragments_pings_and_pushes() -> None:
    async with (
        native_server() as (context, port),
        websockets.connect(
            f"ws://127.0.0.1:{port}/cometd", subprotocols=[Subprotocol("cometd")]
        ) as socket,
    ):
        assert socket.subprotocol == "cometd"
        client_id = await ws_session(socket, "/native")
        # A fragmented publish (three frames) is one batch.
        publish = json.dumps([{"channel": "/native", "clientId": client_id, "data": "é" * 100}])
        await socket.send([publish[:10], publish[10:50], publish[50:]])
        frames = [json.loads(await asyncio.wait_for(socket.recv(), 10)) for _ in range(2)]
        messages = [m for batch in frames for m in batch]
        assert {"channel": "/native", "successful": True} in messages
        assert {"channel": "/native", "data": "é" * 100} in messages
        pong = await socket.ping(b"are you there")
        await asyncio.wait_for(pong, 10)
        await context.send("/native", {"from": "server"})
        assert json.loads(await asyncio.wait_for(socket.recv(), 10)) == [
            {"channel": "/native", "data": {"from": "server"}}
        ]
        # A later connect is held on the socket, and counted.
        connect = {"channel": "/meta/connect", "clientId": client_id, "connectionType": "websocket"}
        await socket.send(json.dumps([connect]))
        await until(lambda: context.stats()["held"] == 1, "the socket holds the connect", 1)


async def test_native_websocket_refuses_protocol_errors() -> None:
    builder = LongPollingServiceContextBuilder().max_body_size(1000)
    async with native_server(builder) as (_, port):
        async with websockets.connect(f"ws://127.0.0.1:{port}/cometd", max_size=None) as socket:
            await socket.send("x" * 2000)  # over max_body_size
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(socket.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        async with websockets.connect(f"ws://127.0.0.1:{port}/cometd") as socket:
            await socket.send("[{]")  # not JSON: an unsuccessful reply, the socket stays
            [reply] = json.loads(await asyncio.wait_for(socket.recv(), 10))
            assert reply["error"] == "400::json_malformed"
            await ws_session(socket, "/still/open")
        async with raw(port) as conn:
            # An unmasked client frame is a protocol error (1002).
            await conn.send(
                b"GET /cometd HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\n"
                b"connection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"sec-websocket-version: 13\r\n\r\n"
            )
            head = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 101 ")
            assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head  # RFC 6455's example key
            await conn.send(b"\x81\x02[]")
            close = await asyncio.wait_for(conn.reader.read(4), 10)
            assert close == b"\x88\x02\x03\xea"  # close, 1002


async def test_hooks_registered_on_an_open_native_websocket_apply() -> None:
    async with (
        native_server() as (context, port),
        websockets.connect(f"ws://127.0.0.1:{port}/cometd") as socket,
    ):
        client_id = await ws_session(socket, "/any")

        @context.service("/service/echo")
        async def echo(session: Any, message: Message) -> Any:
            return {"echo": message["data"]}

        calls = [
            {"channel": "/service/echo", "clientId": client_id, "data": n, "id": str(n)}
            for n in range(3)
        ]
        for call in calls:  # answered in order, through the hooks
            await socket.send(json.dumps([call]))
        replies = [json.loads(await asyncio.wait_for(socket.recv(), 10))[0] for _ in calls]
        assert [r["data"] for r in replies] == [{"echo": n} for n in range(3)]


async def test_native_websocket_closes_with_1001_at_shutdown() -> None:
    async with native_server() as (context, port):
        socket = await websockets.connect(f"ws://127.0.0.1:{port}/cometd")
        await ws_session(socket, "/bye")
        context.begin_shutdown()
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(socket.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001


async def test_held_connects_are_answered_when_uvicorn_stops() -> None:
    # uvicorn's graceful shutdown waits for open connections: a held native connect must be
    # answered as soon as it stops, not at the connect timeout (30 s here).
    context = LongPollingServiceContextBuilder().timeout(30).build()
    cometd = RouterBuilder().build(context)
    app = Starlette(routes=[CometdRoute("/cometd", cometd)], lifespan=context.lifespan)
    port = free_port()
    server, task = await start_uvicorn(app, port, native_http_protocol(cometd, "/cometd"))
    async with httpx.AsyncClient(timeout=30) as http:
        url = f"http://127.0.0.1:{port}/cometd"
        client_id = await handshake(http, url)
        held = asyncio.create_task(post(http, url, connect_message(client_id)))
        await until(lambda: context.stats()["held"] == 1, "the connect is held")
        server.should_exit = True
        [reply] = await asyncio.wait_for(held, 5)
        assert reply["successful"] is True
        assert reply["advice"]["reconnect"] in ("retry", "handshake")
    await asyncio.wait_for(task, 10)
