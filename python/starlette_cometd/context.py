"""The service context: the engine, the event hub and the held connects, and the API an
application uses to send messages and end sessions."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal, Self

from starlette.datastructures import Headers

from ._core import ClientId, ContextClosedError, Engine, Outcome
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
            session_capacity=self._client_storage_capacity,
            channel_capacity=self._subscription_storage_capacity,
            subscriber_capacity=self._subscription_channel_capacity,
        )
        return LongPollingServiceContext(
            engine,
            events_capacity=self._events_capacity,
            max_body_size=self._max_body_size,
            cookie=self._cookie,
            connection_types=self._connection_types,
            cors=self._cors,
            sweep_every=min(1.0, max(0.05, self._max_interval / 4)),
        )


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
        for client_id in outcome.push:
            socket = self._socket_of.get(client_id)
            if socket is not None:
                socket.push(client_id)
        for kind, client_id, _ in outcome.events:
            if kind == "session_removed" and (socket := self._socket_of.pop(client_id, None)):
                socket.sessions.discard(client_id)
        if outcome.events and self._hub.listening:
            for event in _events(outcome, headers or Headers(), data):
                self._hub.publish(event)

    def _check_open(self) -> None:
        if self.closed:
            raise ContextClosedError("the context has been closed")

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_every)
            self.apply(self._engine.sweep())


def _events(outcome: Outcome, headers: Headers, data: Any) -> list[Event]:
    events: list[Event] = []
    for kind, client_id, detail in outcome.events:
        cid = ClientId(client_id)
        if kind == "session_added":
            events.append(SessionAdded(cid, headers, data))
        elif kind == "subscribe":
            events.append(Subscribe(cid, headers, tuple(detail), data))
        elif kind == "unsubscribe":
            events.append(Unsubscribe(cid, headers, tuple(detail), data))
        else:
            events.append(SessionRemoved(cid, RemovalReason(detail)))
    return events
