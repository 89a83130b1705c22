"""The native WebSocket, the other half of :mod:`fast_http`: after the upgrade, this protocol
reads the frames itself, hands each batch to the core and writes replies and pushed messages
as text frames straight to the transport. An idle socket is one small object (no ASGI task, no
queue, no writer task), and writing follows the transport's flow control: while a client does
not read, its messages wait in its session's bounded queue and its requests are not read.

Frames follow RFC 6455: client frames must be masked, control frames short and unfragmented,
and messages at most the context's ``max_body_size`` (else the socket closes with 1009). No
extension is negotiated. A batch that is not valid Bayeux gets an unsuccessful reply, as over
HTTP. While the application has hooks registered, batches go through them, in order, in a task.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections import deque
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from starlette.datastructures import Headers

from ._core import HeldConnect
from .bound_sessions import BoundSessions
from .dispatch import Request, handle
from .http_transport import Header, scan_headers

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets built without its C speedups
    from websockets.utils import apply_mask

if TYPE_CHECKING:
    from .context import LongPollingServiceContext

log = logging.getLogger("starlette_cometd")

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0
# Replies waiting for a client that does not read before its requests stop being read.
MAX_PENDING_FRAMES = 64
# How long a closing handshake may take before the connection is dropped.
CLOSE_TIMEOUT = 2.0


def upgrade_reply(headers: list[Header]) -> bytes | None:
    """The ``101 Switching Protocols`` head for a WebSocket upgrade request, or ``None`` if the
    request is not one this protocol takes (version 13 with a key)."""
    key = version = None
    offered: bytes | None = None
    for name, value in headers:
        if name == b"sec-websocket-key":
            key = value.strip()
        elif name == b"sec-websocket-version":
            version = value.strip()
        elif name == b"sec-websocket-protocol" and offered is None:
            offered = value.split(b",")[0].strip()
    if key is None or version != b"13" or len(key) != 24:
        return None
    accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
    head = [
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n",
        b"sec-websocket-accept: " + accept + b"\r\n",
    ]
    if offered:
        # As on the ASGI path: the client's first subprotocol is echoed.
        head.append(b"sec-websocket-protocol: " + offered + b"\r\n")
    head.append(b"\r\n")
    return b"".join(head)


def frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked, final server frame."""
    length = len(payload)
    if length < 126:
        return bytes((0x80 | opcode, length)) + payload
    if length < 65536:
        return bytes((0x80 | opcode, 126)) + length.to_bytes(2, "big") + payload
    return bytes((0x80 | opcode, 127)) + length.to_bytes(8, "big") + payload


class NativeWebSocket(BoundSessions, asyncio.Protocol):
    """One CometD WebSocket. The context sees it as it sees the ASGI path's sockets: it binds
    sessions to it and calls ``push``, ``wake``, ``release`` and ``shutdown``."""

    def __init__(
        self,
        context: LongPollingServiceContext,
        transport: asyncio.Transport,
        headers: list[Header],
        data: Any,
        connections: set[Any],
    ) -> None:
        super().__init__(context)
        self._transport: asyncio.Transport | None = transport
        self._headers = headers
        _, self._browser = scan_headers(headers, context.cookie.name)
        self._data = data
        self._connections = connections
        self._buffer = bytearray()
        self._fragments: list[bytes] | None = None
        self._fragments_size = 0
        # Output in order when it cannot go out at once: ready frames, or a reply still being
        # built by the application's extensions. None while empty (most of a socket's life).
        self._pending: deque[bytes | Coroutine[Any, Any, bytes]] | None = None
        self._drainer: asyncio.Task[None] | None = None
        self._paused = False  # the transport's buffer is full
        self._flushes: dict[str, None] = {}  # sessions with messages to push
        self._flush_scheduled = False
        # Batches waiting for the hooked path, which runs them one by one in a task.
        self._inbox: deque[bytes] | None = None
        self._handler: asyncio.Task[None] | None = None
        self._closing = False
        connections.add(self)
        context.track_socket(self, True)

    # asyncio.Protocol

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while self._transport is not None and self._next_frame():
            pass

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._connections.discard(self)
        self._context.track_socket(self, False)
        for task in (self._drainer, self._handler):
            if task is not None:
                task.cancel()
        for item in self._pending or ():
            if not isinstance(item, bytes):
                item.close()  # never awaited: the socket is gone
        self._pending = None
        self._end_sessions()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._write_pending()
        self._schedule_flush()

    # Frames in

    def _next_frame(self) -> bool:
        """Handles the first complete frame in the buffer; false when none is complete."""
        buffer = self._buffer
        if len(buffer) < 2:
            return False
        first, second = buffer[0], buffer[1]
        opcode, length, start = first & 0x0F, second & 0x7F, 2
        if length == 126:
            if len(buffer) < 4:
                return False
            length, start = int.from_bytes(buffer[2:4], "big"), 4
        elif length == 127:
            if len(buffer) < 10:
                return False
            length, start = int.from_bytes(buffer[2:10], "big"), 10
        if first & 0x70 or not second & 0x80:
            return self._fail(1002)  # reserved bits without an extension, or an unmasked frame
        if opcode >= CLOSE and (length > 125 or not first & 0x80):
            return self._fail(1002)
        if self._fragments_size + length > self._context.max_body_size:
            return self._fail(1009)
        end = start + 4 + length
        if len(buffer) < end:
            return False
        payload = apply_mask(bytes(buffer[start + 4 : end]), bytes(buffer[start : start + 4]))
        del buffer[:end]
        return self._frame(opcode, bool(first & 0x80), payload)

    def _frame(self, opcode: int, final: bool, payload: bytes) -> bool:
        if opcode in (TEXT, BINARY):
            if self._fragments is not None:
                return self._fail(1002)
            if final:
                self._message(payload)
            else:
                self._fragments, self._fragments_size = [payload], len(payload)
        elif opcode == CONTINUATION:
            if self._fragments is None:
                return self._fail(1002)
            self._fragments.append(payload)
            self._fragments_size += len(payload)
            if final:
                body = b"".join(self._fragments)
                self._fragments, self._fragments_size = None, 0
                self._message(body)
        elif opcode == PING:
            self._write(frame(PONG, payload))
        elif opcode == CLOSE:
            self._close_received(payload)
            return False
        elif opcode != PONG:
            return self._fail(1002)
        return True

    def _message(self, body: bytes) -> None:
        if self._inbox is not None or self._context.hooks.active:
            if self._inbox is None:
                self._inbox = deque()
            self._inbox.append(body)
            if self._handler is None:
                self._handler = asyncio.get_running_loop().create_task(self._handle_hooked())
            return
        self._process(body)

    def _process(self, body: bytes) -> None:
        """The fast path: one call into the core, its effects applied, the reply written."""
        context = self._context
        outcome = context.engine.process(body, self._browser, "websocket", False)
        if outcome.bound:
            self._bind(outcome.bound)
        if outcome.events and context.wants_events:
            context.apply(outcome, Headers(raw=self._headers), self._data)
        else:
            context.apply(outcome)
        if outcome.body:
            self._output(outcome.body)
        if outcome.hold is not None:
            self._hold(outcome.hold)

    async def _handle_hooked(self) -> None:
        """Batches in order through the application's hooks (or the fast path again, once
        they are gone)."""
        inbox = self._inbox
        try:
            while inbox and self._transport is not None:
                body = inbox.popleft()
                if not self._context.hooks.active:
                    self._process(body)
                    continue
                request = Request(
                    self._browser,
                    "websocket",
                    Headers(raw=self._headers),
                    self._event_data,
                    on_bound=self._bind,
                )
                try:
                    reply = await handle(self._context, request, body)
                except Exception:
                    log.exception("the application's hooks failed; the socket closes")
                    self._fail(1011)
                    return
                if reply.body:
                    self._output(reply.body)
                if reply.hold is not None:
                    self._hold(reply.hold)
        finally:
            self._handler = None
            self._inbox = None

    async def _event_data(self) -> Any:
        return self._data

    # Called by the context (from apply).

    def push(self, client_id: str) -> None:
        """Messages wait for a session on this socket: sent at the end of this loop turn, so
        that everything published meanwhile goes in one frame."""
        self._flushes[client_id] = None
        self._schedule_flush()

    def shutdown(self) -> None:
        """The server is stopping: what is pending goes out, then a 1001 close."""
        if self._closing or self._transport is None:
            return
        self._closing = True
        self._send_frame(frame(CLOSE, (1001).to_bytes(2, "big")))
        asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self._abort)

    def _reply_to_held(self, held: HeldConnect, drain: bool) -> None:
        if self._context.hooks.extensions:
            self._output(self._context.finish_connect(held, drain))
        else:
            self._output(self._context.engine.complete_connect(held, drain))

    # Frames out

    def _schedule_flush(self) -> None:
        if self._flushes and not self._flush_scheduled and not self._paused:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        engine = self._context.engine
        while self._flushes and not self._paused and self._transport is not None:
            client_id = next(iter(self._flushes))
            del self._flushes[client_id]
            body = engine.drain(client_id)
            if body is not None:
                self._output(body)

    def _output(self, body: bytes | Coroutine[Any, Any, bytes]) -> None:
        """Sends a batch of messages in a text frame, in order."""
        self._send_frame(frame(TEXT, body) if isinstance(body, bytes) else body)

    def _send_frame(self, item: bytes | Coroutine[Any, Any, bytes]) -> None:
        """Writes a frame now if nothing is ahead of it, else queues it in order."""
        if isinstance(item, bytes) and self._pending is None and not self._paused:
            self._write(item)
            return
        if self._pending is None:
            self._pending = deque()
        self._pending.append(item)
        transport = self._transport
        if len(self._pending) > MAX_PENDING_FRAMES and transport is not None:
            transport.pause_reading()
        self._write_pending()

    def _write_pending(self) -> None:
        pending = self._pending
        while pending and not self._paused and self._transport is not None:
            item = pending[0]
            if not isinstance(item, bytes):
                if self._drainer is None:
                    self._drainer = asyncio.get_running_loop().create_task(self._await_first())
                return
            pending.popleft()
            self._write(item)
        if not pending and self._pending is not None:
            self._pending = None
            if self._transport is not None:
                self._transport.resume_reading()

    async def _await_first(self) -> None:
        """A reply built by the extensions' async hooks: awaited in its turn."""
        assert self._pending is not None
        item = self._pending[0]
        assert not isinstance(item, bytes)
        body: bytes | None = None
        try:
            body = await item
        except Exception:
            log.exception("an extension's outgoing hook failed; the reply is dropped")
        finally:
            self._drainer = None
        if self._pending and self._pending[0] is item:
            if body is None:
                self._pending.popleft()
            else:
                self._pending[0] = frame(TEXT, body)
        self._write_pending()

    def _write(self, data: bytes) -> None:
        if self._transport is not None:
            self._transport.write(data)

    # Closing

    def _close_received(self, payload: bytes) -> None:
        if not self._closing:
            self._closing = True
            # Echo the client's status code, as the closing handshake asks.
            self._write(frame(CLOSE, payload[:2]))
        if self._transport is not None:
            self._transport.close()

    def _fail(self, code: int) -> bool:
        """A protocol error: close with ``code`` at once."""
        if self._transport is not None:
            self._closing = True
            self._transport.write(frame(CLOSE, code.to_bytes(2, "big")))
            self._transport.close()
        return False

    def _abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()
