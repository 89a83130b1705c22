"""A Bayeux session driven by hand, with the same calls over HTTP long-polling and WebSocket, for
tests that check one behaviour on both transports."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

from support.servers import Server

Message = dict[str, Any]

TRANSPORTS = ["long-polling", "websocket"]


class Session:
    """One handshaken session. :meth:`send` returns the replies to a batch (the messages that
    carry ``successful``); messages delivered to the session are kept for :meth:`delivered`."""

    def __init__(self) -> None:
        self.client_id = ""  # set by the handshake
        self._delivered: list[Message] = []

    def _batch(self, messages: tuple[Message, ...]) -> list[Message]:
        """The messages, each with the session's ``clientId`` unless it names one."""
        if not self.client_id:
            return list(messages)
        return [{"clientId": self.client_id, **m} for m in messages]

    async def send(self, *messages: Message) -> list[Message]:
        return await self.send_text(json.dumps(self._batch(messages)), len(messages))

    async def send_text(self, batch: str, count: int) -> list[Message]:
        """Sends a batch written by hand, of ``count`` messages; returns their replies."""
        raise NotImplementedError

    async def delivered(self, count: int = 1, timeout: float = 5) -> list[Message]:
        """The next ``count`` messages delivered to the session."""
        deadline = time.monotonic() + timeout
        while len(self._delivered) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self._delivered)} of {count} messages delivered")
            await self._poll(deadline - time.monotonic())
        taken, self._delivered = self._delivered[:count], self._delivered[count:]
        return taken

    async def _poll(self, timeout: float) -> None:
        raise NotImplementedError

    def _sort(self, batch: list[Message]) -> list[Message]:
        replies = [m for m in batch if "successful" in m]
        self._delivered += [m for m in batch if "successful" not in m]
        return replies


class HttpSession(Session):
    def __init__(self, http: httpx.AsyncClient, url: str) -> None:
        super().__init__()
        self._http = http
        self._url = url

    async def send_text(self, batch: str, count: int) -> list[Message]:
        headers = {"content-type": "application/json"}
        response = await self._http.post(self._url, content=batch, headers=headers)
        assert response.status_code == 200, response.text
        replies = self._sort(response.json())
        assert len(replies) == count, replies
        return replies

    async def _poll(self, timeout: float) -> None:
        connect = {
            "channel": "/meta/connect",
            "clientId": self.client_id,
            "connectionType": "long-polling",
            "advice": {"timeout": int(max(timeout, 0) * 1000)},
        }
        response = await self._http.post(self._url, json=[connect])
        self._sort(response.json())


class WebSocketSession(Session):
    def __init__(self, ws: ClientConnection) -> None:
        super().__init__()
        self._ws = ws

    async def send_text(self, batch: str, count: int) -> list[Message]:
        await self._ws.send(batch)
        replies: list[Message] = []
        while len(replies) < count:
            replies += self._sort(await self._frame(30))
        return replies

    async def _frame(self, timeout: float) -> list[Message]:
        frame = await asyncio.wait_for(self._ws.recv(), timeout)
        batch: list[Message] = json.loads(frame)
        return batch

    async def _poll(self, timeout: float) -> None:
        # A bound session's messages are pushed as they are queued.
        self._sort(await self._frame(max(timeout, 0.01)))


@asynccontextmanager
async def open_session(server: Server, transport: str) -> AsyncIterator[Session]:
    """A session over ``transport`` ("long-polling" or "websocket"), handshaken and past its
    first connect, which is answered at once."""
    session: Session
    if transport == "websocket":
        url = server.ip_url.replace("http://", "ws://")
        async with websockets.connect(url, open_timeout=5, max_size=None) as ws:
            session = WebSocketSession(ws)
            await _start(session, transport)
            yield session
    else:
        async with httpx.AsyncClient(timeout=60) as http:
            session = HttpSession(http, server.url)
            await _start(session, transport)
            yield session


async def _start(session: Session, transport: str) -> None:
    [hs] = await session.send(
        {"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": [transport]}
    )
    assert hs["successful"] is True, hs
    session.client_id = hs["clientId"]
    [connect] = await session.send(
        {"channel": "/meta/connect", "connectionType": transport, "advice": {"timeout": 0}}
    )
    assert connect["successful"] is True, connect
