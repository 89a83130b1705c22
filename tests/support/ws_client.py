"""Speaking Bayeux over a WebSocket with the ``websockets`` library: opening a socket,
exchanging batches, a session on the socket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from support.bayeux import connect_message
from support.servers import Server

Message = dict[str, Any]


def ws_url(server: Server) -> str:
    return server.ip_url.replace("http://", "ws://")


@asynccontextmanager
async def socket(server: Server, **options: Any) -> AsyncIterator[ClientConnection]:
    async with websockets.connect(ws_url(server), open_timeout=5, **options) as ws:
        yield ws


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
            {
                "channel": "/meta/subscribe",
                "clientId": client_id,
                "subscription": list(channels),
            },
        )
        assert reply["successful"] is True
    return client_id


def ws_connect(client_id: str, id: str = "c") -> Message:
    return {**connect_message(client_id, id=id), "connectionType": "websocket"}
