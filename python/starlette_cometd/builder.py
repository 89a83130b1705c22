"""The builder of a :class:`LongPollingServiceContext`: every setting of the server, with the
defaults of axum_cometd and CometD Java."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any, Literal, Self

from ._core import Engine
from .context import LongPollingServiceContext
from .cookies import CookieOptions
from .cors import Cors
from .hooks import SecurityPolicy

if TYPE_CHECKING:
    from .cluster.node import RedisNode

CONNECTION_TYPES = ("websocket", "long-polling", "callback-polling")

# The deepest nesting max_data_depth may allow: Python's json (the hooks' path, Python clients)
# gives up near 1,000 levels, less what the call stack already holds.
MAX_DATA_DEPTH = 512

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


def _limit(value: int | None, name: str) -> int | None:
    return None if value is None else _count(value, name, 1)


class LongPollingServiceContextBuilder:
    """Builds a :class:`LongPollingServiceContext`. Every setter returns the builder."""

    def __init__(self) -> None:
        # The engine's settings by name, as rust/config.rs names them; those not set keep the
        # defaults written there. The builder sweeps by max_interval, and a cluster counts
        # sessions against the same limits as the core, so it passes those.
        self._engine: dict[str, Any] = {
            "max_interval": 60.0,
            "max_sessions_per_cookie": 100,
            "max_sessions_per_address": 10_000,
        }
        self._events_capacity = 1024
        self._max_body_size = 1024 * 1024
        # Settings of the Python layer alone, passed to the context as they are.
        self._context_options: dict[str, Any] = {}
        self._cookie = CookieOptions()
        self._connection_types: tuple[str, ...] = CONNECTION_TYPES
        self._cors = Cors(())
        self._policy: SecurityPolicy | None = None
        self._cluster: RedisNode | None = None

    def timeout(self, value: Duration) -> Self:
        """How long a ``/meta/connect`` is held (also sent as ``advice.timeout``)."""
        self._engine["timeout"] = _seconds(value, "timeout")
        return self

    def max_interval(self, value: Duration) -> Self:
        """How long a session lives without a ``/meta/connect`` after its last reply."""
        self._engine["max_interval"] = _seconds(value, "max_interval")
        return self

    def interval(self, value: Duration) -> Self:
        """``advice.interval``: the pause clients take between connects."""
        self._engine["interval"] = _seconds(value, "interval")
        return self

    def events_channel_capacity(self, value: int) -> Self:
        """How many events a receiver may fall behind before it loses the oldest."""
        self._events_capacity = _count(value, "events_channel_capacity", 1)
        return self

    def client_channel_capacity(self, value: int) -> Self:
        """The bound on each session's message queue; when full, the oldest message is dropped
        and counted (see :meth:`LongPollingServiceContext.stats`)."""
        self._engine["queue_capacity"] = _count(value, "client_channel_capacity", 1)
        return self

    def subscription_channel_capacity(self, value: int) -> Self:
        """Initial size of each channel's subscriber set (a sizing hint)."""
        self._engine["subscriber_capacity"] = _count(value, "subscription_channel_capacity")
        return self

    def client_storage_capacity(self, value: int) -> Self:
        """Initial size of the session table (a sizing hint)."""
        self._engine["session_capacity"] = _count(value, "client_storage_capacity")
        return self

    def subscription_storage_capacity(self, value: int) -> Self:
        """Initial size of the channel table (a sizing hint)."""
        self._engine["channel_capacity"] = _count(value, "subscription_storage_capacity")
        return self

    def trust_client_session(self, value: bool = True) -> Self:
        """Accept a ``clientId`` without its ``BAYEUX_BROWSER`` cookie (off by default)."""
        self._engine["trust_client_session"] = bool(value)
        return self

    def max_body_size(self, value: int) -> Self:
        """The largest request body accepted, in bytes; larger ones get HTTP 413."""
        self._max_body_size = _count(value, "max_body_size", 1)
        return self

    def request_timeout(self, value: Duration) -> Self:
        """How long the native HTTP protocol waits for a whole request (head and body) once
        it has begun, before answering 408 and closing; 30 seconds by default."""
        seconds = _seconds(value, "request_timeout")
        if seconds == 0:
            raise ValueError("request_timeout must be positive")
        self._context_options["request_timeout"] = seconds
        return self

    def max_websocket_backlog(self, value: int) -> Self:
        """How many bytes of output (reply frames, pongs) one WebSocket may hold for a client
        that does not read them before the server stops reading that socket's requests; 4 MiB
        by default. One reply may go over it: the limit is checked after each."""
        self._context_options["max_websocket_backlog"] = _count(value, "max_websocket_backlog", 1)
        return self

    def max_channel_length(self, value: int) -> Self:
        """The longest channel name accepted, in bytes, wherever a name is used (subscribe,
        unsubscribe, publish, :meth:`LongPollingServiceContext.send`); 1 KiB by default."""
        self._engine["max_channel_length"] = _count(value, "max_channel_length", 1)
        return self

    def max_channel_segments(self, value: int) -> Self:
        """The most segments a channel name may have (``/a/b/*`` has three); 64 by default."""
        self._engine["max_channel_segments"] = _count(value, "max_channel_segments", 1)
        return self

    def max_data_depth(self, value: int) -> Self:
        """How deeply lists and objects may nest in a message's ``data``, ``ext`` or any other
        field, and in what :meth:`LongPollingServiceContext.send` sends; 128 by default, at most
        512 (Python's ``json``, which the hooks and Python clients use, stops near 1,000)."""
        _count(value, "max_data_depth", 1)
        if value > MAX_DATA_DEPTH:
            raise ValueError(f"max_data_depth must be at most {MAX_DATA_DEPTH}, not {value!r}")
        self._engine["max_data_depth"] = value
        return self

    def max_subscriptions_per_session(self, value: int) -> Self:
        """How many channels and patterns one session may subscribe to; 1,000 by default."""
        self._engine["max_subscriptions_per_session"] = _count(
            value, "max_subscriptions_per_session", 1
        )
        return self

    def max_channels(self, value: int) -> Self:
        """How many channels and patterns may have subscribers at once, over every session
        (``stats()["channels"]``); 100,000 by default. Past it, a subscribe that would add a
        channel is refused; subscribing to one that has subscribers still succeeds."""
        self._engine["max_channels"] = _count(value, "max_channels", 1)
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
        self._engine["ack_extension"] = bool(enabled)
        return self

    def timesync(self, enabled: bool = True) -> Self:
        """Answer the clients' ``TimeSyncExtension`` with the server's clock."""
        self._engine["timesync"] = bool(enabled)
        return self

    def broadcast_to_publisher(self, enabled: bool) -> Self:
        """Whether a client receives its own publishes on channels it subscribes (default on)."""
        self._engine["broadcast_to_publisher"] = bool(enabled)
        return self

    def max_sessions_per_browser(self, count: int) -> Self:
        """How many long-polls one browser (cookie) may have held at once over HTTP/1.x
        (default 1, as browsers have few connections per host); negative for no limit. Others
        are answered at once with ``advice: {"multiple-clients": true}``."""
        if isinstance(count, bool) or not isinstance(count, int):
            raise ValueError(f"max_sessions_per_browser must be an integer, not {count!r}")
        self._engine["max_sessions_per_browser"] = count
        return self

    def max_sessions_per_cookie(self, count: int | None) -> Self:
        """How many sessions may share one ``BAYEUX_BROWSER`` cookie (default 100: a browser's
        tabs share it); ``None`` for no limit. A handshake past it is refused with
        ``403:too_many_sessions_per_cookie:handshake_denied``."""
        self._engine["max_sessions_per_cookie"] = _limit(count, "max_sessions_per_cookie")
        return self

    def max_sessions_per_address(self, count: int | None) -> Self:
        """How many sessions one client address may have at once (default 10,000), an IPv6
        address counted by its /64 network; ``None`` for no limit. A handshake past it is
        refused with ``403:too_many_sessions_per_address:handshake_denied``. Behind a proxy,
        the address is the proxy's unless the server takes it from forwarded headers
        (uvicorn's ``--proxy-headers`` on the ASGI stack)."""
        self._engine["max_sessions_per_address"] = _limit(count, "max_sessions_per_address")
        return self

    def history(self, pattern: str, *, size: int = 1000, ttl: Duration | None = None) -> Self:
        """Keeps the last ``size`` messages of each channel matching ``pattern`` (a channel
        or a wildcard such as ``/chat/**``), each for ``ttl`` at most (``None``: until pushed
        out), for the replay extension: every message delivered on such a channel carries its
        id in ``data.event.replayId`` (and ``data.event.createdDate``) when its data is an
        object, and a client that subscribes with ``ext.replay`` = ``{channel: id}`` first
        gets every message retained after that id. Several calls add rules; the first whose
        pattern matches a channel applies. With ``redis()``, the history is the cluster's, kept
        in Redis and shared by every process (see ``docs/cluster.md``)."""
        if not isinstance(pattern, str):
            raise ValueError(f"history pattern must be a channel name, not {pattern!r}")
        seconds = 0.0 if ttl is None else _seconds(ttl, "ttl")
        if ttl is not None and seconds == 0:
            raise ValueError("ttl must be positive, or None to keep messages until pushed out")
        rules = self._engine.setdefault("history", [])
        rules.append((pattern, _count(size, "size", 1), seconds))
        return self

    def max_history_channels(self, count: int) -> Self:
        """How many channels may keep a history at once (default 10,000): past it, a new
        channel's history pushes out the one whose last message is the oldest (a replay on it
        after an id it may have lost is then refused), so that publishing on ever new names
        cannot grow memory without bound. With ``redis()``, shared out over the partitions:
        each keeps this many divided by their number, rounded up."""
        self._engine["max_history_channels"] = _count(count, "max_history_channels", 1)
        return self

    def multi_session_interval(self, value: Duration) -> Self:
        """``advice.interval`` for connects refused under that limit (default 2 s)."""
        self._engine["multi_session_interval"] = _seconds(value, "multi_session_interval")
        return self

    def handshake_reconnect(self, enabled: bool = True) -> Self:
        """Advertise ``maxInterval`` in advice, so a client away for longer handshakes again
        at once instead of trying a connect first."""
        self._engine["handshake_reconnect"] = bool(enabled)
        return self

    def meta_connect_deliver_only(self, enabled: bool = True) -> Self:
        """Deliver messages only in ``/meta/connect`` replies: a WebSocket then carries them
        with the next connect reply instead of pushing each at once. (Over HTTP they always
        travel in connect replies.)"""
        self._engine["meta_connect_deliver_only"] = bool(enabled)
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

    def redis(
        self,
        url: str,
        *,
        prefix: str = "cometd",
        partitions: int = 1,
        history: int = 10_000,
    ) -> Self:
        """Serve as one node of a cluster that shares the Redis at ``url`` (``redis://host:
        6379/0``; needs the ``redis`` extra): every process built this way with the same
        ``url`` and ``prefix`` behaves as one server (see ``docs/cluster.md``). ``url`` may
        name any node of a Redis Cluster instead (``redis://host:7000``): the node finds out
        when it starts, and spreads its keys over the cluster's shards. ``partitions``: how
        many logs the channels are spread over (the same on every node; on a Redis Cluster,
        as many as it has shards, or a multiple, spreads them over all); ``history``: how many
        messages each log keeps, which bounds how long a session can be away from every node
        and still get what it missed."""
        from .cluster.keys import MAX_PARTITIONS
        from .cluster.node import RedisNode

        if isinstance(partitions, int) and partitions > MAX_PARTITIONS:
            raise ValueError(f"partitions must be at most {MAX_PARTITIONS}, not {partitions}")
        self._cluster = RedisNode(
            url,
            prefix=prefix,
            partitions=_count(partitions, "partitions", 1),
            history=_count(history, "history", 1),
        )
        return self

    def build(self) -> LongPollingServiceContext:
        settings = dict(self._engine)
        if self._cluster is not None:
            settings["relay_publishes"] = True
            self._cluster.keeps_history = bool(settings.get("history"))
            self._cluster.max_history_channels = settings.get("max_history_channels", 10_000)
            # A session's record outlives its longest silence on every node (a held connect,
            # then max_interval), by a margin: the node serving it ends it first.
            held = settings.get("timeout", 20.0) + settings.get("interval", 0.0)
            self._cluster.session_ttl = held + settings["max_interval"] + 2.0
            self._cluster.trust_client_session = bool(settings.get("trust_client_session"))
            self._cluster.max_held_per_browser = settings.get("max_sessions_per_browser", 1)
            self._cluster.max_sessions_per_cookie = settings["max_sessions_per_cookie"]
            self._cluster.max_sessions_per_address = settings["max_sessions_per_address"]
        engine = Engine(**settings, connection_types=list(self._connection_types))
        context = LongPollingServiceContext(
            engine,
            events_capacity=self._events_capacity,
            max_body_size=self._max_body_size,
            cookie=self._cookie,
            connection_types=self._connection_types,
            cors=self._cors,
            sweep_every=min(1.0, max(0.05, self._engine["max_interval"] / 4)),
            cluster=self._cluster,
            **self._context_options,
        )
        context.hooks.policy = self._policy
        return context
