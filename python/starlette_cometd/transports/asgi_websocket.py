"""The WebSocket transport: text frames holding JSON arrays of Bayeux messages. Sessions are
bound to their socket and messages are pushed as they arrive, several per frame when several
are ready; a held ``/meta/connect`` is answered at its timeout as a heartbeat.

What a socket may make this process hold is bounded in bytes: a message over the context's
``max_body_size`` closes the socket with 1009 unread, and once the replies waiting for a client
that does not read pass ``max_websocket_backlog``, its next message is not read until they drop
under it (the server then stops reading the socket). Pings are the ASGI server's: uvicorn
answers them itself, out of an application's reach."""

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
from .http_wire import client_address
from .sockets import BoundSessions, socket_browser
from .ws_frames import GOING_AWAY, TOO_BIG

if TYPE_CHECKING:
    from ..context import LongPollingServiceContext


class WebSocketConnection(BoundSessions):
    """One client socket: reads batches, writes replies and pushed messages in one writer task,
    which runs only while there is something to write (an idle socket holds no task of ours)."""

    def __init__(
        self, context: LongPollingServiceContext, scope: Scope, send: Send, data: Any, browser: str
    ) -> None:
        super().__init__(context, browser)
        self._headers: list[tuple[bytes, bytes]] = scope["headers"]
        self._address = client_address(scope)
        self._send = send
        self._data = data
        # Replies in order: ready bytes, or a held connect's reply, built when it is written.
        self._frames: deque[bytes | Awaitable[bytes]] = deque()
        self._frames_bytes = 0  # of the ready frames in _frames, and the one being written
        self._writer: asyncio.Task[None] | None = None
        # Set while the reader waits for a slow socket to take its backlog.
        self._drained: asyncio.Event | None = None
        self._closing = False
        self._gone = False  # a write failed: the client is gone

    # Called by the context (from apply) when the engine says so.

    def _flush_soon(self) -> None:
        self._start_writer()

    def _reply_to_held(self, held: HeldConnect, drain: bool) -> None:
        self._queue(self._held_reply(held, drain))

    def shutdown(self) -> None:
        """The server is stopping: write what is pending, then close with 1001."""
        self._closing = True
        self._start_writer()

    # The socket's life.

    @property
    def backlog(self) -> int:
        """Bytes of replies held for this socket's client (built ones)."""
        return self._frames_bytes

    async def serve(self, receive: Receive) -> None:
        close_code = None
        try:
            close_code = await self._read_forever(receive)
        finally:
            writer = self._writer
            if writer is not None:
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer
            self._forget()
        if close_code is not None:
            with contextlib.suppress(OSError):
                await self._send({"type": "websocket.close", "code": close_code})

    async def _read_forever(self, receive: Receive) -> int | None:
        """Reads and handles batches until the client leaves (``None``) or sends one too large
        (the close code)."""
        limit = self._context.max_body_size
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect" or self._gone:
                return None
            text = message.get("text")
            if text is not None:
                body = text.encode() if len(text) <= limit else b""
                if len(text) > limit or len(body) > limit:
                    return TOO_BIG
            else:
                body = message.get("bytes") or b""
                if len(body) > limit:
                    return TOO_BIG
            await self._handle(body)
            del message, text, body
            # A client that does not read: its next batch waits until its replies drain.
            while self._over_budget() and self._writer is not None:
                self._drained = asyncio.Event()
                await self._drained.wait()

    def _over_budget(self) -> bool:
        return self._frames_bytes > self._context.max_websocket_backlog

    async def _handle(self, body: bytes) -> None:
        request = Request(
            self._browser,
            "websocket",
            self._headers,
            data=self._data,
            on_bound=self._bind,
            socket=self.number,
            address=self._address,
        )
        reply = submit(self._context, request, body)
        if inspect.isawaitable(reply):
            reply = await self.waited_reply(reply)
        if reply.body:
            self._queue(reply.body)
        if reply.hold is not None:
            self._hold(reply.hold)
        if self._flushes:
            self._start_writer()  # the pushes that waited for the reply

    def _queue(self, frame: bytes | Awaitable[bytes]) -> None:
        if self._gone:
            if inspect.iscoroutine(frame):
                frame.close()
            return
        self._frames.append(frame)
        if isinstance(frame, bytes):
            self._frames_bytes += len(frame)
        self._start_writer()

    def _start_writer(self) -> None:
        if self._writer is None and not self._gone:
            self._writer = asyncio.get_running_loop().create_task(self._write_pending())

    async def _write_pending(self) -> None:
        """Writes until nothing is left, then ends; the next frame starts a new writer."""
        try:
            while self._frames or (self._flushes and not self._replying):
                if self._frames:
                    frame = self._frames[0]
                    if not isinstance(frame, bytes):
                        frame = await frame
                        self._frames[0] = frame
                        self._frames_bytes += len(frame)
                    await self._write(frame)
                    self._frames.popleft()
                    self._frames_bytes -= len(frame)
                    if not self._over_budget():
                        self._wake_reader()
                    continue
                push = self._next_push()
                body = push if push is None or isinstance(push, bytes) else await push
                if body is not None:
                    await self._write(body)
            if self._closing:
                await self._send({"type": "websocket.close", "code": GOING_AWAY})
        except OSError:
            # The socket is gone (uvicorn's ClientDisconnected): what waits for it is dropped
            # now, and the reader, woken below, sees the disconnect.
            self._gone = True
            self._drop_frames()
        finally:
            self._writer = None
            self._wake_reader()

    def _wake_reader(self) -> None:
        if self._drained is not None:
            self._drained.set()
            self._drained = None

    async def _write(self, frame: bytes) -> None:
        await self._send({"type": "websocket.send", "text": frame.decode()})

    def _drop_frames(self) -> None:
        for frame in self._frames:
            if inspect.iscoroutine(frame):
                frame.close()  # never awaited: the socket is gone
        self._frames.clear()
        self._frames_bytes = 0

    def _forget(self) -> None:
        """The socket is gone: replies still waiting are dropped, sessions unbound."""
        self._gone = True
        self._drop_frames()
        self._end_sessions()


async def serve_websocket(
    context: LongPollingServiceContext, scope: Scope, receive: Receive, send: Send, data: Any
) -> None:
    """Accepts the upgrade (echoing the client's first subprotocol, if it offered any, and
    setting the browser cookie if it had none) and serves the socket until it closes."""
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
    browser, new = socket_browser(browser_cookie(Headers(scope=scope), context.cookie.name))
    if new:
        accept["headers"] = [(b"set-cookie", context.cookie.header(browser).encode())]
    await send(accept)
    connection = WebSocketConnection(context, scope, send, data, browser)
    context.track_socket(connection, True)
    try:
        await connection.serve(receive)
    finally:
        context.track_socket(connection, False)
