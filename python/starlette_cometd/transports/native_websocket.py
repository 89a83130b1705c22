"""The native WebSocket, the other half of :mod:`native_http`: after the upgrade, this protocol
reads the frames itself, hands each batch to the core and writes replies and pushed messages
as text frames straight to the transport. An idle socket is one small object (no ASGI task, no
queue, no writer task), and writing follows the transport's flow control: while a client does
not read, its messages wait in its session's bounded queue and its requests are not read.

What a socket may make the server hold is bounded in bytes: once its output waiting for the
client (reply frames and pongs, in the transport's buffer or queued here) and the batches
waiting for the hooks pass the context's ``max_websocket_backlog``, its frames are not read
until that drops again; while the client does not take its output, only the latest ping is
answered (RFC 6455 lets a pong answer the most recent ping only).

Frames follow RFC 6455 (see :mod:`ws_frames`); messages are at most the context's
``max_body_size`` (else the socket closes with 1009). A protocol error is answered with its
close frame, then the connection is half-closed and the client's further bytes are read and
dropped until it closes (or ``CLOSE_TIMEOUT``), so that the close is not lost to a reset. A
batch that is not valid Bayeux gets an unsuccessful reply, as over HTTP. While the application
has hooks registered, batches go through them, in order, in a task.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Iterable
from typing import TYPE_CHECKING, Any, cast

from .._core import HeldConnect, Outcome
from ..cluster.gates import GatedPush
from .batch import Reply, Request, submit
from .http_wire import Header, peer_address
from .sockets import BoundSessions
from .ws_frames import (
    CLOSE,
    GOING_AWAY,
    INTERNAL_ERROR,
    PING,
    PONG,
    FrameError,
    FrameReader,
    close_frame,
    frame,
)
from .ws_frames import TEXT as TEXT_FRAME

if TYPE_CHECKING:
    from ..context import LongPollingServiceContext

log = logging.getLogger("starlette_cometd")

# How long a closing handshake may take before the connection is dropped.
CLOSE_TIMEOUT = 2.0


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
        browser: str,
    ) -> None:
        super().__init__(context, browser)
        self._transport: asyncio.Transport | None = transport
        self._address = peer_address(transport)
        self._connections = connections
        self._loop = asyncio.get_running_loop()
        # Every batch on this socket comes from the same place (the native path has no
        # per-request data provider), so one Request serves them all.
        self._request = Request(
            browser,
            "websocket",
            headers,
            data,
            on_bound=self._bind,
            socket=self.number,
            address=self._address,
        )
        self._reader = FrameReader(context.max_body_size)
        # Output in order when it cannot go out at once: ready frames, or a reply still being
        # built by the application's extensions. None while empty (most of a socket's life).
        self._pending: deque[bytes | Awaitable[bytes | None]] | None = None
        self._pending_bytes = 0  # of the ready frames in _pending
        self._drainer: asyncio.Task[None] | None = None
        self._paused = False  # the transport's buffer is full
        self._pong_due: bytes | None = None  # the latest ping's, while paused
        self._read_paused = False  # over the backlog budget: frames are not read
        self._flush_scheduled = False
        # Batches waiting for the hooked path, which runs them one by one in a task.
        self._inbox: deque[bytes | Awaitable[Reply]] | None = None
        self._inbox_bytes = 0
        self._handler: asyncio.Task[None] | None = None
        self._closing = False
        self._failed = False  # a protocol error was answered: input is dropped
        connections.add(self)
        context.track_socket(self, True)

    # asyncio.Protocol

    def data_received(self, data: bytes) -> None:
        if self._failed:
            return  # the close is sent: the rest is read only to be dropped
        self._reader.feed(data)
        self._read_frames()

    def _read_frames(self) -> None:
        """Handles the frames read so far, until the backlog is over its budget."""
        try:
            while self._transport is not None and not self._read_paused:
                item = self._reader.next()
                if item is None or not self._frame(*item):
                    return
        except FrameError as error:
            self._fail(error.code)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._connections.discard(self)
        self._context.track_socket(self, False)
        if self._drainer is not None:
            self._drainer.cancel()
        # The batches the hooks (or the cluster) have yet to handle are still handled: the
        # client sent them, and their effects count (a disconnect, a publish); their replies
        # go nowhere. (The backlog budget bounds them.)
        _close_unawaited(self._pending or ())
        self._pending = None
        self._pending_bytes = 0
        self._pong_due = None
        self._end_sessions()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        pong, self._pong_due = self._pong_due, None
        if pong is not None:
            self._write(frame(PONG, pong))
        self._write_pending()
        self._flush_soon()

    # What the socket holds for its client

    @property
    def backlog(self) -> int:
        """Bytes held for this socket: output not yet taken by the client (in the transport's
        buffer or queued here) and batches waiting for the application's hooks."""
        transport = self._transport
        buffered = transport.get_write_buffer_size() if transport is not None else 0
        return buffered + self._pending_bytes + self._inbox_bytes

    def _check_backlog(self) -> None:
        """Stops reading frames while the backlog is over its budget, reads again below it."""
        transport = self._transport
        if transport is None or self._failed:
            return
        over = self.backlog > self._context.max_websocket_backlog
        if over and not self._read_paused:
            self._read_paused = True
            transport.pause_reading()
        elif not over and self._read_paused:
            self._read_paused = False
            transport.resume_reading()
            # Frames already read wait in the reader: handle them, outside this call.
            self._loop.call_soon(self._read_frames)

    # Frames in

    def _frame(self, opcode: int, payload: bytes) -> bool:
        """Handles one message or control frame; false once the socket is closing."""
        if opcode == PING:
            if self._paused:
                self._pong_due = payload  # answered when the client takes its output
            else:
                self._write(frame(PONG, payload))
                self._check_backlog()
        elif opcode == CLOSE:
            self._close_received(payload)
            return False
        elif opcode != PONG:
            self._message(payload)
        return True

    def _message(self, body: bytes) -> None:
        if self._inbox is not None:
            self._inbox.append(body)  # batches ahead of it are still in the hooks: wait
            self._inbox_bytes += len(body)
            self._check_backlog()
            return
        reply = submit(self._context, self._request, body)
        # The fast path's reply is the core's Outcome (a cheaper test than isawaitable).
        if type(reply) is Outcome:
            self._send_reply(reply)
            return
        self._inbox = deque()  # the batches after this one wait for its reply
        if isinstance(reply, asyncio.Future):
            # Made by a cluster's callback (a publish's round trip, a gate): met by a
            # callback too, not a task. Pushes wait for it, as in waited_reply.
            self._replying = True
            reply.add_done_callback(self._replied)
            return
        # The application's hooks may wait: this batch, and those after it, go in a task.
        self._inbox.append(cast(Awaitable[Reply], reply))
        self._handler = self._loop.create_task(self._handle_in_order())

    def _replied(self, reply: asyncio.Future[Reply]) -> None:
        """The reply ``_message`` waited for is made: sent, then the batches that came
        meanwhile go through ``_handle_in_order``. Cancelled (the server stops): they are
        dropped, as when its task is."""
        self._replying = False
        if not reply.cancelled():
            error = reply.exception()
            if error is not None:
                log.error(
                    "a batch failed on the native WebSocket; the socket closes", exc_info=error
                )
                self._fail(INTERNAL_ERROR)
            else:
                self._send_reply(reply.result())
                self._flush()  # the pushes that waited for the reply
                if self._inbox and not self._failed:
                    self._handler = self._loop.create_task(self._handle_in_order())
                    return
        self._inbox_done(self._inbox)

    def _send_reply(self, reply: Reply) -> None:
        if reply.body:
            self._output(reply.body)
        if reply.hold is not None:
            if self._transport is None:  # the socket closed while the batch was handled
                self._context.engine.complete_connect(reply.hold, False)
            else:
                self._hold(reply.hold)

    async def _handle_in_order(self) -> None:
        """Batches in order through the application's hooks (or the fast path again, once
        they are gone)."""
        inbox = self._inbox
        try:
            while inbox and not self._failed:
                item = inbox.popleft()
                if isinstance(item, bytes):
                    self._inbox_bytes -= len(item)
                    self._check_backlog()
                reply = (
                    submit(self._context, self._request, item) if isinstance(item, bytes) else item
                )
                if inspect.isawaitable(reply):
                    reply = await self.waited_reply(reply)
                self._send_reply(reply)
                self._flush()  # the pushes that waited for the reply
        except Exception:
            log.exception("a batch failed on the native WebSocket; the socket closes")
            self._fail(INTERNAL_ERROR)
        finally:
            self._inbox_done(inbox)

    def _inbox_done(self, inbox: deque[bytes | Awaitable[Reply]] | None) -> None:
        """No batch waits any more: what is left in ``inbox`` (after a failure) is dropped."""
        self._handler = None
        self._inbox = None
        self._inbox_bytes = 0
        _close_unawaited(inbox or ())
        self._check_backlog()
        if self._transport is None:
            self._end_sessions()  # those the last batch bound to this closed socket

    # Called by the context (from apply).

    def shutdown(self) -> None:
        """The server is stopping: what is pending goes out, then a 1001 close."""
        if self._closing or self._transport is None:
            return
        self._closing = True
        self._send_frame(close_frame(GOING_AWAY))
        self._loop.call_later(CLOSE_TIMEOUT, self._abort)

    def _reply_to_held(self, held: HeldConnect, drain: bool) -> None:
        if self._failed:
            # The close is out: nothing more is written, and the session's messages stay
            # queued for its next connection.
            self._context.engine.complete_connect(held, False)
            return
        self._output(self._held_reply(held, drain))

    # Frames out

    def _flush_soon(self) -> None:
        """Pushes go out at the end of this loop turn, so that everything published meanwhile
        goes in one frame. Not while output waits ahead (see ``_flush``): what it waits for
        asks again once it is written."""
        if self._flushes and not self._flush_scheduled and not self._paused and not self._pending:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._pending:
            # Output ahead still waits (in a cluster, a push for its gate): what was published
            # since stays queued and goes in one frame once that is written, not in one frame
            # per loop turn.
            return
        while (
            self._flushes
            and not self._replying
            and not self._paused
            and self._transport
            and not self._failed
        ):
            body = self._next_push()
            if body is not None:
                self._output(body)

    def _output(self, body: bytes | Awaitable[bytes | None]) -> None:
        """Sends a batch of messages in a text frame, in order."""
        self._send_frame(frame(TEXT_FRAME, body) if isinstance(body, bytes) else body)

    def _send_frame(self, item: bytes | Awaitable[bytes | None]) -> None:
        """Writes a frame now if nothing is ahead of it, else queues it in order."""
        if isinstance(item, bytes) and self._pending is None and not self._paused:
            transport = self._transport
            if transport is not None and not self._failed:
                transport.write(item)
                # A frame the kernel took at once adds nothing to the backlog.
                if transport.get_write_buffer_size() or self._read_paused:
                    self._check_backlog()
            return
        if self._pending is None:
            self._pending = deque()
        self._pending.append(item)
        if isinstance(item, bytes):
            self._pending_bytes += len(item)
        self._write_pending()

    def _write_pending(self) -> None:
        pending = self._pending
        while pending and not self._paused and self._transport is not None:
            item = pending[0]
            if not isinstance(item, bytes):
                if isinstance(item, GatedPush):
                    # A push waiting for its gate in a cluster, which calls back when it
                    # completes: written in that same step, unless the socket closed.
                    if not item.done:
                        item.on_passed = self._push_passed
                        return
                    pending.popleft()
                    if item.body is not None:
                        self._write(frame(TEXT_FRAME, item.body))
                    continue
                if self._drainer is None:
                    self._drainer = self._loop.create_task(self._await_first())
                return
            pending.popleft()
            self._pending_bytes -= len(item)
            self._write(item)
        if not pending and self._pending is not None:
            self._pending = None
            self._flush_soon()  # the pushes that waited for it
        # What the kernel took at once, with nothing left here, adds nothing to the backlog.
        transport = self._transport
        if transport is not None and (
            self._read_paused or self._pending_bytes or transport.get_write_buffer_size()
        ):
            self._check_backlog()

    async def _await_first(self) -> None:
        """A reply built by the extensions' async hooks, or in a cluster a reply waiting for
        where its session stands to be recorded: awaited in its turn (``None``: nothing to
        write). A push waiting for its gate is met by ``_push_passed`` instead."""
        assert self._pending is not None
        item = self._pending[0]
        assert not isinstance(item, bytes)
        body: bytes | None = None
        try:
            body = await item
        except Exception:
            log.exception("building a reply failed; the reply is dropped")
        finally:
            self._drainer = None
        self._first_built(item, body)

    def _push_passed(self, item: GatedPush) -> None:
        """The gate a push waited for completed: it goes out now, in its turn."""
        if self._transport is not None:
            self._write_pending()

    def _first_built(self, item: object, body: bytes | None) -> None:
        """The first pending item is built: written in its turn (``None``: nothing to write)."""
        if self._pending and self._pending[0] is item:
            if body is None:
                self._pending.popleft()
            else:
                self._pending[0] = ready = frame(TEXT_FRAME, body)
                self._pending_bytes += len(ready)
        self._write_pending()

    @property
    def writable(self) -> bool:
        """Open, and not closing after a protocol error (whose close frame was the last write:
        the write side is shut)."""
        return self._transport is not None and not self._failed

    def _write(self, data: bytes) -> None:
        if self.writable:
            assert self._transport is not None
            self._transport.write(data)

    # Closing

    def _close_received(self, payload: bytes) -> None:
        if not self._closing:
            self._closing = True
            # Echo the client's status code, as the closing handshake asks.
            self._write(frame(CLOSE, payload[:2]))
        if self._transport is not None:
            self._transport.close()

    def _fail(self, code: int) -> None:
        """A protocol error: close with ``code`` at once. Closing a socket with unread bytes
        would make the kernel send a reset, which may destroy the close frame before the client
        reads it: instead the connection is half-closed, and what the client still sends is
        dropped until it closes its side, or ``CLOSE_TIMEOUT``."""
        transport = self._transport
        if transport is None or self._failed:
            return
        if not self._closing:  # (else a close frame is already out)
            transport.write(close_frame(code))
        self._closing = self._failed = True
        self._reader = FrameReader(0)  # what was read and not handled is dropped
        self._pong_due = None
        if self._read_paused:
            self._read_paused = False
            transport.resume_reading()
        if transport.can_write_eof():
            transport.write_eof()
        self._loop.call_later(CLOSE_TIMEOUT, self._abort)

    def eof_received(self) -> bool:
        return False  # the client is done sending: the transport closes

    def _abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


def _close_unawaited(items: Iterable[object]) -> None:
    """Replies never to be awaited, since their socket is gone, are closed."""
    for item in items:
        if inspect.iscoroutine(item):
            item.close()
