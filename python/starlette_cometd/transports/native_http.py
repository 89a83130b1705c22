"""A uvicorn HTTP protocol that answers a CometD endpoint's long-polling POSTs itself, and
takes its WebSocket upgrades to :mod:`native_websocket`.

Under plain ASGI every request costs uvicorn a task, two writes and a dozen dicts, which caps
long-polling well below what the core can do. This protocol parses with httptools as uvicorn
does, but hands a CometD POST straight to the core, answers it with one write, and parks a held
connect as a plain object (no task, no future; a dropped connection is seen in
``connection_lost``). Everything else on the connection (other paths, callback-polling, or an
endpoint with application hooks or a per-request data provider) is handed, from that request
on, to uvicorn's own protocol, so the app behaves exactly as without it.

Use it with ``uvicorn.run(app, http=native_http_protocol(cometd_app, "/cometd"))``.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
from collections import deque
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, ClassVar, cast

import httptools
from starlette.datastructures import Headers
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .._core import HeldConnect, Outcome
from .batch import Reply, Request, submit
from .handover import Forwarder
from .held_connects import DRAINING, Wakeup
from .http_wire import JSON_TYPE, NO_CACHE, Header, peer_address, scan_headers, too_large
from .native_websocket import NativeWebSocket
from .sockets import socket_browser
from .ws_frames import upgrade_reply

if TYPE_CHECKING:
    from ..router import CometdApp

log = logging.getLogger("starlette_cometd")
# uvicorn's access log, which the native path writes to as uvicorn does (when it is on).
access_log = logging.getLogger("uvicorn.access")

_CRLF = b"\r\n"
_STATUS = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in http.HTTPStatus}
_JSON_HEADERS = b"".join(name + b": " + value + _CRLF for name, value in (JSON_TYPE, NO_CACHE))
_CLOSE = b"connection: close\r\n"
# Requests read ahead of a held connect on one connection (HTTP pipelining) before reading pauses.
_MAX_PIPELINED = 16
# The request line and headers of one request, at most (larger: 431).
MAX_HEAD_SIZE = 64 * 1024
# Bytes of requests read for uvicorn's protocol while a reply is waited for, before reading pauses.
MAX_FORWARD_BUFFER = 64 * 1024
# How long a connection closing after an error reply may still take to close its side.
CLOSE_GRACE = 5.0


def native_http_protocol(app: CometdApp, path: str) -> type[CometdHttpProtocol]:
    """A uvicorn ``http`` protocol class serving ``app``, mounted at ``path``, natively."""
    paths = frozenset(p.encode() for p in app.full_paths(path))
    return type("CometdHttpProtocol", (CometdHttpProtocol,), {"endpoint": app, "paths": paths})


# A request read behind a reply that is waited for: its headers, browser cookie, body,
# keep-alive, and whether its body was past the limit (the arguments of ``_serve``).
_Request = tuple[list[Header], str | None, bytes, bool, bool]


class CometdHttpProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection. Made by :func:`native_http_protocol`, constructed by uvicorn."""

    endpoint: ClassVar[CometdApp]
    paths: ClassVar[frozenset[bytes]]

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._config = config
        self._server_state = server_state
        self._app_state = app_state
        self.loop = _loop or asyncio.get_event_loop()
        self.context = self.endpoint.context
        self._parser = httptools.HttpRequestParser(self)
        # As uvicorn's own parser: bytes after a request that asks to close the connection are
        # ignored, rather than failing the parser while that request waits for its reply.
        with contextlib.suppress(AttributeError):  # httptools before 0.6.3 has none
            self._parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self._transport: asyncio.Transport | None = None
        self._address: str | None = None
        # Timers are armed only when needed, not per request: the idle timer when the
        # connection goes idle (and, still armed, it looks at when it last did); the read timer
        # when a read ends inside a request.
        self._idle_timer: asyncio.TimerHandle | None = None
        self._idle_since = 0.0
        self._read_timer: asyncio.TimerHandle | None = None
        self._closing = False
        # After an error reply: input is read and dropped until the peer closes.
        self._discarding = False
        self._read_paused = False
        self._write_paused = False
        # The request being parsed.
        self._in_message = False
        self._url = b""
        self._headers: list[Header] = []
        # Whether the head is still being read, and its size so far once it spans reads.
        self._in_head = False
        self._head_size = 0
        self._read_size = 0
        self._body: list[bytes] = []
        self._size = 0
        self._native = False
        self._keep_alive = True
        self._browser: str | None = None
        # The 101 reply of a WebSocket upgrade this protocol takes, until the switch, and the
        # browser the socket will speak for.
        self._upgrade: bytes | None = None
        self._socket_browser = ""
        # Once set, every request from here on belongs to uvicorn's protocol.
        self._forward: Forwarder | None = None
        # The reply being waited for (a held connect, or a batch in the application's hooks),
        # and requests read behind it.
        self._waiting: _HeldReply | _HookedReply | None = None
        self._pending: deque[_Request] = deque()
        # Where this connection's batches come from, made at its first batch.
        self._request: Request | None = None
        # uvicorn's protocol, once it has the connection while this parser finishes re-framing
        # the request it was handed in the middle of.
        self._downstream: HttpToolsProtocol | None = None
        self._proxied: asyncio.Transport | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._address = peer_address(transport)
        self._server_state.connections.add(self)
        self._start_idle_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._downstream is not None:
            self._downstream.connection_lost(exc)
            self._downstream = self._proxied = self._forward = None
            return
        self._server_state.connections.discard(self)
        self._cancel_timers()
        # Let go of what the connection held at once: the parser and this protocol refer to
        # each other, so they are only freed by a later garbage collection.
        self._pending.clear()
        self._body = []
        self._forward = None
        if self._waiting is not None:
            self._waiting.set_result(Wakeup.CLIENT_GONE)
        self._transport = None

    def data_received(self, data: bytes) -> None:
        if self._downstream is not None:
            self._proxy(data)
            return
        if self._discarding:
            return
        forward = self._forward
        if forward is not None and not self._in_message:
            # Between requests: from here on the raw bytes are uvicorn's, unparsed.
            forward.raw(data)
            self._after_input()
            return
        self._read_size = len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            rest = data[upgrade.args[0] :]
            if self._upgrade is not None:
                self._switch_to_websocket(rest)
                return
            # An upgrade uvicorn will answer; the parser stops here, the rest is raw.
            assert self._forward is not None
            self._in_message = False
            self._forward.raw(rest)
        except httptools.HttpParserCallbackError as error:
            refused = error.__context__
            if isinstance(refused, _Refused):
                self._fail(refused.status, refused.reason)
            else:
                # A bug of ours while serving: the connection answers and closes, alone.
                log.error("serving a request failed", exc_info=refused)
                self._fail(500, b"internal server error")
            return
        except httptools.HttpParserError:
            self._fail(400, b"invalid HTTP request")
            return
        if self._in_message:
            if self._in_head and self._head_too_large(len(data)):
                self._fail(431, b"request header fields too large")
                return
            if self._read_timer is None and self._forward is None:
                # The first read that ends inside a request is the one it began in.
                timeout = self.context.request_timeout
                self._read_timer = self.loop.call_later(timeout, self._read_timeout)
        self._after_input()

    def eof_received(self) -> bool | None:
        if self._downstream is not None:
            self._downstream.eof_received()
        return None

    def pause_writing(self) -> None:
        if self._downstream is not None:
            self._downstream.pause_writing()
            return
        # The peer does not read: serve nothing more, and read nothing more, until it does.
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        if self._downstream is not None:
            self._downstream.resume_writing()
            return
        self._write_paused = False
        self._proceed()

    def shutdown(self) -> None:
        """Called by uvicorn when it stops: close now if idle, else after the reply. A held
        connect is answered at once, since uvicorn waits for every connection to close."""
        self._closing = True
        if self._waiting is not None:
            self._waiting.set_result(Wakeup.SHUTDOWN)
        elif (not self._pending or self._discarding) and self._transport is not None:
            self._transport.close()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._in_message = True
        self._in_head = True
        self._url = b""
        self._headers = []
        self._head_size = 0
        self._body = []
        self._size = 0
        self._native = False

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        # Called for every header of every request: kept to the least work (the head's size
        # is checked per read, in data_received).
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._head_size + self._read_size > MAX_HEAD_SIZE and self._head_bytes() > MAX_HEAD_SIZE:
            raise _Refused(431, b"request header fields too large")
        parser = self._parser
        if self._forward is None:
            path, _, _ = self._url.partition(b"?")
            endpoint = self.endpoint
            if path in self.paths and not endpoint.needs_asgi and not self.context.closed:
                if parser.should_upgrade():
                    if self._takes_websocket():
                        return
                elif parser.get_method() == b"POST" and self._takes_post():
                    return
            # uvicorn reads this request, and every one after it; it has no read timeout.
            self._cancel_read_timer()
            self._forward = Forwarder()
        method = parser.get_method()
        version = parser.get_http_version()
        self._forward.head(method, self._url, version, self._headers)

    def _head_too_large(self, read: int) -> bool:
        """Whether the head still being read is past the limit, after a read of ``read`` bytes.
        Counted by reads rather than per header, which is cheaper, and also bounds a single
        header that never ends (the parser buffers it until it does). Its first read may also
        hold earlier requests, so the size starts from what was parsed of this head."""
        self._head_size = self._head_size + read if self._head_size else self._head_bytes()
        return self._head_size > MAX_HEAD_SIZE

    def _head_bytes(self) -> int:
        return len(self._url) + sum(len(name) + len(value) for name, value in self._headers)

    def on_body(self, body: bytes) -> None:
        if self._native:
            self._size += len(body)
            if self._size <= self.context.max_body_size:
                self._body.append(body)
        elif self._forward is not None:
            self._forward.body(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        if self._read_timer is not None:
            self._cancel_read_timer()
        if not self._native:
            if self._forward is not None:
                self._forward.end()
            return
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._body = []
        request = (
            self._headers,
            self._browser,
            body,
            self._keep_alive,
            self._size > self.context.max_body_size,
        )
        if self._waiting is None and not self._pending and not self._write_paused:
            self._serve(*request)
        else:
            self._pending.append(request)
            self._update_reading()

    # Serving

    def _takes_post(self) -> bool:
        """A POST to the endpoint: served here unless it carries an Expect header (uvicorn
        answers those); one that declares a body past the limit is refused before it is read,
        and the connection closes with the reply."""
        declared, browser, expects = scan_headers(self._headers, self.context.cookie.name)
        if expects:
            return False
        if declared is not None and declared > self.context.max_body_size:
            raise _Refused(413, too_large(self.context.max_body_size).body)
        self._native = True
        self._keep_alive = self._parser.should_keep_alive()
        self._browser = browser
        return True

    def _takes_websocket(self) -> bool:
        """An upgrade to a WebSocket on the endpoint, taken here when nothing is waited for on
        the connection; its 101 reply is written when the parser stops at the upgrade."""
        if (
            self._parser.get_method() != b"GET"
            or self._waiting is not None
            or self._pending
            or "websocket" not in self.context.connection_types
            or not any(n == b"upgrade" and v.lower() == b"websocket" for n, v in self._headers)
        ):
            return False
        cookie = self.context.cookie
        _, sent, _ = scan_headers(self._headers, cookie.name)
        self._socket_browser, new = socket_browser(sent)
        set_cookie = cookie.header(self._socket_browser) if new else None
        self._upgrade = upgrade_reply(self._headers, set_cookie)
        return self._upgrade is not None

    def _switch_to_websocket(self, rest: bytes) -> None:
        """Answers the upgrade and hands the connection to a :class:`NativeWebSocket`."""
        transport = self._transport
        assert self._upgrade is not None and transport is not None
        self._cancel_timers()
        self._server_state.connections.discard(self)
        self._transport = None
        transport.write(self._upgrade)
        self.context.start()
        socket = NativeWebSocket(
            self.context,
            transport,
            self._headers,
            self.endpoint.data_value,
            self._server_state.connections,
            self._socket_browser,
        )
        transport.set_protocol(socket)
        if rest:
            socket.data_received(rest)

    def _serve(
        self,
        headers: list[Header],
        browser: str | None,
        body: bytes,
        keep_alive: bool,
        too_big: bool,
    ) -> None:
        context = self.context
        cors = context.cors.headers(Headers(raw=headers)) if context.cors.enabled else []
        if too_big:
            self.write(413, too_large(context.max_body_size).body, cors, keep_alive=False)
            return
        context.start()
        # Requests on a connection are served one at a time, each once the one before it is
        # answered, so one Request serves them all.
        batch = self._request
        if batch is None:
            batch = Request(browser, "long-polling", headers, self.endpoint.data_value)
            batch.address = self._address
            self._request = batch
        else:
            batch.browser = browser
            batch.headers = headers
        result = submit(context, batch, body)
        # The fast path's reply is the core's Outcome (a cheaper test than isawaitable).
        if type(result) is not Outcome:
            # Hooks were registered while this request was read: they may wait.
            self._waiting = _HookedReply(self, cast(Awaitable[Reply], result), cors, keep_alive)
            return
        self.answer(result, cors, keep_alive)

    def answer(self, result: Reply, cors: list[Header], keep_alive: bool) -> None:
        extra = cors
        if result.new_browser is not None:
            cookie = self.context.cookie.header(result.new_browser).encode()
            extra = [*cors, (b"set-cookie", cookie)]
        held = result.hold
        if held is None:
            self.write(result.status, result.body, extra, keep_alive)
        else:
            self._waiting = _HeldReply(self, held, result.status, extra, keep_alive)

    def write(self, status: int, body: bytes, extra: list[Header], keep_alive: bool) -> None:
        transport = self._transport
        if transport is None or self._discarding:
            return
        keep_alive = keep_alive and not self._closing
        parts = [_STATUS[status], _JSON_HEADERS, b"content-length: %d\r\n" % len(body)]
        for name, value in extra:
            parts += [name, b": ", value, _CRLF]
        if not keep_alive:
            parts.append(_CLOSE)
        parts += [_CRLF, body]
        transport.write(b"".join(parts))
        self._server_state.total_requests += 1
        if self._config.access_log and access_log.isEnabledFor(logging.INFO):
            # uvicorn's access formatter reads these five arguments.
            path = self._url.decode("latin-1")
            # As uvicorn's access log names the client: host:port.
            peer = transport.get_extra_info("peername")
            client = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) > 1 else "-"
            access_log.info('%s - "%s %s HTTP/%s" %d', client, "POST", path, "1.1", status)
        if not keep_alive:
            self._close_after_reply()

    @property
    def connected(self) -> bool:
        return self._transport is not None and not self._discarding

    def replied(self) -> None:
        """The reply waited for is written: serve what was read behind it."""
        self._waiting = None
        self._proceed()

    def _proceed(self) -> None:
        """Serves the requests read ahead, in order, while nothing is waited for and the peer
        reads its replies; then hands the connection over to uvicorn, or idles."""
        while self._pending and self._waiting is None and not self._write_paused and self.connected:
            self._serve(*self._pending.popleft())
        self._after_input()

    def _after_input(self) -> None:
        if self._transport is None or self._discarding:
            return
        if self._pending or self._write_paused or self._read_paused or self._forward is not None:
            self._update_reading()
        if self._waiting is not None or self._pending or self._write_paused:
            return
        if self._forward is not None:
            self._hand_over()
        elif self._closing:
            assert self._transport is not None
            self._transport.close()
        elif not self._in_message:
            self._start_idle_timer()

    def _update_reading(self) -> None:
        """Reading pauses while the peer does not read, while too many requests wait behind a
        reply, or while too many bytes wait for uvicorn; it resumes when none holds."""
        transport = self._transport
        if transport is None:
            return
        forward = self._forward
        pause = (
            self._write_paused
            or len(self._pending) >= _MAX_PIPELINED
            or (forward is not None and forward.size > MAX_FORWARD_BUFFER)
        )
        if pause != self._read_paused:
            self._read_paused = pause
            if pause:
                transport.pause_reading()
            else:
                transport.resume_reading()

    # Timers

    def _start_idle_timer(self) -> None:
        self._idle_since = self.loop.time()
        if self._idle_timer is None:
            timeout = self._config.timeout_keep_alive
            self._idle_timer = self.loop.call_later(timeout, self._idle_timeout)

    def _idle_timeout(self) -> None:
        self._idle_timer = None
        idle = self._waiting is None and not self._pending and not self._in_message
        if self._transport is None or not idle:
            return  # armed again when the connection next goes idle
        remaining = self._idle_since + self._config.timeout_keep_alive - self.loop.time()
        if remaining > 0:
            self._idle_timer = self.loop.call_later(remaining, self._idle_timeout)
        else:
            self._transport.close()

    def _read_timeout(self) -> None:
        """A request still incomplete after the request timeout: the client is too slow, or
        holds the connection on purpose."""
        self._read_timer = None
        if self._in_message and self._forward is None:
            self._fail(408, b"request timed out")

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _cancel_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _cancel_timers(self) -> None:
        self._cancel_idle_timer()
        self._cancel_read_timer()

    # Handing over, failing, closing

    def _hand_over(self) -> None:
        """From this request on, the connection is uvicorn's: replay what was read for it."""
        transport = self._transport
        forward = self._forward
        assert forward is not None and transport is not None
        self._cancel_timers()
        self._forward = None
        self._server_state.connections.discard(self)
        protocol = HttpToolsProtocol(
            config=self._config,
            server_state=self._server_state,
            app_state=self._app_state,
            _loop=self.loop,
        )
        if self._read_paused:
            # uvicorn's protocol keeps its own account of pausing, from "reading".
            self._read_paused = False
            transport.resume_reading()
        protocol.connection_made(transport)
        self._transport = None
        if self._in_message:
            # Mid-request: this parser goes on re-framing it until it ends, then steps aside.
            self._downstream, self._proxied, self._forward = protocol, transport, forward
        else:
            transport.set_protocol(protocol)
        protocol.data_received(forward.take())

    def _proxy(self, data: bytes) -> None:
        """Passes bytes on to uvicorn's protocol: re-framed while the request handed over is
        still being read, raw from the first read that starts between requests."""
        downstream, transport, forward = self._downstream, self._proxied, self._forward
        assert downstream is not None and transport is not None and forward is not None
        if self._in_message:
            try:
                self._parser.feed_data(data)
            except httptools.HttpParserUpgrade as upgrade:
                self._in_message = False
                forward.raw(data[upgrade.args[0] :])
            except httptools.HttpParserError:
                transport.close()  # as malformed for uvicorn as for this parser
                return
        else:
            forward.raw(data)
        if not self._in_message:
            self._downstream = self._proxied = self._forward = None
            transport.set_protocol(downstream)
        downstream.data_received(forward.take())

    def _fail(self, status: int, reason: bytes) -> None:
        """Answers a request that cannot be served, and closes."""
        transport = self._transport
        if transport is None or self._discarding:
            return
        self._cancel_read_timer()
        head = b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n" % len(reason)
        if reason.startswith(b"["):
            head = _JSON_HEADERS + b"content-length: %d\r\n" % len(reason)
        transport.write(_STATUS[status] + head + _CLOSE + _CRLF + reason)
        self._close_after_reply()

    def _close_after_reply(self) -> None:
        """Closes without losing the reply just written: closing with unread input makes the
        kernel reset the connection, and the reset can overtake the reply. So the write side
        is shut, what still arrives is dropped, and the connection closes when the peer
        closes its side, or after a grace period."""
        transport = self._transport
        assert transport is not None
        if self._closing:
            # The server is stopping, and uvicorn waits for every connection to close.
            transport.close()
            self._transport = None
            return
        self._discarding = True
        self._pending.clear()
        self._forward = None
        self._cancel_timers()
        if self._read_paused:
            self._read_paused = False
            transport.resume_reading()
        if transport.can_write_eof():
            transport.write_eof()
        self.loop.call_later(CLOSE_GRACE, transport.close)


class _Refused(Exception):
    """Raised in a parser callback to refuse the request being read."""

    def __init__(self, status: int, reason: bytes) -> None:
        super().__init__(status)
        self.status = status
        self.reason = reason


class _HeldReply:
    """A held connect on the native path: a :class:`Parking` waiter that replies when resolved.
    The reply is built on the next loop turn, so that messages published by every request read
    in this turn go out together."""

    __slots__ = (
        "_extra",
        "_held",
        "_keep_alive",
        "_protocol",
        "_reason",
        "_status",
        "_task",
        "_timer",
    )

    def __init__(
        self,
        protocol: CometdHttpProtocol,
        held: HeldConnect,
        status: int,
        extra: list[Header],
        keep_alive: bool,
    ) -> None:
        self._protocol = protocol
        self._held = held
        self._status = status
        self._extra = extra
        self._keep_alive = keep_alive
        self._reason: Wakeup | None = None
        self._task: asyncio.Future[Any] | None = None
        loop = protocol.loop
        self._timer = loop.call_later(held.timeout, self.set_result, Wakeup.TIMEOUT)
        protocol.context.parking.park(held, self)

    def done(self) -> bool:
        return self._reason is not None

    def set_result(self, reason: Wakeup, /) -> None:
        if self._reason is not None:
            return
        self._reason = reason
        self._timer.cancel()
        self._protocol.context.parking.unpark(self._held.client_id, self)
        if reason is Wakeup.CLIENT_GONE:
            # Nothing is drained: the messages stay queued for the client's next connect.
            self._protocol.context.engine.complete_connect(self._held, False)
            return
        self._protocol.loop.call_soon(self._reply)

    def _reply(self) -> None:
        # A connection lost since the wake-up gets nothing drained: no message goes to waste.
        alive = self._protocol.connected
        reason = self._reason
        drain = alive and reason in DRAINING
        body = self._protocol.context.finish_connect(
            self._held, drain, reason is Wakeup.MULTIPLE_CLIENTS
        )
        if isinstance(body, bytes):
            self._send(body)
        elif isinstance(body, asyncio.Future):
            # Resolved by a cluster's gate (see RedisNode.delivered_soon): no task.
            self._task = body
            body.add_done_callback(self._built)
        else:
            # The application's extensions see the reply first; they may wait.
            self._task = self._protocol.loop.create_task(self._send_when_built(body))

    async def _send_when_built(self, body: Awaitable[bytes]) -> None:
        self._send(await body)

    def _built(self, body: asyncio.Future[bytes]) -> None:
        if not body.cancelled():  # cancelled: the server stops, as for _send_when_built's task
            self._send(body.result())

    def _send(self, body: bytes) -> None:
        self._protocol.write(self._status, body, self._extra, self._keep_alive)
        self._protocol.replied()


class _HookedReply:
    """A batch in the application's hooks on the native path (they were registered while it was
    read): answered when they finish. It ends when its reply is written, whatever happens to
    the connection meanwhile."""

    __slots__ = ("_cors", "_keep_alive", "_protocol", "_task")

    def __init__(
        self,
        protocol: CometdHttpProtocol,
        reply: Awaitable[Reply],
        cors: list[Header],
        keep_alive: bool,
    ) -> None:
        self._protocol = protocol
        self._cors = cors
        self._keep_alive = keep_alive
        self._task: asyncio.Future[Any]
        if isinstance(reply, asyncio.Future):
            # A reply its maker resolves (a cluster's gate, see batch._gated): no task.
            self._task = reply
            reply.add_done_callback(self._resolved)
        else:
            self._task = protocol.loop.create_task(self._answer(reply))

    def set_result(self, reason: Wakeup, /) -> None:
        """The connection closed or the server is stopping: the reply is written when ready."""

    async def _answer(self, pending: Awaitable[Reply]) -> None:
        self._write(await pending)

    def _resolved(self, reply: asyncio.Future[Reply]) -> None:
        if reply.cancelled():  # the server stops, as when _answer's task is cancelled
            return
        error = reply.exception()
        if error is not None:
            # As an exception ending _answer's task: logged, and the connection waits.
            self._protocol.loop.call_exception_handler(
                {"message": "a batch's reply failed", "exception": error, "future": reply}
            )
            return
        self._write(reply.result())

    def _write(self, reply: Reply) -> None:
        protocol = self._protocol
        protocol._waiting = None
        protocol.answer(reply, self._cors, self._keep_alive)
        if protocol._waiting is None:
            protocol.replied()
