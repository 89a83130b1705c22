"""Speaking Bayeux over a WebSocket with the ``websockets`` library: opening a socket (with or
without the ``BAYEUX_BROWSER`` cookie), exchanging batches, a session on the socket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http.cookies import SimpleCookie
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from support.bayeux import connect_message
from support.servers import Server

Message = dict[str, Any]

COOKIE = "BAYEUX_BROWSER"


def ws_url(server: Server) -> str:
    return server.ip_url.replace("http://", "ws://")


@asynccontextmanager
async def socket(
    server: Server, cookie: str | None = None, **options: Any
) -> AsyncIterator[ClientConnection]:
    """A socket to the server's endpoint; ``cookie`` is a ``BAYEUX_BROWSER`` value to send
    with the upgrade."""
    if cookie is not None:
        options["additional_headers"] = {"Cookie": f"{COOKIE}={cookie}"}
    async with websockets.connect(ws_url(server), open_timeout=5, **options) as ws:
        yield ws


def cookie_set(ws: ClientConnection) -> str | None:
    """The ``BAYEUX_BROWSER`` value the server set on the socket's upgrade reply, if any."""
    assert ws.response is not None
    for header in ws.response.headers.get_all("Set-Cookie"):
        morsel = SimpleCookie(header).get(COOKIE)
        if morsel is not None:
            return morsel.value
    return None


async def exchange(ws: ClientConnection, *messages: Message) -> list[Message]:
    await ws.send(json.dumps(list(messages)))
    return await receive(ws)


async def receive(ws: ClientConnection, timeout: float = 5) -> list[Message]:
    frame = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(frame, str), "replies are text frames"
    batch: list[Message] = json.loads(frame)
    return batch


async def ws_session(ws: ClientConnection, *channels: str) -> str:
    """Handshakes and connects over the socket, subscribing to ``channels``."""
    [hs] = await exchange(
        ws, {"channel": "/meta/handshake", "supportedConnectionTypes": ["websocket"]}
    )
    client_id: str = hs["clientId"]
    [first] = await exchange(ws, {**connect_message(client_id), "connectionType": "websocket"})
    assert first["successful"] is True
    if channels:
        [reply] = await exchange(
            ws,
            {"channel": "/meta/subscribe", "clientId": client_id, "subscription": list(channels)},
        )
        assert reply["successful"] is True
    return client_id


def ws_connect(client_id: str, id: str = "c", timeout: int | None = None) -> Message:
    return {**connect_message(client_id, timeout, id=id), "connectionType": "websocket"}
