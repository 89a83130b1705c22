"""The service context: the engine, the event hub and the held connects, and the API an
application uses to send messages and end sessions."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Literal, Self

from starlette.datastructures import Headers

from ._core import (
    ClientId,
    ClientNotFoundError,
    ContextClosedError,
    Engine,
    HeldConnect,
    Outcome,
)
from .application import (
    ChannelPattern,
    Extension,
    Hooks,
    Listener,
    SecurityPolicy,
    ServerSession,
    Service,
)
from .cookies import CookieOptions
from .cors import Cors
from .events import (
    CometdCustomDataSender,
    CometdEventReceiver,
    Event,
    EventHub,
    RemovalReason,
    SessionAdded,
    SessionRemoved,
    Subscribe,
    Unsubscribe,
)
from .long_polling import Parking, Wakeup

if TYPE_CHECKING:
    from .websocket import WebSocketConnection

CONNECTION_TYPES = ("websocket", "long-polling", "callback-polling")

Duration = int | float | datetime.timedelta


def _seconds(value: Duration, name: str) -> float:
    seconds = value.total_seconds() if isinstance(value, datetime.timedelta) else float(value)
    if not seconds >= 0:
        raise ValueError(f"{name} must be a non-negative duration, not {value!r}")
    return seconds


def _count(value: int, name: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, not {value!r}")
    return value


class LongPollingServiceContextBuilder:
    """Builds a :class:`LongPollingServiceContext`. Every setter returns the builder."""

    def __init__(self) -> None:
        self._timeout = 20.0
        self._max_interval = 60.0
        self._interval = 0.0
        self._events_capacity = 1024
        self._client_capacity = 500
        self._subscription_channel_capacity = 0
        self._client_storage_capacity = 0
        self._subscription_storage_capacity = 0
        self._trust_client_session = False
        self._max_body_size = 1024 * 1024
        self._cookie = CookieOptions()
        self._connection_types: tuple[str, ...] = CONNECTION_TYPES
        self._cors = Cors(())
        self._options: dict[str, Any] = {}
        self._policy: SecurityPolicy | None = None

    def timeout(self, value: Duration) -> Self:
        """How long a ``/meta/connect`` is held (also sent as ``advice.timeout``)."""
        self._timeout = _seconds(value, "timeout")
        return self

    def max_interval(self, value: Duration) -> Self:
        """How long a session lives without a ``/meta/connect`` after its last reply."""
        self._max_interval = _seconds(value, "max_interval")
        return self

    def interval(self, value: Duration) -> Self:
        """``advice.interval``: the pause clients take between connects."""
        self._interval = _seconds(value, "interval")
        return self

    def events_channel_capacity(self, value: int) -> Self:
        """How many events a receiver may fall behind before it loses the oldest."""
        self._events_capacity = _count(value, "events_channel_capacity", 1)
        return self

    def client_channel_capacity(self, value: int) -> Self:
        """The bound on each session's message queue; when full, the oldest message is dropped
        and counted (see :meth:`LongPollingServiceContext.stats`)."""
        self._client_capacity = _count(value, "client_channel_capacity", 1)
        return self

    def subscription_channel_capacity(self, value: int) -> Self:
        """Initial size of each channel's subscriber set (a sizing hint)."""
        self._subscription_channel_capacity = _count(value, "subscription_channel_capacity")
        return self

    def client_storage_capacity(self, value: int) -> Self:
        """Initial size of the session table (a sizing hint)."""
        self._client_storage_capacity = _count(value, "client_storage_capacity")
        return self

    def subscription_storage_capacity(self, value: int) -> Self:
        """Initial size of the channel table (a sizing hint)."""
        self._subscription_storage_capacity = _count(value, "subscription_storage_capacity")
        return self

    def trust_client_session(self, value: bool = True) -> Self:
        """Accept a ``clientId`` without its ``BAYEUX_BROWSER`` cookie (off by default)."""
        self._trust_client_session = bool(value)
        return self

    def max_body_size(self, value: int) -> Self:
        """The largest request body accepted, in bytes; larger ones get HTTP 413."""
        self._max_body_size = _count(value, "max_body_size", 1)
        return self

    def connection_types(self, *types: str) -> Self:
        """The transports served and advertised, in order of preference; by default
        ``"websocket", "long-polling", "callback-polling"``."""
        unknown = [t for t in types if t not in CONNECTION_TYPES]
        if unknown or not types:
            raise ValueError(f"connection types are some of {CONNECTION_TYPES}, not {types}")
        self._connection_types = tuple(dict.fromkeys(types))
        return self

    def allowed_origins(self, *origins: str) -> Self:
        """Origins whose browsers may call the server (CORS), e.g. ``"https://app.example"``.
        Listed origins may send credentials (cookies); ``"*"`` admits any other origin
        without credentials."""
        self._cors = Cors(origins)
        return self

    def ack_extension(self, enabled: bool = True) -> Self:
        """Offer the ack extension (the clients' ``AckExtension``): messages are delivered in
        ``/meta/connect`` replies with batch ids and sent again until acknowledged."""
        self._options["ack_extension"] = bool(enabled)
        return self

    def timesync(self, enabled: bool = True) -> Self:
        """Answer the clients' ``TimeSyncExtension`` with the server's clock."""
        self._options["timesync"] = bool(enabled)
        return self

    def broadcast_to_publisher(self, enabled: bool) -> Self:
        """Whether a client receives its own publishes on channels it subscribes (default on)."""
        self._options["broadcast_to_publisher"] = bool(enabled)
        return self

    def max_sessions_per_browser(self, count: int) -> Self:
        """How many long-polls one browser (cookie) may have held at once over HTTP/1.x
        (default 1, as browsers have few connections per host); negative for no limit. Others
        are answered at once with ``advice: {"multiple-clients": true}``."""
        if isinstance(count, bool) or not isinstance(count, int):
            raise ValueError(f"max_sessions_per_browser must be an integer, not {count!r}")
        self._options["max_sessions_per_browser"] = count
        return self

    def multi_session_interval(self, value: Duration) -> Self:
        """``advice.interval`` for connects refused under that limit (default 2 s)."""
        self._options["multi_session_interval"] = _seconds(value, "multi_session_interval")
        return self

    def handshake_reconnect(self, enabled: bool = True) -> Self:
        """Advertise ``maxInterval`` in advice, so a client away for longer handshakes again
        at once instead of trying a connect first."""
        self._options["handshake_reconnect"] = bool(enabled)
        return self

    def meta_connect_deliver_only(self, enabled: bool = True) -> Self:
        """Deliver messages only in ``/meta/connect`` replies: a WebSocket then carries them
        with the next connect reply instead of pushing each at once. (Over HTTP they always
        travel in connect replies.)"""
        self._options["meta_connect_deliver_only"] = bool(enabled)
        return self

    def security_policy(self, policy: SecurityPolicy) -> Self:
        """Who may handshake, subscribe and publish; see :class:`SecurityPolicy`."""
        self._policy = policy
        return self

    def browser_cookie(
        self,
        *,
        name: str = "BAYEUX_BROWSER",
        path: str = "/",
        same_site: Literal["lax", "strict", "none"] | None = "lax",
        secure: bool = False,
        http_only: bool = True,
    ) -> Self:
        """How the browser cookie is named and set."""
        self._cookie = CookieOptions(name, path, same_site, secure, http_only)
        return self

    def build(self) -> LongPollingServiceContext:
        engine = Engine(
            timeout=self._timeout,
            max_interval=self._max_interval,
            interval=self._interval,
            queue_capacity=self._client_capacity,
            trust_client_session=self._trust_client_session,
            connection_types=list(self._connection_types),
            **self._options,
            session_capacity=self._client_storage_capacity,
            channel_capacity=self._subscription_storage_capacity,
            subscriber_capacity=self._subscription_channel_capacity,
        )
        context = LongPollingServiceContext(
            engine,
            events_capacity=self._events_capacity,
            max_body_size=self._max_body_size,
            cookie=self._cookie,
            connection_types=self._connection_types,
            cors=self._cors,
            sweep_every=min(1.0, max(0.05, self._max_interval / 4)),
        )
        context.hooks.policy = self._policy
        return context


class LongPollingServiceContext:
    """A CometD server's state and the application's handle on it."""

    def __init__(
        self,
        engine: Engine,
        *,
        events_capacity: int,
        max_body_size: int,
        cookie: CookieOptions,
        connection_types: tuple[str, ...],
        cors: Cors,
        sweep_every: float,
    ) -> None:
        self._engine = engine
        self._hub = EventHub(events_capacity)
        self._parking = Parking()
        self._sockets: set[WebSocketConnection] = set()
        self._socket_of: dict[str, WebSocketConnection] = {}
        self.connection_types = connection_types
        self.cors = cors
        self.hooks = Hooks()
        self._server_sessions: dict[str, ServerSession] = {}
        self._sweep_every = sweep_every
        self._sweeper: asyncio.Task[None] | None = None
        self.max_body_size = max_body_size
        self.cookie = cookie
        self.closed = False

    # The application's API.

    def rx(self) -> CometdEventReceiver:
        """A new receiver of every event from now on."""
        return self._hub.receiver()

    def tx(self) -> CometdCustomDataSender:
        """A sender of ``CustomData`` events."""
        return CometdCustomDataSender(self._hub)

    async def send(self, channel: str, data: Any) -> None:
        """Publishes ``data`` to every subscriber of ``channel``, wildcard subscribers included."""
        self._check_open()
        self.apply(self._engine.publish(channel, data))

    async def send_to_client(self, channel: str, client_id: ClientId | str, data: Any) -> None:
        """Sends ``data`` on ``channel`` to one session, whether it subscribed or not."""
        self._check_open()
        self.apply(self._engine.deliver(str(client_id), channel, data))

    async def remove_session(self, client_id: ClientId | str) -> None:
        """Ends a session; its client must handshake again."""
        self._check_open()
        self.apply(self._engine.remove_session(str(client_id)))

    def stats(self) -> dict[str, int]:
        """Counters: sessions, channels, published, delivered, dropped (queue overflow), held."""
        stats = self._engine.stats()
        stats["held"] = len(self._parking) + sum(socket.held for socket in self._sockets)
        return stats

    def session_info(self, client_id: ClientId | str) -> dict[str, Any] | None:
        """A session's queued and dropped message counts and subscriptions, or ``None``."""
        return self._engine.session_info(str(client_id))

    # The application's hooks.

    def service(self, channel: str) -> Callable[[Service], Service]:
        """Registers an async handler for messages published to a service channel:
        ``@context.service("/service/echo")``. It is called as ``handler(session, message,
        **params)`` (``params`` from a template such as ``/service/rooms/{room}``; wildcards
        work too) and its return value is sent back as the reply's ``data``, as the clients'
        ``remoteCall`` expects. Raise :class:`MessageRefused` to answer with an error."""

        def register(handler: Service) -> Service:
            self.hooks.services.append((ChannelPattern(channel), handler))
            return handler

        return register

    def listener(self, channel: str) -> Callable[[Listener], Listener]:
        """Registers an async listener for client publishes on broadcast channels matching
        ``channel`` (wildcards and templates allowed), called before the message is delivered:
        ``listener(session, message)`` may change ``message["data"]``, return False to delete
        the message (``404::message_deleted``) or raise :class:`MessageRefused`."""

        def register(listener: Listener) -> Listener:
            self.hooks.listeners.append((ChannelPattern(channel), listener))
            return listener

        return register

    def add_extension(self, extension: Extension) -> None:
        """Adds an extension; ``incoming`` hooks run in registration order, ``outgoing`` in
        reverse."""
        self.hooks.extensions.append(extension)

    @property
    def security_policy(self) -> SecurityPolicy | None:
        return self.hooks.policy

    @security_policy.setter
    def security_policy(self, policy: SecurityPolicy | None) -> None:
        self.hooks.policy = policy

    def server_session(self, client_id: ClientId | str) -> ServerSession:
        """The application's view of a live session, with its attributes; raises
        :class:`ClientNotFoundError` when there is no such session."""
        key = str(client_id)
        session = self._server_sessions.get(key)
        if session is None:
            if self._engine.session_info(key) is None:
                raise ClientNotFoundError(f"no session with client id {key}")
            session = self._server_sessions[key] = ServerSession(ClientId(key))
        return session

    def add_server_session(self, session: ServerSession) -> None:
        self._server_sessions[str(session.client_id)] = session

    async def outgoing(self, body: bytes, session: ServerSession | None) -> bytes:
        """Passes the replies in ``body`` (not the messages delivered with them) through the
        extensions' ``outgoing`` hooks."""
        extensions = self.hooks.extensions
        if not extensions:
            return body
        kept = []
        for message in json.loads(body):
            if "successful" in message:
                for extension in reversed(extensions):
                    if not await extension.outgoing(session, message):
                        break
                else:
                    kept.append(message)
            else:
                kept.append(message)
        return json.dumps(kept, separators=(",", ":")).encode()

    async def finish_connect(self, held: HeldConnect, drain: bool) -> bytes:
        """The reply to a held connect that ends now."""
        body = self._engine.complete_connect(held, drain)
        if not self.hooks.extensions:
            return body
        return await self.outgoing(body, self._server_sessions.get(held.client_id))

    # Life cycle.

    def start(self) -> None:
        """Starts the expiry sweeper on the running loop (done on first use anyway)."""
        if self._sweeper is None and not self.closed:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    def begin_shutdown(self) -> None:
        """Stops taking requests and releases every held connect at once, with advice to
        reconnect. Safe to call from a signal handler scheduled on the loop."""
        if self.closed:
            return
        self.closed = True
        self.apply(self._engine.release_all())
        self._parking.release_all()
        for socket in self._sockets:
            socket.shutdown()
        if self._sweeper is not None:
            self._sweeper.cancel()

    async def close(self) -> None:
        """Shuts down: held connects are released, receivers see the end, no task remains."""
        self.begin_shutdown()
        if self._sweeper is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        self._hub.close()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """A Starlette/FastAPI ``lifespan``: ``Starlette(..., lifespan=context.lifespan)``."""
        self.start()
        try:
            yield
        finally:
            await self.close()

    # Used by the transports.

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def parking(self) -> Parking:
        return self._parking

    @property
    def wants_events(self) -> bool:
        return self._hub.listening

    def track_socket(self, socket: WebSocketConnection, open: bool) -> None:
        if open:
            self._sockets.add(socket)
        else:
            self._sockets.discard(socket)

    def bind_socket(self, client_id: str, socket: WebSocketConnection) -> None:
        """Messages for this session are now pushed through ``socket``."""
        self._socket_of[client_id] = socket

    def unbind_socket(self, client_id: str, socket: WebSocketConnection) -> bool:
        """Forgets the binding if it is still ``socket``'s; true if it was."""
        if self._socket_of.get(client_id) is socket:
            del self._socket_of[client_id]
            return True
        return False

    def apply(self, outcome: Outcome, headers: Headers | None = None, data: Any = None) -> None:
        """Acts on what the engine changed: wakes and releases held connects, has sockets push,
        emits events."""
        if outcome.release:
            self._parking.wake(outcome.release, Wakeup.RELEASED)
            for client_id in outcome.release:
                socket = self._socket_of.get(client_id)
                if socket is not None:
                    socket.release(client_id)
        if outcome.wake:
            self._parking.wake(outcome.wake, Wakeup.MESSAGES)
            for client_id in outcome.wake:
                socket = self._socket_of.get(client_id)
                if socket is not None:
                    socket.wake(client_id)
        for client_id in outcome.push:
            socket = self._socket_of.get(client_id)
            if socket is not None:
                socket.push(client_id)
        if outcome.events and self._hub.listening:
            for event in _events(outcome, headers or Headers(), data, self._server_sessions):
                self._hub.publish(event)
        for kind, client_id, _ in outcome.events:
            if kind != "session_removed":
                continue
            self._server_sessions.pop(client_id, None)
            if socket := self._socket_of.pop(client_id, None):
                socket.sessions.discard(client_id)

    def _check_open(self) -> None:
        if self.closed:
            raise ContextClosedError("the context has been closed")

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_every)
            self.apply(self._engine.sweep())


def _events(
    outcome: Outcome, headers: Headers, data: Any, sessions: dict[str, ServerSession]
) -> list[Event]:
    events: list[Event] = []
    for kind, client_id, detail in outcome.events:
        cid = ClientId(client_id)
        session = sessions.get(client_id)
        attributes = session.attributes if session is not None else {}
        if kind == "session_added":
            events.append(SessionAdded(cid, headers, data, attributes))
        elif kind == "subscribe":
            events.append(Subscribe(cid, headers, tuple(detail), data, attributes))
        elif kind == "unsubscribe":
            events.append(Unsubscribe(cid, headers, tuple(detail), data, attributes))
        else:
            events.append(SessionRemoved(cid, RemovalReason(detail), attributes))
    return events
