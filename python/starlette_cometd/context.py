"""The service context: the engine, the event hub and the held connects, and the API an
application uses to send messages and end sessions."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any, Final, Protocol

from starlette.datastructures import Headers

from ._core import (
    ClientId,
    ClientNotFoundError,
    ContextClosedError,
    Engine,
    HeldConnect,
    Outcome,
    read_batch,
)
from .cluster import attributes
from .cluster.node import Drain, EngineUnavailable, EngineUnavailableError, RedisNode
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
from .hooks import (
    ChannelPattern,
    Extension,
    Hooks,
    Listener,
    SecurityPolicy,
    ServerSession,
    Service,
    extension_passes,
)
from .logs import OutageLog, RefusalLog, log_session_events, sessions_log
from .transports.held_connects import Parking, Wakeup
from .transports.message_json import TrackedMessage

log = logging.getLogger("starlette_cometd")


class Socket(Protocol):
    """A WebSocket as the context sees it (the ASGI path's or the native one): sessions are
    bound to it, and it is told when they have messages or their held connect must end."""

    sessions: set[str]

    @property
    def held(self) -> int: ...

    def push(self, client_id: str) -> None: ...

    def wake(self, client_id: str) -> None: ...

    def release(self, client_id: str) -> None: ...

    def detach(self, client_id: str) -> None: ...

    def shutdown(self) -> None: ...


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
        request_timeout: float = 30.0,
        max_websocket_backlog: int = 4 * 1024 * 1024,
        cluster: RedisNode | None = None,
    ) -> None:
        # Plain attributes rather than properties: every request reads them.
        #: The core: the session table, subscriptions and queues of this process.
        self.engine: Final[Engine] = engine
        #: This process's link to the other processes of a cluster, if it is part of one.
        self.cluster = cluster
        self._cluster_started = False
        self._hub = EventHub(events_capacity)
        #: The held connects of the native and ASGI long-polling transports.
        self.parking: Final[Parking] = Parking()
        self._sockets: set[Socket] = set()
        self._socket_of: dict[str, Socket] = {}
        self.connection_types = connection_types
        self.cors = cors
        self.hooks = Hooks()
        #: The log of unsuccessful replies, which bounds how many lines a second it writes.
        self.refusals: Final[RefusalLog] = RefusalLog()
        #: The log of requests answered unavailable while the cluster's Redis is away.
        self.outages: Final[OutageLog] = OutageLog()
        self._server_sessions: dict[str, ServerSession] = {}
        self._sweep_every = sweep_every
        self._sweeper: asyncio.Task[None] | None = None
        self.max_body_size = max_body_size
        self.request_timeout = request_timeout
        # Bytes of output one WebSocket may hold for a client that does not read (reply
        # frames and pongs) before the server stops reading that socket.
        self.max_websocket_backlog = max_websocket_backlog
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
        """Publishes ``data`` to every subscriber of ``channel``, wildcard subscribers included
        (in a cluster: on every process, once the cluster's engine took it; if it cannot,
        :class:`EngineUnavailableError`)."""
        self._check_open()
        outcome = self.engine.publish(channel, data)
        if outcome.relayed and self.cluster is not None:
            try:
                await self.cluster.publish(outcome.relayed)
            except EngineUnavailable as error:
                raise EngineUnavailableError(f"the cluster's Redis: {error}") from error
        self.apply(outcome)

    async def send_to_client(self, channel: str, client_id: ClientId | str, data: Any) -> None:
        """Sends ``data`` on ``channel`` to one session, whether it subscribed or not (in a
        cluster, wherever it is served)."""
        self._check_open()
        if self.cluster is None:
            self.apply(self.engine.deliver(str(client_id), channel, data))
            return
        message = self.engine.message(channel, data)
        try:
            await self.cluster.send_to(str(client_id), channel, message)
        except EngineUnavailable as error:
            raise EngineUnavailableError(f"the cluster's Redis: {error}") from error

    async def remove_session(self, client_id: ClientId | str) -> None:
        """Ends a session; its client must handshake again (in a cluster, wherever it is
        served: this process takes it over to end it)."""
        self._check_open()
        key = str(client_id)
        if self.cluster is not None and self.engine.session_info(key) is None:
            try:
                await self.cluster.take_over([key], None, None, trusted=True)
            except EngineUnavailable as error:
                raise EngineUnavailableError(f"the cluster's Redis: {error}") from error
        self.apply(self.engine.remove_session(key))

    def stats(self) -> dict[str, int]:
        """Counters: sessions (alive now), sessions_created and sessions_removed (since the
        start; of those removed, sessions_disconnected, sessions_expired and
        sessions_ended_by_server), sessions_websocket (bound to a WebSocket now),
        subscriptions, channels, published, delivered, dropped (queue overflow), held,
        events_missed (by the application's event receivers); what the history keeps:
        history_channels, history_messages and history_oldest_id (0: none)."""
        stats = self.engine.stats()
        stats["held"] = len(self.parking) + sum(socket.held for socket in self._sockets)
        stats["events_missed"] = self._hub.missed
        return stats

    async def history(self, channel: str, after: int = -2) -> list[dict[str, Any]]:
        """The messages kept on ``channel`` (see the builder's ``history``) after the id
        ``after`` (-2, the default: every one kept; -1: none), oldest first, each as its
        subscribers receive it (``channel``, ``data``, the id in ``data.event.replayId`` for
        object data): for an application's own catch-up endpoint. Raises
        :class:`ReplayIdError` with the replay extension's error for a channel without
        history or an id that cannot be read after (pushed out, from before a restart, never
        given), and :class:`InvalidChannelError` for a name that is not a broadcast channel."""
        engine = self.engine
        if self.cluster is not None and (after == -2 or after >= 0):
            # Read from the cluster's history; the core then answers as in memory, errors
            # included.
            try:
                messages = await self.cluster.read_history(channel, after)
            except EngineUnavailable as error:
                raise EngineUnavailableError(f"the cluster's Redis: {error}") from error
            engine.set_replay_feed([(channel, after, messages, False)])
        try:
            kept: list[dict[str, Any]] = [
                json.loads(message) for message in engine.history(channel, after)
            ]
        finally:
            if self.cluster is not None:
                engine.set_replay_feed([])
        return kept

    async def cluster_stats(self) -> dict[str, int]:
        """:meth:`stats` for the whole cluster: every live process's counters added up (the
        others' as they last reported them, a few seconds ago at most), and ``processes``, how
        many; the history's figures are the cluster's, read from Redis. In one process,
        :meth:`stats` with ``processes`` 1. In a cluster it raises
        :class:`EngineUnavailableError` if Redis is away."""
        if self.cluster is None:
            return {**self.stats(), "processes": 1}
        try:
            return await self.cluster.cluster_stats()
        except EngineUnavailable as error:
            raise EngineUnavailableError(f"the cluster's Redis: {error}") from error

    def session_info(self, client_id: ClientId | str) -> dict[str, Any] | None:
        """A session's queued and dropped message counts and its subscriptions (sorted), or
        ``None`` (in a cluster: ``None`` for a session another process serves; see
        :meth:`find_session`)."""
        return self.engine.session_info(str(client_id))

    async def find_session(self, client_id: ClientId | str) -> dict[str, Any] | None:
        """A session wherever it is served, or ``None``: ``subscriptions`` (sorted),
        ``browser``, ``ack``, ``connected``, ``attributes`` and ``here`` (whether this process
        serves it); ``queued`` and ``dropped`` too when it is here (the process serving it
        alone knows them). In one process, :meth:`session_info` with those added. In a
        cluster a session served elsewhere is read from Redis (raises
        :class:`EngineUnavailableError` if it is away)."""
        key = str(client_id)
        info = self.engine.session_info(key)
        if info is not None:
            session = self._server_sessions.get(key)
            info["attributes"] = dict(session.attributes) if session is not None else {}
            info["here"] = True
            return info
        if self.cluster is None:
            return None
        try:
            record = await self.cluster.session_record(key)
        except EngineUnavailable as error:
            raise EngineUnavailableError(f"the cluster's Redis: {error}") from error
        if record is None:
            return None
        del record["node"]
        record["here"] = False
        return record

    # The application's hooks.

    def service(self, channel: str) -> Callable[[Service], Service]:
        """Registers an async handler for messages published to a service channel:
        ``@context.service("/service/echo")``. It is called as ``handler(session, message,
        **params)`` (``params`` from a template such as ``/service/rooms/{room}``; wildcards
        work too) and its return value is sent back as the reply's ``data``, as the clients'
        ``remoteCall`` expects. Raise :class:`MessageRefused` to answer with an error."""

        def register(handler: Service) -> Service:
            self.hooks.add_service(ChannelPattern(channel), handler)
            return handler

        return register

    def listener(self, channel: str) -> Callable[[Listener], Listener]:
        """Registers an async listener for client publishes on broadcast channels matching
        ``channel`` (wildcards and templates allowed), called before the message is delivered:
        ``listener(session, message)`` may change ``message["data"]``, return False to delete
        the message (``404::message_deleted``) or raise :class:`MessageRefused`."""

        def register(listener: Listener) -> Listener:
            self.hooks.add_listener(ChannelPattern(channel), listener)
            return listener

        return register

    def add_extension(self, extension: Extension) -> None:
        """Adds an extension; ``incoming`` hooks run in registration order, ``outgoing`` in
        reverse."""
        self.hooks.add_extension(extension)

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
            if self.engine.session_info(key) is None:
                raise ClientNotFoundError(f"no session with client id {key}")
            session = self._server_sessions[key] = ServerSession(ClientId(key))
        return session

    def add_server_session(self, session: ServerSession) -> None:
        self._server_sessions[str(session.client_id)] = session

    # Session attributes in a cluster: kept in each session's record.

    def load_attributes(self, client_id: str, fields: dict[bytes, bytes]) -> None:
        """A session came here (taken over, borrowed) or another process changed its
        attributes: ``fields`` (its record) are merged into its session object."""
        session = self._server_sessions.get(client_id)
        if session is None:
            if not any(field.startswith(b"t:") for field in fields):
                return  # none: no session object until a hook asks for it
            session = self._server_sessions[client_id] = ServerSession(ClientId(client_id))
        attributes.merge(session.attributes, session.stored, fields)

    @staticmethod
    def attributes_of(fields: dict[bytes, bytes]) -> dict[str, Any]:
        """The attributes a session's record holds."""
        found: dict[str, Any] = {}
        attributes.merge(found, {}, fields)
        return found

    async def save_attributes(
        self, sessions: Iterable[ServerSession], owners: dict[str, str] | None = None
    ) -> None:
        """In a cluster, writes what changed in these sessions' attributes to their records
        (``owners``: the process serving each session borrowed here, told to read them again).
        A change that cannot be stored (and could not be refused with its message, having
        been made as a reply went out) is undone, and logged."""
        if self.cluster is None:
            return
        changed: list[tuple[ServerSession, dict[str, str], list[str]]] = []
        for session in sessions:
            try:
                attributes.check(session.attributes, session.stored)
            except attributes.NotStorable as refused:
                log.error("session %s: %s (the change is undone)", session.client_id, refused)
            written, removed = attributes.changes(session.attributes, session.stored)
            if written or removed:
                changed.append((session, written, removed))
        if not changed:
            return
        writes = [
            (str(session.client_id), written, removed) for session, written, removed in changed
        ]
        try:
            await self.cluster.save_attributes(writes, owners or {})
        except EngineUnavailable as error:
            # Kept here: written with the session's next change.
            self.outages.log(error)
            return
        for session, written, removed in changed:
            session.stored.update(written)
            for name in removed:
                session.stored.pop(name, None)

    def let_go(self, client_id: str) -> None:
        """Another process serves this session now: it goes from here, unannounced."""
        self.apply(self.engine.forget(client_id))
        self._server_sessions.pop(client_id, None)
        if self.cluster is not None:
            self.cluster.forgotten(client_id)

    def finish_reply(self, body: bytes, session: ServerSession | None) -> bytes | Awaitable[bytes]:
        """The replies in ``body`` as they go out: through the extensions' ``outgoing`` hooks
        (not the messages delivered with them), which may wait; at once when there are none.
        This is the one place that chooses."""
        if not self.hooks.extensions:
            return body
        return self._outgoing(body, session)

    def finish_connect(
        self, held: HeldConnect, drain: bool, multiple_clients: bool = False
    ) -> bytes | Awaitable[bytes]:
        """The reply to a held connect that ends now (see :meth:`finish_reply`);
        ``multiple_clients`` when its browser holds a long-poll on another process. In a
        cluster it waits for the session's delivery to be recorded."""
        body = self.engine.complete_connect(held, drain, multiple_clients)
        if self.cluster is not None:
            where = self.cluster.drained([held.client_id])
            if not self.hooks.extensions:
                soon = self.cluster.delivered_soon(held.client_id, body, where)
                if soon is not None:
                    return soon
            return self._finish_in_cluster(held.client_id, body, where)
        return self.finish_reply(body, self._server_sessions.get(held.client_id))

    async def _finish_in_cluster(self, client_id: str, body: bytes, drain: Drain) -> bytes:
        assert self.cluster is not None
        body = await self.cluster.delivered(client_id, body, drain)
        session = self._server_sessions.get(client_id)
        reply = self.finish_reply(body, session)
        if isinstance(reply, bytes):
            return reply
        reply = await reply
        if session is not None:
            # What the outgoing extensions changed.
            await self.save_attributes([session])
        return reply

    async def _outgoing(self, body: bytes, session: ServerSession | None) -> bytes:
        kept = []
        for raw, _ in read_batch(body) or ():
            reply = TrackedMessage(raw)
            if "successful" not in reply.value:
                kept.append(raw)  # a delivered message: not for the extensions
                continue
            for extension in reversed(self.hooks.extensions):
                if not await extension_passes(extension.outgoing, session, reply.value):
                    break
            else:
                try:
                    kept.append(reply.text())
                except (TypeError, ValueError):
                    # As for an extension that raises: passed over, the reply goes out as is.
                    log.exception("an extension left a reply that is not JSON: %.200r", raw)
                    kept.append(raw)
        return b"[" + b",".join(kept) + b"]"

    # Life cycle.

    @property
    def started(self) -> bool:
        """Whether the context serves: started (its lifespan ran, or a first request came),
        and, in a cluster, joined it."""
        joined = self.cluster is None or self._cluster_started
        return self._sweeper is not None and joined and not self.closed

    async def health(self) -> dict[str, Any]:
        """Whether this process can serve (see :func:`starlette_cometd.health.health`)."""
        from .health import health

        return await health(self)

    def start(self) -> None:
        """Starts the expiry sweeper on the running loop (done on first use anyway)."""
        if self._sweeper is None and not self.closed:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def open(self) -> None:
        """Starts the sweeper and, in a cluster, joins it (raises if its Redis cannot be
        reached): what a lifespan does before serving."""
        self.start()
        if self.cluster is not None and not self._cluster_started:
            await self.cluster.start(self)
            self._cluster_started = True

    def end_orphan(self, client_id: str, record: dict[bytes, bytes]) -> None:
        """A session whose process died expired: this process announces its end (once in the
        cluster), with the attributes its ``record`` held, and ends it if it had taken it in
        meanwhile."""
        if self.engine.session_info(client_id) is not None:
            self.apply(self.engine.remove_session(client_id))
            return
        self._server_sessions.pop(client_id, None)
        if self._hub.listening:
            found = self.attributes_of(record)
            self._hub.publish(SessionRemoved(ClientId(client_id), RemovalReason.EXPIRED, found))

    def end_all_sessions(self) -> None:
        """Ends every session here (the cluster's Redis lost them): their clients handshake
        again."""
        for client_id in self.engine.session_ids():
            self.apply(self.engine.remove_session(client_id))

    def begin_shutdown(self) -> None:
        """Stops taking requests and releases every held connect at once, with advice to
        reconnect. Safe to call from a signal handler scheduled on the loop."""
        if self.closed:
            return
        self.closed = True
        self.apply(self.engine.release_all())
        self.parking.release_all()
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
        if self.cluster is not None and self._cluster_started:
            await self.cluster.stop()
            self._cluster_started = False
        self._hub.close()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """A Starlette/FastAPI ``lifespan``: ``Starlette(..., lifespan=context.lifespan)``."""
        await self.open()
        try:
            yield
        finally:
            await self.close()

    # Used by the transports.

    @property
    def wants_events(self) -> bool:
        return self._hub.listening

    def track_socket(self, socket: Socket, open: bool) -> None:
        if open:
            self._sockets.add(socket)
        else:
            self._sockets.discard(socket)

    def bind_socket(self, client_id: str, socket: Socket) -> None:
        """Messages for this session are now pushed through ``socket``; the socket that had it
        before (its owner came back on a new one) lets it go."""
        previous = self._socket_of.get(client_id)
        self._socket_of[client_id] = socket
        if previous is not None and previous is not socket:
            previous.detach(client_id)

    def unbind_socket(self, client_id: str, socket: Socket) -> bool:
        """Forgets the binding if it is still ``socket``'s; true if it was."""
        if self._socket_of.get(client_id) is socket:
            del self._socket_of[client_id]
            return True
        return False

    def apply(self, outcome: Outcome, headers: Headers | None = None, data: Any = None) -> None:
        """Acts on what the engine changed: wakes and releases held connects, has sockets push,
        emits events."""
        release = outcome.release
        if release:
            self.parking.wake(release, Wakeup.RELEASED)
            for socket, client_id in self._on_sockets(release):
                socket.release(client_id)
        wake = outcome.wake
        if wake:
            self.parking.wake(wake, Wakeup.MESSAGES)
            for socket, client_id in self._on_sockets(wake):
                socket.wake(client_id)
        push = outcome.push
        if push:
            for socket, client_id in self._on_sockets(push):
                socket.push(client_id)
        refused = outcome.refused
        if refused:
            self.refusals.log(refused, outcome.refused_left_out)
        events = outcome.events
        if not events:
            return
        if sessions_log.isEnabledFor(logging.INFO):
            log_session_events(events)
        if self._hub.listening:
            for event in _events(events, headers or Headers(), data, self._server_sessions):
                self._hub.publish(event)
        if self.cluster is not None:
            self.cluster.removed([c for kind, c, _ in events if kind == "session_removed"])
        for kind, client_id, _ in events:
            if kind != "session_removed":
                continue
            self._server_sessions.pop(client_id, None)
            gone: Socket | None = self._socket_of.pop(client_id, None)
            if gone is not None:
                gone.sessions.discard(client_id)

    def _on_sockets(self, client_ids: list[str]) -> Iterator[tuple[Socket, str]]:
        """The sessions among ``client_ids`` bound to a WebSocket, with their socket."""
        socket_of = self._socket_of
        for client_id in client_ids:
            socket = socket_of.get(client_id)
            if socket is not None:
                yield socket, client_id

    def _check_open(self) -> None:
        if self.closed:
            raise ContextClosedError("the context has been closed")

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_every)
            # One slice of the session table per loop turn, so that a mass expiry never holds
            # the server for long.
            done = False
            while not done:
                outcome, done = self.engine.sweep()
                self.apply(outcome)
                if not done:
                    await asyncio.sleep(0)
            self.refusals.flush()
            self.outages.flush()


def _events(
    raw: list[tuple[str, str, Any]],
    headers: Headers,
    data: Any,
    sessions: dict[str, ServerSession],
) -> list[Event]:
    events: list[Event] = []
    for kind, client_id, detail in raw:
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
