"""The WebSocket transport: text frames holding JSON arrays of Bayeux messages. Sessions are
bound to their socket and messages are pushed as they arrive, several per frame when several
are ready; a held ``/meta/connect`` is answered at its timeout as a heartbeat."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections import deque
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from .._core import HeldConnect
from ..cookies import browser_cookie
from .batch import Request, submit
from .sockets import MAX_PENDING_FRAMES, BoundSessions

if TYPE_CHECKING:
    from ..context import LongPollingServiceContext


class WebSocketConnection(BoundSessions):
    """One client socket: reads batches, writes replies and pushed messages in one writer task,
    which runs only while there is something to write (an idle socket holds no task of ours)."""

    def __init__(
        self, context: LongPollingServiceContext, scope: Scope, send: Send, data: Any
    ) -> None:
        super().__init__(context)
        self._headers: list[tuple[bytes, bytes]] = scope["headers"]
        self._browser = browser_cookie(Headers(scope=scope), context.cookie.name)
        self._send = send
        self._data = data
        # Replies in order: ready bytes, or a held connect's reply, built when it is written.
        self._frames: deque[bytes | Awaitable[bytes]] = deque()
        self._writer: asyncio.Task[None] | None = None
        # Set while the reader waits for a slow socket to take its backlog.
        self._drained: asyncio.Event | None = None
        self._closing = False

    # Called by the context (from apply) when the engine says so.

    def _flush_soon(self) -> None:
        self._start_writer()

    def _reply_to_held(self, held: HeldConnect, drain: bool) -> None:
        self._queue(self._finish_when_written(held, drain))

    async def _finish_when_written(self, held: HeldConnect, drain: bool) -> bytes:
        # Built when its turn to be written comes, so that messages published meanwhile go
        # with it.
        reply = self._context.finish_connect(held, drain)
        return reply if isinstance(reply, bytes) else await reply

    def shutdown(self) -> None:
        """The server is stopping: write what is pending, then close with 1001."""
        self._closing = True
        self._start_writer()

    # The socket's life.

    async def serve(self, receive: Receive) -> None:
        try:
            await self._read_forever(receive)
        finally:
            writer = self._writer
            if writer is not None:
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer
            self._forget()

    async def _read_forever(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            body = text.encode() if text is not None else message.get("bytes") or b""
            await self._handle(body)
            if len(self._frames) > MAX_PENDING_FRAMES:
                self._drained = asyncio.Event()
                await self._drained.wait()

    async def _handle(self, body: bytes) -> None:
        request = Request(
            self._browser, "websocket", self._headers, data=self._data, on_bound=self._bind
        )
        reply = submit(self._context, request, body)
        if inspect.isawaitable(reply):
            reply = await reply
        if reply.body:
            self._queue(reply.body)
        if reply.hold is not None:
            self._hold(reply.hold)

    def _queue(self, frame: bytes | Awaitable[bytes]) -> None:
        self._frames.append(frame)
        self._start_writer()

    def _start_writer(self) -> None:
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_pending())

    async def _write_pending(self) -> None:
        """Writes until nothing is left, then ends; the next frame starts a new writer."""
        try:
            while self._frames or self._flushes:
                if self._frames:
                    frame = self._frames.popleft()
                    await self._write(frame if isinstance(frame, bytes) else await frame)
                    continue
                body = self._next_push()
                if body is not None:
                    await self._write(body)
            if self._drained is not None:
                self._drained.set()
                self._drained = None
            if self._closing:
                await self._send({"type": "websocket.close", "code": 1001})
        except OSError:
            pass  # the socket is gone (uvicorn's ClientDisconnected): the reader sees it too
        finally:
            self._writer = None

    async def _write(self, frame: bytes) -> None:
        await self._send({"type": "websocket.send", "text": frame.decode()})

    def _forget(self) -> None:
        """The socket is gone: replies still being built are dropped, sessions unbound."""
        for frame in self._frames:
            if inspect.iscoroutine(frame):
                frame.close()  # never awaited: the socket is gone
        self._end_sessions()


async def serve_websocket(
    context: LongPollingServiceContext, scope: Scope, receive: Receive, send: Send, data: Any
) -> None:
    """Accepts the upgrade (echoing the client's first subprotocol, if it offered any) and
    serves the socket until it closes."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if context.closed or "websocket" not in context.connection_types:
        await send({"type": "websocket.close", "code": 1008})
        return
    context.start()
    accept: dict[str, Any] = {"type": "websocket.accept"}
    offered = scope.get("subprotocols") or []
    if offered:
        accept["subprotocol"] = offered[0]
    await send(accept)
    connection = WebSocketConnection(context, scope, send, data)
    context.track_socket(connection, True)
    try:
        await connection.serve(receive)
    finally:
        context.track_socket(connection, False)
