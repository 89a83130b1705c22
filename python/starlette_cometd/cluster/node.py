"""This process as one node of a cluster sharing a Redis (see ``docs/cluster.md``).

The in-memory core stays the hot path: the sessions this node serves live in it, and it fans
every message out to them. Redis holds what the nodes share: each session's record (cookie,
subscriptions, the node serving it, its cursor), and the log of every message published, per
partition of the channel space, written once per publish. Each node reads every partition's
log in order and fans each entry out locally, and records where its sessions stand before their
messages go out, once per loop turn for all of them (see ``gates.py``); a session that a request
names and that another node served is claimed, taken over with what it missed since its cursor,
and the node that had it lets it go.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from .._core import ClientNotFoundError, SendError
from ..counters import DURATIONS, ERRORS, flat_counters
from .attributes import FIELD
from .browser_holds import BrowserHolds
from .connection import LONGEST_BLOCK, Connection, closed_error, connect
from .connection import REDIS_ERRORS as _REDIS_ERRORS
from .connection import RESPONSE_ERRORS as _RESPONSE_ERRORS
from .gates import GatedPush, Gates, goes_out, marker, settled, when_passed
from .history import PUBLISH_KEPT, READ_KEPT, ClusterHistory, Kept, joined, replayed_messages
from .keys import (
    ALIVE,
    ATTRIBUTES,
    CLAIM,
    CONNECTED,
    FENCE,
    NODES_ALIVE,
    POP_EXPIRED,
    PUBLISH,
    RECORD,
    SETTLE,
    SUBSCRIPTIONS,
    TOUCH,
    Cursor,
    Keys,
    offset_of,
)
from .pending_replays import RECORD_REPLAYS, PendingReplays, Replay, recorded, spliced
from .session_counts import SessionCounts
from .turns import Batch, Turns

if TYPE_CHECKING:
    from .._core import Engine, Outcome
    from ..context import LongPollingServiceContext

log = logging.getLogger("starlette_cometd.cluster")

# Distinct replays one batch may read (each a round trip): past it, refused as too many.
MAX_REPLAY_READS = 100
# Entries read from a log at once.
READ_BATCH = 1000
# How long a blocking read waits before it looks again (and notices a stop).
READ_BLOCK_MS = int(LONGEST_BLOCK * 1000)
# How long to wait before trying Redis again after it failed.
RETRY_DELAY = 0.5
# How often each node looks for sessions whose node died, and how many it ends at once.
ORPHANS_EVERY = 1.0
ORPHANS_AT_ONCE = 100
# How long a session's record outlives its deadline (ms).
RECORD_GRACE_MS = 10_000
# How long a take-over waits for this node's reading of the logs to reach the session's cursor.
REACH_WAIT = 5.0
# Seconds each step of leaving the cluster may take (it takes milliseconds when all is well).
STOP_WAIT = 2.0
# How long a take-over waits for the node serving the session to let it go before it fences
# that node (see gates.py).
RELEASE_WAIT = 5.0
# Sessions' records and deadlines are kept alive in batches of this many.
KEEP_ALIVE_AT_ONCE = 1000
# How often each node reports its counters (see cluster_stats); a node not heard of for three
# times this long is taken for dead.
STATS_EVERY = 5.0


class EngineUnavailable(Exception):
    """Redis did not answer: the request cannot be served now; the client should retry."""


class EngineUnavailableError(SendError):
    """``send`` could not reach the cluster's engine (its Redis): nothing was sent."""


class RedisNode:
    """One process's link to the cluster. Built by the context builder's ``redis()``; started
    and stopped with the context."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "cometd",
        partitions: int = 1,
        history: int = 10_000,
    ) -> None:
        self.url = url
        self.keys = Keys(prefix, partitions)
        self.history = history
        self.id = secrets.token_hex(8)
        self._context: LongPollingServiceContext | None = None
        self._connection: Connection | None = None
        self._epochs: list[str | None] = [None] * partitions
        self._positions: list[int] = [0] * partitions
        # The last cursor encoded (see _encode).
        self._encoded: tuple[tuple[tuple[str | None, ...], tuple[int, ...]], str] = (((), ()), "")
        # How often each log started again (lost): a read begun before is of the old log.
        self._starts: list[int] = [0] * partitions
        # Set whenever the positions move, for a take-over waiting for them (see _reach).
        self._advanced = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # Bad data is logged once per partition or session, not once per read.
        self._reported: set[str] = set()
        # Set when Redis failed: before this node acts again, it checks whether Redis lost its
        # data meanwhile (once, whichever request or reader comes first; see _resume).
        self._suspect = False
        self._resuming: asyncio.Task[None] | None = None
        # Failures met and recoveries from them, for the metrics.
        self._redis_errors = 0
        self._redis_recoveries = 0
        # Cursors of the ack extension's sessions to record at the end of this loop turn, and
        # the writes under way.
        self._records: list[_Record] = []
        self._writes: set[asyncio.Task[None]] = set()
        # Where this node's other sessions stand (see gates.py), set when it starts.
        self._gates: Gates | None = None
        # The requests' writes of each loop turn, sent as one (see turns.py).
        self._turns: Turns | None = None
        # Take-overs waiting for another node to let a session go (by a nonce): where it stood.
        self._releases: dict[str, asyncio.Future[str]] = {}
        # Sessions being taken over here: a release asked meanwhile waits for it to end.
        self._adopting: dict[str, asyncio.Event] = {}
        # Sessions here for a batch only (see borrow): not this node's to release.
        self._borrowed: set[str] = set()
        self._listener: asyncio.Task[None] | None = None
        self._stopping = False
        # Sessions here whose record says their first connect was answered.
        self._connected_noted: set[str] = set()
        # When each session here last had its record and deadline kept alive.
        self._kept_alive: dict[str, float] = {}
        #: Whether a session may be used without its cookie (set by the builder).
        self.trust_client_session = False
        #: Seconds a session's record lives unless refreshed (set by the builder).
        self.session_ttl = 90.0
        #: Long-polls one browser may hold at once over the cluster; negative for no limit
        #: (set by the builder, from ``max_sessions_per_browser``).
        self.max_held_per_browser = 1
        self._browser_holds: BrowserHolds | None = None
        #: Sessions one cookie, and one client address, may have over the cluster; ``None`` for
        #: no limit (set by the builder).
        self.max_sessions_per_cookie: int | None = None
        self.max_sessions_per_address: int | None = None
        self._counts: SessionCounts | None = None
        #: Whether channels keep a history, and how many at most (set by the builder).
        self.keeps_history = False
        self.max_history_channels = 10_000
        self._kept: ClusterHistory | None = None
        self._pending_replays: PendingReplays | None = None

    # Life cycle

    async def start(self, context: LongPollingServiceContext) -> None:
        """Connects, reads where each log stands, and starts reading them and this node's
        control channel. Raises if Redis cannot be reached."""
        self._context = context
        self._stopping = False
        # A record outlives its deadline, so that the node that ends a session whose node
        # died still finds its attributes to announce with its end.
        self._deadline_ms = int(self.session_ttl * 1000)
        self._session_ttl_ms = self._deadline_ms + RECORD_GRACE_MS
        # One server or a Redis Cluster, whichever the URL names (see connection.py).
        self._connection = connection = await connect(self.url)
        self._turns = Turns(connection.requests, connection.script(PUBLISH))
        self._claim = connection.script(CLAIM)
        self._record = connection.script(RECORD)
        self._fence = connection.script(FENCE)
        self._settle = connection.script(SETTLE)
        self._connected = connection.script(CONNECTED)
        self._subscriptions = connection.script(SUBSCRIPTIONS)
        self._touch = connection.script(TOUCH)
        self._pop_expired = connection.script(POP_EXPIRED)
        self._attributes = connection.script(ATTRIBUTES)
        self._alive = connection.script(ALIVE)
        self._nodes_alive = connection.script(NODES_ALIVE)
        if self.keeps_history:
            self._kept = ClusterHistory(
                self.keys,
                connection.script(PUBLISH_KEPT),
                connection.script(READ_KEPT),
                self.max_history_channels,
            )
            self._pending_replays = PendingReplays(
                self.keys, connection.script(RECORD_REPLAYS), self._in_background
            )
        context.engine.track_marks()
        self._gates = gates = Gates(
            connection,
            self._turns,
            self.keys,
            self.id,
            context.engine,
            lambda: tuple(self._positions),
            self._encode,
            self._session_ttl_ms,
        )
        gates.on_fenced = self._fenced
        gates.on_failed = self._gate_failed
        gates.on_refused = self._gate_refused
        self._start_at(await self._read_heads())
        gates.start_at(self._positions)
        self._tasks.append(asyncio.create_task(self._keep_alive()))
        for partition in range(self.keys.partitions):
            self._tasks.append(asyncio.create_task(self._follow(partition)))
        self._listen()
        self._tasks.append(asyncio.create_task(self._end_orphans()))
        self._tasks.append(asyncio.create_task(self._report_stats()))
        if self.max_held_per_browser >= 0:
            self._browser_holds = BrowserHolds(
                connection,
                self._turns,
                self.keys,
                self.max_held_per_browser,
                context.engine,
                context.parking,
            )
            context.parking.registry = self._browser_holds
        if self.max_sessions_per_cookie is not None or self.max_sessions_per_address is not None:
            self._counts = SessionCounts(
                connection,
                self._turns,
                self.keys,
                self.max_sessions_per_cookie,
                self.max_sessions_per_address,
                self._session_ttl_ms,
            )

    async def stop(self) -> None:
        """Leaves the cluster: its readers end and its connections close, each step within
        ``STOP_WAIT`` seconds (a Redis that does not answer must not hold a shutdown up)."""
        self._stopping = True
        if self._gates is not None:
            self._gates.close()
        holds, self._browser_holds = self._browser_holds, None
        if holds is not None:
            holds.close()
            if self._context is not None:
                self._context.parking.registry = None
        tasks = [*self._tasks, *self._writes, *(holds.writes if holds is not None else ())]
        if self._gates is not None:
            tasks += self._gates.tasks
        if self._turns is not None:
            tasks += self._turns.tasks
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=STOP_WAIT)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.debug("node %s: a task ended with %r", self.id, task.exception())
            for task in pending:
                where = _awaiting(task)
                log.warning("node %s: a task did not end in time, left behind: %s", self.id, where)
        if self._connection is not None:
            try:
                await asyncio.wait_for(self._leave_stats(), STOP_WAIT)
            except TimeoutError:
                log.debug("node %s: its counters stay until they lapse", self.id)
            except _REDIS_ERRORS as error:
                log.debug("node %s: its counters stay until they lapse: %s", self.id, error)
            try:
                await asyncio.wait_for(self._connection.aclose(), STOP_WAIT)
            except TimeoutError:
                log.warning("node %s: its Redis connections did not close in time", self.id)
            except _REDIS_ERRORS as error:
                log.warning("node %s: closing its Redis connections failed: %s", self.id, error)

    @property
    def engine(self) -> Engine:
        assert self._context is not None
        return self._context.engine

    @property
    def redis(self) -> Any:
        """The client for requests: ``Redis``, or ``RedisCluster`` (the same commands)."""
        assert self._connection is not None
        return self._connection.redis

    def _pipeline(self) -> Batch:
        """A pipeline for a request's writes, sent with the others of this loop turn."""
        assert self._turns is not None
        return self._turns.pipeline()

    # What a request needs before and after the core acts on it

    def may_act_now(self) -> bool:
        """Whether this node may act without first checking Redis (see :meth:`ready`)."""
        return not self._suspect

    async def ready(self) -> None:
        """Returns once this node may act: at once, unless Redis failed since it last looked,
        when it first checks whether Redis lost its data meanwhile. Raises
        ``EngineUnavailable``."""
        try:
            await self._resume()
        except _REDIS_ERRORS as error:
            self._failed()
            raise EngineUnavailable(str(error)) from error

    def _listen(self) -> None:
        """Listens to this node's control channel (again, under a new id)."""
        if self._listener is not None:
            self._listener.cancel()
        self._listener = asyncio.create_task(self._listen_for_control())
        self._tasks.append(self._listener)

    async def ping(self) -> None:
        """Raises unless Redis answers now (a health probe)."""
        if self._stopping or self._connection is None:
            raise EngineUnavailable("the node is not running")
        await self.redis.ping()

    async def take_over(
        self,
        client_ids: Iterable[str],
        address: str | None,
        browser: str | None,
        *,
        trusted: bool = False,
        acknowledged: dict[str, int] | None = None,
    ) -> None:
        """Takes over the named sessions that another node served (or none did since it
        stopped), for a request that carries ``browser``'s cookie (or for the application,
        ``trusted``): those that exist, are that browser's, and can be recovered are then here,
        with what they missed: with the ack extension, since the batch the request's connect
        ``acknowledged``. Raises ``EngineUnavailable``."""
        acknowledged = acknowledged or {}
        try:
            await self._resume()
            for client_id in client_ids:
                acked = acknowledged.get(client_id)
                await self._adopt(client_id, address, browser, trusted, acked)
        except _REDIS_ERRORS as error:
            self._failed()
            raise EngineUnavailable(str(error)) from error

    async def borrow(self, client_ids: Iterable[str], address: str | None) -> dict[str, str]:
        """Brings the named sessions here for a batch that does not connect them (publishes,
        subscriptions, a disconnect), without taking them from the node serving them, which
        keeps delivering their messages: returns each borrowed session's node. The caller
        lets them go (``engine.forget``) once the batch is committed; the core checks that the
        request carries their cookie as it does for any session. Raises
        ``EngineUnavailable``."""
        borrowed: dict[str, str] = {}
        client_ids = list(client_ids)
        try:
            # With the other requests' writes of this loop turn, in one round trip.
            async with self._pipeline() as pipe:
                for client_id in client_ids:
                    pipe.hgetall(self.keys.session(client_id))
                found = await pipe.execute(raise_on_error=False)
            for client_id, fields in zip(client_ids, found, strict=True):
                if isinstance(fields, _RESPONSE_ERRORS):
                    self._report("a borrowed session", f"a session record Redis refused ({fields})")
                    continue
                record = self._parse_record(client_id, fields) if fields else None
                if record is None:
                    continue  # no such session: the core answers 402
                owner, subscriptions, ack, connected, _ = record
                node = fields.get(b"n", b"").decode()
                if self.engine.adopt(client_id, owner, subscriptions, ack, address, connected):
                    borrowed[client_id] = node
                    self._borrowed.add(client_id)
                    self._load_attributes(client_id, fields)
                    if self._counts is not None:
                        self._counts.known(client_id, fields)
        except _REDIS_ERRORS as error:
            self._failed()
            raise EngineUnavailable(str(error)) from error
        return borrowed

    def drained(self, client_ids: Iterable[str]) -> Drain:
        """Where sessions whose queues the core drained just now stand: this node's cursor and
        the ack batch each reply carries. Taken when the core drains them, not when the write
        is made: a reply may be recorded a loop turn later (the native transport awaits it in
        a task), and a cursor taken then would pass the messages fanned out meanwhile, which
        wait in the queue."""
        reports = {client_id: self.engine.ack_report(client_id) for client_id in client_ids}
        gate = None
        if any(report is None for report in reports.values()):
            # Taken now: a session let go from here on is one this gate holds back.
            assert self._gates is not None
            gate = self._gates.wait()
            self._replays_wait_for(gate, reports)
        return Drain(self._encode(self._positions), reports, gate)

    def _replays_wait_for(
        self, gate: asyncio.Future[frozenset[str] | None], client_ids: Iterable[str]
    ) -> None:
        """The replays queued for sessions just drained are delivered once ``gate`` lets
        their messages go out (see pending_replays.py)."""
        pending = self._pending_replays
        draining = pending.draining(client_ids) if pending is not None else None
        if not draining:
            return

        def passed(gate: asyncio.Future[frozenset[str] | None]) -> None:
            if not gate.cancelled():
                held = gate.result()
                assert pending is not None
                pending.passed(c for c in draining if goes_out(held, c))

        gate.add_done_callback(passed)

    def counts_sessions(self) -> bool:
        """Whether the sessions a batch creates are counted (see ``count_sessions``)."""
        return self._counts is not None

    async def count_sessions(self, outcome: Outcome, address: str | None) -> dict[str, str]:
        """Counts the sessions a batch from ``address`` created against the limits per cookie
        and per address over the cluster (see session_counts.py), before anything else about
        them is written: returns those refused, each with its error (the caller forgets them).
        Raises ``EngineUnavailable``."""
        new = {}
        for kind, client_id, _ in outcome.events:
            info = self.engine.session_info(client_id) if kind == "session_added" else None
            if info is not None:
                new[client_id] = info["browser"]
        if not new:
            return {}
        assert self._counts is not None
        try:
            return await self._counts.count(new, address)
        except _REDIS_ERRORS as error:
            self._failed()
            raise EngineUnavailable(str(error)) from error

    def only_gated(self, drain: Drain) -> bool:
        """Whether the sessions of ``drain`` need nothing written but the gate it waits for
        (no ack extension, first connect recorded): most of all a long-poll answered with
        messages, of a batch that changed nothing else (see ``commit``)."""
        if drain.gate is None:
            return False
        noted = self._connected_noted
        for client_id, report in drain.reports.items():
            if report is not None or client_id not in noted:
                return False
        return True

    def publish_soon(self, outcome: Outcome) -> asyncio.Future[list[Any]] | None:
        """The log appends of a batch that changed nothing else the cluster keeps (it only
        publishes, on channels without a history, and no replay waits to be recorded), queued
        on this loop turn's round trip without a coroutine: its results, or the error the
        round trip met (see ``published``). None when the batch needs ``commit``."""
        relayed = outcome.relayed or ()
        if self._kept is not None and any(
            self.engine.history_rule(channel) is not None for channel, _, _ in relayed
        ):
            return None
        if self._pending_replays is not None and self._pending_replays.to_record:
            return None
        pipe = self._pipeline()
        for channel, message, excluded in relayed:
            self._queue_entry(pipe, self.keys.partition(channel), channel, message, excluded, None)
        assert self._turns is not None
        return self._turns.send(pipe.commands)

    def published(self, sent: asyncio.Future[list[Any]]) -> list[int]:
        """The round trip of ``publish_soon`` completed: returns, as ``commit`` does, the
        publishes whose log Redis refused to store them in (by their index in the outcome's
        ``relayed``), reported. Raises ``EngineUnavailable`` when Redis failed it."""
        error = sent.exception()
        if error is not None:
            if isinstance(error, _REDIS_ERRORS):
                self._failed()
                raise EngineUnavailable(str(error)) from error
            raise error
        return self._report_refused(sent.result())

    async def commit(
        self, outcome: Outcome, drain: Drain, borrowed: dict[str, str]
    ) -> tuple[set[str], list[int]]:
        """Writes what a batch changed before its reply goes out: its publishes to the logs,
        new sessions, subscription changes and removals to their records (telling the node
        serving a borrowed session), and the cursor of every session this node serves whose
        queue the reply drains (``drain``, taken when the core acted). Returns the sessions
        that moved to another node meanwhile (their record names it, or this node let them go
        since): their messages must not go out with this reply; and the publishes whose log
        Redis refused to store them in (bad data under its key), by their index in the
        outcome's ``relayed``. Raises ``EngineUnavailable``."""
        if not outcome.relayed and not outcome.events and not borrowed and self.only_gated(drain):
            assert drain.gate is not None
            return gated_away(drain, await drain.gate), []
        engine = self.engine
        cursor, reports = drain.cursor, drain.reports
        try:
            async with self._pipeline() as pipe:
                for channel, message, excluded in outcome.relayed or ():
                    await self._queue_publish(pipe, channel, message, excluded)
                alive, told, learns = await self._queue_changes(
                    pipe, outcome, cursor, borrowed, reports
                )
                if self._pending_replays is not None:
                    await self._pending_replays.record(pipe)
                if alive:
                    await self._touch(
                        keys=[self.keys.deadlines()],
                        args=[self._deadline_ms, *alive],
                        client=pipe,
                    )
                # A command refused (bad data under its key) is that key's problem alone.
                results = await pipe.execute(raise_on_error=False) if len(pipe) else []
            refused = self._report_refused(results)
            # The publishes were queued first, one command each.
            publishes = len(outcome.relayed or ())
            unstored = [index for index in refused if index < publishes]
            for client_id, owner, places in learns:
                if any(index in places for index in refused):
                    # A log refused the change (bad data under its key): the node serving the
                    # session would never learn of it. It lets the session go, and the node
                    # that takes it over next reads its subscriptions from its record.
                    told.append((owner, f"forget:{client_id}"))
            assert self._gates is not None
            for client_id in alive:
                info = engine.session_info(client_id)
                if info is not None and not info["ack"]:
                    self._gates.settle(client_id, cursor)
            # Where the sessions served stand, with every other request's of this loop turn.
            moved: set[str] = set()
            ended = {c for kind, c, _ in outcome.events if kind == "session_removed"}
            plain: list[str] = []
            acked: list[tuple[str, dict[str, Any], tuple[int | None, int | None]]] = []
            for client_id, report in reports.items():
                if client_id in borrowed or client_id in alive:
                    continue
                if report is None:
                    # The gate taken when its queue was drained says whether its messages go
                    # (it holds back those of a session let go before it completed; one let
                    # go after stood past them, and they must go).
                    plain.append(client_id)
                    continue
                info = engine.session_info(client_id)
                if info is not None:
                    acked.append((client_id, info, report))
                elif client_id not in ended:
                    # Let go since its queue was drained (another node took it over, and
                    # sends what it caught up): as moved, its messages must not go out here.
                    moved.add(client_id)
            if plain:
                assert drain.gate is not None
                held = await drain.gate
                moved.update(c for c in plain if not goes_out(held, c))
            # The ack extension's sessions record their cursor each (see RECORD).
            outcomes = await asyncio.gather(
                *(
                    self._record_soon(
                        client_id,
                        cursor,
                        "1" if info["connected"] else "0",
                        report,
                    )
                    for client_id, info, report in acked
                ),
                return_exceptions=True,
            )
            for (client_id, _, _), result in zip(acked, outcomes, strict=True):
                if isinstance(result, _RESPONSE_ERRORS):
                    await self._rewrite(client_id, result)
                elif isinstance(result, BaseException):
                    raise result
                elif not result:
                    moved.add(client_id)  # another node took it meanwhile
            for node, note in told:
                await self._tell(node, note)
        except _REDIS_ERRORS as error:
            self._failed()
            raise EngineUnavailable(str(error)) from error
        return moved, unstored

    async def _queue_changes(
        self,
        pipe: Any,
        outcome: Outcome,
        cursor: str,
        borrowed: dict[str, str],
        reports: dict[str, tuple[int | None, int | None] | None],
    ) -> tuple[list[str], list[tuple[str, str]], list[tuple[str, str, range]]]:
        """Queues the writes of a batch's events: a new session's record, a changed
        subscription list (by a script that applies the change, so that changes made at once
        on several nodes all hold), a removal; and the first connect of a session drained
        (``reports``) without the ack extension (RECORD notes it for the others). Returns the
        sessions whose deadline moves, what to tell which other node, and the log entries
        through which the node serving a borrowed session learns of its subscription changes
        (the session, that node, their commands' places in ``pipe``)."""
        engine = self.engine
        alive: list[str] = []
        told: list[tuple[str, str]] = []
        learns: list[tuple[str, str, range]] = []
        added = {c for kind, c, _ in outcome.events if kind == "session_added"}
        for client_id, report in reports.items():
            # A session's first connect, once: the record says so (see CLAIM).
            noted = client_id in self._connected_noted or report is not None
            if noted or client_id in borrowed or client_id in added:
                continue
            info = engine.session_info(client_id)
            if info is not None and info["connected"]:
                self._connected_noted.add(client_id)
                await self._connected(
                    keys=[self.keys.session(client_id)], args=[self.id], client=pipe
                )
        for kind, client_id, detail in outcome.events:
            key = self.keys.session(client_id)
            if kind == "session_added":
                info = engine.session_info(client_id)
                if info is not None:
                    self._queue_record(pipe, client_id, info, cursor)
                    alive.append(client_id)
            elif kind in ("subscribe", "unsubscribe"):
                added, removed = (detail, []) if kind == "subscribe" else ([], detail)
                await self._subscriptions(
                    keys=[key], args=[json.dumps(added), json.dumps(removed)], client=pipe
                )
                # The node serving the session learns of it in the log, in order with the
                # messages: every message published after this reply finds it subscribed.
                change = json.dumps({"+": added, "-": removed}).encode()
                first = len(pipe)
                for partition in range(self.keys.partitions):
                    self._queue_entry(pipe, partition, "", change, None, client_id)
                owner = borrowed.get(client_id)
                if owner and owner != self.id:
                    learns.append((client_id, owner, range(first, len(pipe))))
            elif kind == "session_removed":
                pipe.delete(key)
                pipe.zrem(self.keys.deadlines(), client_id)
                if self._counts is not None:
                    for set_key in self._counts.leave(client_id):
                        pipe.zrem(set_key, client_id)
                owner = borrowed.get(client_id)
                if owner and owner != self.id:
                    told.append((owner, f"forget:{client_id}"))
        return alive, told, learns

    async def delivered(self, client_id: str, body: bytes, drain: Drain) -> bytes:
        """A held connect's reply, once where its session stands is recorded (the next gate,
        see gates.py; with the ack extension, its cursor, taken when its queue was drained into
        ``body``): then a node taking the session over after this one dies sends nothing
        twice. If the session moved meanwhile, its messages stay for the node that has it now."""
        report = drain.reports.get(client_id)
        if report is None:
            assert drain.gate is not None
            held = await drain.gate
            return body if goes_out(held, client_id) else replies_only(body)
        kept = await self._record_delivery(client_id, drain.cursor, "1", report)
        if kept is None:
            # Nothing to move to while Redis is away: the reply goes out as it is, but for a
            # batch of the ack extension, which its client will not acknowledge if it never
            # sees it: its messages go with the next one.
            return replies_only(body)
        return body if kept else replies_only(body)

    def delivered_soon(
        self, client_id: str, body: bytes, drain: Drain
    ) -> asyncio.Future[bytes] | None:
        """``delivered`` without a task or coroutine, when the reply waits for the gate alone
        (no ack extension): a future the gate's callback resolves. None otherwise."""
        gate = drain.gate
        if gate is None or drain.reports.get(client_id, True) is not None:
            return None
        return when_passed(
            gate, lambda held: body if goes_out(held, client_id) else replies_only(body)
        )

    def pushed(self, client_id: str, body: bytes) -> GatedPush:
        """Messages just drained for a push on the session's socket (outside any connect
        reply), to go out once the next gate completed, as a connect reply's (see
        ``delivered``). ``None`` when the session moved meanwhile: they are the new node's.
        Resolved by the gate itself: a push costs no task, nor a loop turn of its own."""
        gates = self._gates
        assert gates is not None
        self._replays_wait_for(gates.wait(), [client_id])
        return gates.push(client_id, body)

    def gate_soon(self) -> None:
        """Messages will be drained for a push in the next loop turn: the gate they wait for
        is asked for now."""
        assert self._gates is not None
        self._gates.wait()

    async def _record_delivery(
        self,
        client_id: str,
        cursor: str,
        connected: str,
        report: tuple[int | None, int | None],
    ) -> bool | None:
        """Records the cursor of messages about to go out: whether they may (True; also when
        the record was bad data, which is rewritten), False when the session moved to another
        node meanwhile, None when Redis is away."""
        try:
            return bool(await self._record_soon(client_id, cursor, connected, report))
        except _RESPONSE_ERRORS as error:
            await self._rewrite(client_id, error)
            return True
        except _REDIS_ERRORS as error:
            self._failed()
            assert self._context is not None
            self._context.outages.log(error)  # one line a second, not one per delivery
            return None

    async def _record_soon(
        self,
        client_id: str,
        cursor: str,
        connected: str,
        report: tuple[int | None, int | None],
    ) -> int:
        """Records the cursor of a session with the ack extension (and moves its deadline) with
        every other of this loop turn, in one round trip: 1, or 0 when it moved to another node.
        ``report`` is the core's ``ack_report``: the batch the client acknowledged and the one
        the reply carries. Raises what Redis raises (for this session alone when its record is
        bad data)."""
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        acked, built = report
        ack = ("1", "" if acked is None else str(acked), "" if built is None else str(built))
        self._records.append((client_id, cursor, connected, ack, done))
        if len(self._records) == 1:
            asyncio.get_running_loop().call_soon(self._write_records)
        return await done

    def _write_records(self) -> None:
        batch, self._records = self._records, []
        self._in_background(self._write_record_batch(batch))

    def _in_background(self, write: Coroutine[Any, Any, None]) -> None:
        """Runs a write in a task of its own, cancelled when the node stops."""
        task = asyncio.create_task(write)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write_record_batch(self, batch: list[_Record]) -> None:
        try:
            results = await self._write_records_now(batch)
        except Exception as error:
            for *_, done in batch:
                if not done.done():
                    done.set_exception(error)
            return
        except BaseException:  # cancelled (the node stops)
            for *_, done in batch:
                done.cancel()
            raise
        for (*_, done), result in zip(batch, results, strict=True):
            if done.done():
                continue
            if isinstance(result, Exception):
                done.set_exception(result)
            else:
                done.set_result(int(result))

    async def _write_records_now(self, batch: list[_Record]) -> list[Any]:
        """Writes a batch of the ack extension's records (one call each: their batches are
        kept, see RECORD), and their deadlines, in one round trip. Returns each session's
        result: 1, 0 (moved), or the error raised for its record."""
        async with self._pipeline() as pipe:
            await self._touch(
                keys=[self.keys.deadlines()],
                args=[self._deadline_ms, *(record[0] for record in batch)],
                client=pipe,
            )
            for client_id, cursor, connected, ack, _ in batch:
                await self._record(
                    keys=[self.keys.session(client_id)],
                    args=[self.id, cursor, self._session_ttl_ms, connected, *ack],
                    client=pipe,
                )
            written: list[Any] = await pipe.execute(raise_on_error=False)
        return written[1:]  # after the deadlines

    async def publish(self, relayed: list[tuple[str, bytes, str | None]]) -> None:
        """Writes publishes the server itself made (``send``). Raises ``EngineUnavailable``."""
        try:
            await self._resume()
            async with self._pipeline() as pipe:
                for channel, message, excluded in relayed:
                    await self._queue_publish(pipe, channel, message, excluded)
                await pipe.execute()
        except _REDIS_ERRORS as error:
            self._failed()
            raise EngineUnavailable(str(error)) from error

    async def replay_feed(
        self, replays: Iterable[tuple[str, int]]
    ) -> tuple[list[tuple[str, int, list[bytes] | None, bool]], dict[tuple[str, int], int]]:
        """What the replays a batch asks for (channel, id; -2: every message kept) read, for
        the core's ``set_replay_feed``: the messages after each id up to where this node's
        fan-out of the log stands, or None when that id cannot be replayed after (see
        cluster/history.py); and where each replay with messages was cut (for ``replayed``).
        No more than a session may take at once is read, in at most ``MAX_REPLAY_READS``
        reads: past that, a replay is marked as too many. The caller processes the batch with
        no wait after this returns. Raises ``EngineUnavailable``."""
        budget = self.engine.max_replayed()
        reads: dict[tuple[str, int], Kept | None] = {}
        unread: list[tuple[str, int]] = []  # past the budget
        try:
            await self._resume()
            for channel, after in dict.fromkeys(replays):
                if budget < 0 or len(reads) >= MAX_REPLAY_READS:
                    unread.append((channel, after))
                    continue
                read = await self._read_kept(channel, None if after == -2 else after)
                reads[(channel, after)] = read
                budget -= len(read.entries) if read is not None else 0
            # Until this node's fan-out stands no further than each read saw: the messages
            # between reach the session from nowhere else.
            while behind := [
                (key, read)
                for key, read in reads.items()
                if read is not None and self._positions[self.keys.partition(key[0])] > read.head
            ]:
                for (channel, after), read in behind:
                    since = None if read.base is None else read.base + read.head
                    if since is None and after != -2:
                        since = after
                    more = await self._read_kept(channel, since)
                    reads[(channel, after)] = None if more is None else joined(read, more)
        except _REDIS_ERRORS as error:
            self._failed()
            raise EngineUnavailable(str(error)) from error
        feed: list[tuple[str, int, list[bytes] | None, bool]] = [
            (channel, after, None, True) for channel, after in unread
        ]
        cuts: dict[tuple[str, int], int] = {}
        for (channel, after), found in reads.items():
            partition = self.keys.partition(channel)
            if found is not None and found.epoch != self._epochs[partition]:
                self._failed()  # the next request finds out what was lost
                raise EngineUnavailable("the cluster's Redis lost its data: this node catches up")
            rule = self.engine.history_rule(channel)
            cut = self._positions[partition]
            messages = None
            if found is not None and rule is not None:
                messages = replayed_messages(found, after, rule[1], cut)
            feed.append((channel, after, messages, False))
            if messages:
                cuts[(channel, after)] = cut
        return feed, cuts

    async def _read_kept(self, channel: str, after: int | None) -> Kept | None:
        """A channel's history after an id (see ClusterHistory.read); None, reported, when bad
        data under its keys keeps it from being read."""
        assert self._kept is not None
        try:
            return await self._kept.read(channel, after)
        except _RESPONSE_ERRORS as error:
            problem = f"a history Redis refused to read ({error})"
        except ValueError as error:
            problem = f"a history that cannot be read ({error})"
        self._report(f"history {channel}", problem)
        return None

    def replayed(
        self,
        outcome: Outcome,
        replays: list[tuple[str, str, int]],
        cuts: dict[tuple[str, int], int],
    ) -> None:
        """Notes the replays a batch queued (those of its subscribes that succeeded, cut where
        ``replay_feed`` says): they move with their session until delivered (see
        pending_replays.py), recorded with the batch's other changes."""
        pending = self._pending_replays
        if pending is None:
            return
        subscribed = {
            (client_id, channel)
            for kind, client_id, channels in outcome.events
            if kind == "subscribe"
            for channel in channels
        }
        for client_id, channel, after in replays:
            cut = cuts.get((channel, after))
            info = self.engine.session_info(client_id)
            if cut is None or (client_id, channel) not in subscribed or info is None:
                continue
            if not info["ack"]:
                pending.queued(client_id, [(channel, after, cut)])

    async def read_history(self, channel: str, after: int) -> list[bytes] | None:
        """The messages kept on ``channel`` after the id ``after`` (-2: all), or None when
        that id cannot be read after. Raises ``EngineUnavailable``."""
        rule = self.engine.history_rule(channel)
        if self._kept is None or rule is None:
            return None
        try:
            await self._resume()
            read = await self._read_kept(channel, None if after == -2 else after)
        except _REDIS_ERRORS as error:
            self._failed()
            raise EngineUnavailable(str(error)) from error
        return None if read is None else replayed_messages(read, after, rule[1])

    async def send_to(self, client_id: str, channel: str, message: bytes) -> None:
        """Carries a message to one session, wherever it is served: through the log, so that it
        takes its place among the session's other messages and survives the session moving.
        Raises ``ClientNotFoundError`` when no node has the session, ``EngineUnavailable``."""
        try:
            await self._resume()
            here = self.engine.session_info(client_id) is not None
            if not here and not await self.redis.exists(self.keys.session(client_id)):
                raise ClientNotFoundError(f"no session with client id {client_id}")
            async with self._pipeline() as pipe:
                await self._queue_publish(pipe, channel, message, None, client_id)
                await pipe.execute()
        except _REDIS_ERRORS as error:
            self._failed()
            raise EngineUnavailable(str(error)) from error

    def forgotten(self, client_id: str) -> None:
        """A session left this node (another serves it, or it ended): its messages waiting
        to go out do not."""
        if self._gates is not None:
            self._gates.forget(client_id)
        self._connected_noted.discard(client_id)
        self._kept_alive.pop(client_id, None)
        self._borrowed.discard(client_id)
        if self._counts is not None:
            self._counts.leave(client_id)
        if self._pending_replays is not None:
            self._pending_replays.forget(client_id)

    def removed(self, client_ids: list[str]) -> None:
        """Sessions this node ended outside a request (expiry, the application): their records
        go, in the background."""
        counted = self._counts
        sets = [(s, c) for c in client_ids for s in counted.leave(c)] if counted else []
        for client_id in client_ids:
            self.forgotten(client_id)
        if client_ids:
            self._tasks.append(asyncio.create_task(self._delete(client_ids, sets)))

    async def _delete(self, client_ids: list[str], sets: list[tuple[str, str]]) -> None:
        """Deletes sessions' records and deadlines, and takes them out of the ``sets`` they
        were counted in (set, client id)."""
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.delete(*(self.keys.session(c) for c in client_ids))
                pipe.zrem(self.keys.deadlines(), *client_ids)
                for set_key, client_id in sets:
                    pipe.zrem(set_key, client_id)
                await pipe.execute()
        except _REDIS_ERRORS as error:
            log.warning("could not delete %d session records: %s", len(client_ids), error)

    # Writing

    async def _queue_publish(
        self,
        pipe: Batch,
        channel: str,
        message: bytes,
        excluded: str | None,
        to: str | None = None,
    ) -> None:
        partition = self.keys.partition(channel)
        rule = self.engine.history_rule(channel) if self._kept and to is None else None
        if rule is None:
            self._queue_entry(pipe, partition, channel, message, excluded, to)
            return
        assert self._kept is not None
        args: list[str | bytes | int] = [
            secrets.token_hex(8),
            self.history,
            channel,
            message,
            excluded or "",
            "",
        ]
        await self._kept.publish(pipe, partition, args, channel, rule)

    def _queue_entry(
        self,
        pipe: Batch,
        partition: int,
        channel: str,
        message: bytes,
        excluded: str | None,
        to: str | None,
    ) -> None:
        keys = self.keys
        fields = (channel, message, excluded or "", to or "")
        pipe.append_entry(keys.head(partition), keys.log(partition), self.history, fields)

    def _queue_record(self, pipe: Any, client_id: str, info: dict[str, Any], cursor: str) -> None:
        key = self.keys.session(client_id)
        record = {
            "b": info["browser"],
            "s": json.dumps(info["subscriptions"]),
            "a": "1" if info["ack"] else "0",
            "k": "1" if info["connected"] else "0",
            "n": self.id,
            "c": cursor,
        }
        address = self._counts.address_of(client_id) if self._counts is not None else None
        if address is not None:
            record["q"] = address
        if info["connected"]:
            self._connected_noted.add(client_id)
        self._kept_alive[client_id] = asyncio.get_running_loop().time()
        pipe.hset(key, mapping=record)
        pipe.pexpire(key, self._session_ttl_ms)

    async def _rewrite(self, client_id: str, error: BaseException) -> None:
        """A session's record was not one (another type under its key): reported once, and
        written again from the session here."""
        self._report(f"session {client_id}", f"a session record Redis refused ({error})")
        info = self.engine.session_info(client_id)
        assert self._gates is not None
        cursor = self._encode(self._positions)
        if info is not None and not info["ack"]:
            cursor = self._gates.standing(client_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(self.keys.session(client_id))
            if info is not None:
                self._queue_record(pipe, client_id, info, cursor)
            await pipe.execute()
        if info is not None and not info["ack"]:
            self._gates.settle(client_id, cursor)

    def _encode(self, positions: Iterable[int]) -> str:
        # Every reply and gate asks for the cursor; it changes only as the logs are read.
        key = (tuple(self._epochs), tuple(positions))
        if key != self._encoded[0]:
            self._encoded = (key, Cursor(*key).encode())
        return self._encoded[1]

    # Taking a session over

    def _parse_record(
        self, client_id: str, fields: dict[bytes, bytes]
    ) -> tuple[str, list[str], bool, bool, Cursor] | None:
        """A session record's cookie, subscriptions, ack extension, first connect and cursor;
        ``None`` (reported once) when it is not a record."""
        try:
            browser = fields[b"b"].decode()
            subscriptions = json.loads(fields[b"s"])
            if not isinstance(subscriptions, list) or not all(
                isinstance(name, str) for name in subscriptions
            ):
                raise ValueError("subscriptions are not a list of names")
            cursor = Cursor.decode(fields[b"c"], self.keys.partitions)
        except (KeyError, ValueError, UnicodeDecodeError) as error:
            self._report(f"session {client_id}", f"a malformed session record ({error})")
            return None
        return browser, subscriptions, fields.get(b"a") == b"1", fields.get(b"k") == b"1", cursor

    async def _adopt(
        self,
        client_id: str,
        address: str | None,
        browser: str | None,
        trusted: bool,
        acked: int | None = None,
    ) -> None:
        key = self.keys.session(client_id)
        trust = "1" if trusted or self.trust_client_session else "0"
        try:
            claimed = await self._claim(
                keys=[key],
                args=[
                    self.id,
                    self._session_ttl_ms,
                    browser or "",
                    trust,
                    "" if acked is None else str(acked),
                ],
            )
        except _RESPONSE_ERRORS as error:
            self._report(f"session {client_id}", f"a session record Redis refused ({error})")
            await self.redis.delete(key)
            return
        if not claimed:
            log.debug("node %s: no session %s in the cluster", self.id, client_id)
            return  # no such session anywhere: the core answers 402
        before, flat = claimed
        fields = {flat[i]: flat[i + 1] for i in range(0, len(flat) - 1, 2)}
        record = self._parse_record(client_id, fields)
        if record is None:
            await self.redis.delete(key)
            return
        node = before.decode()
        adopting = self._adopting[client_id] = asyncio.Event()
        try:
            await self._adopt_claimed(client_id, address, fields, record, node)
        finally:
            adopting.set()
            if self._adopting.get(client_id) is adopting:
                del self._adopting[client_id]

    async def _adopt_claimed(
        self,
        client_id: str,
        address: str | None,
        fields: dict[bytes, bytes],
        record: tuple[str, list[str], bool, bool, Cursor],
        node: str,
    ) -> None:
        """Takes over a session just claimed from ``node``, its record read as ``fields``."""
        key = self.keys.session(client_id)
        owner, subscriptions, ack, connected, cursor = record
        standing = b""
        if not ack:
            # Where it stood (see gates.py): the node serving it lets it go and says so, or is
            # fenced; its record then holds that cursor alone until this node's next gate.
            standing = await self._standing(client_id, node, fields)
            try:
                cursor = Cursor.decode(standing, self.keys.partitions)
            except ValueError as error:
                self._report(f"session {client_id}", f"a malformed session record ({error})")
                await self.redis.delete(key)
                return
            if not await self._settle(keys=[key], args=[self.id, standing]):
                log.debug("node %s: session %s was claimed again meanwhile", self.id, client_id)
                return
        replays, replays_version = recorded(fields) if not ack else ([], 0)
        # Replays not delivered yet go with it (see pending_replays.py): read before what it
        # missed, which must be queued with no wait once read.
        again = await self._replays_again(replays, subscriptions) if replays else []
        missed = await self._missed_since(cursor)
        if missed is None:
            # What it missed is no longer kept (or the logs were lost): it cannot be
            # recovered, and its client is told so by a 402 and handshakes again.
            log.info("session %s cannot be recovered from %s", client_id, cursor)
            await self.redis.delete(key)
            return
        # From here on nothing waits: the session joins the fan-out at the position the
        # entries read reach, so that it misses nothing and gets nothing twice.
        engine = self.engine
        try:
            adopted = engine.adopt(client_id, owner, subscriptions, ack, address, connected)
        except Exception as error:  # bad channel names in the record
            self._report(f"session {client_id}", f"a session record the core refused ({error})")
            await self.redis.delete(key)
            return
        if adopted and ack:
            # Its next batches are numbered after those the previous node sent, so that the
            # batch its client acknowledges next names one batch only.
            engine.continue_ack_after(client_id, _last_batch(fields))
        if adopted:
            self._load_attributes(client_id, fields)
            if self._counts is not None:
                self._counts.known(client_id, fields)
            if connected:
                self._connected_noted.add(client_id)
            assert self._gates is not None
            if not ack:
                self._gates.settle(client_id, standing.decode())
            self._kept_alive[client_id] = asyncio.get_running_loop().time()
            for (channel, _, cut), messages in again:
                partition = self.keys.partition(channel)
                replayed = [(channel, message, None, client_id) for message in messages]
                missed[partition] = spliced(missed[partition], channel, cut, replayed)
            if self._pending_replays is not None:
                kept = [replay for replay, _ in again]
                self._pending_replays.adopted(client_id, kept, replays, replays_version)
            self._catch_up(client_id, subscriptions, missed, self._gates.stamp_at(cursor.encode()))
        if ack and node != self.id:
            await self._tell(node, f"forget:{client_id}")

    async def _standing(self, client_id: str, node: str, fields: dict[bytes, bytes]) -> bytes:
        """Where a session just claimed stood. The node whose gate marked its record last (or,
        if none did, ``node``, which served it) sends its messages until now: that node lets it
        go and says where (``release``); one that does not answer, or is not listening (it
        died), is fenced, and the record read against the last gate it completed."""
        assert self._gates is not None
        sender = marker(fields) or node
        if sender == self.id:
            return settled(fields, self._gates.done, self._gates.done_cursor.encode())
        loop = asyncio.get_running_loop()
        nonce = secrets.token_hex(4)
        waiter: asyncio.Future[str] = loop.create_future()
        self._releases[nonce] = waiter
        try:
            if await self._tell(sender, f"release:{client_id}:{self.id}:{nonce}"):
                with contextlib.suppress(TimeoutError):
                    text = await asyncio.wait_for(waiter, RELEASE_WAIT)
                    if text:
                        return text.encode()
                    # It does not have the session: its last gate is final for it.
                    return settled(fields, *await self._state_of(sender))
            log.info("node %s did not let %s go: it is fenced", sender, client_id)
            return settled(fields, *await self._state_of(sender, fence=True))
        finally:
            del self._releases[nonce]

    async def _state_of(self, node: str, fence: bool = False) -> tuple[int, bytes | None]:
        """Another node's last gate completed, and its cursor then (``fence``: no gate of it
        completes after this)."""
        key = self.keys.node_state(node)
        if fence:
            state: Any = await self._fence(keys=[key], args=[self._session_ttl_ms])
        else:
            state = await self.redis.hmget(key, ["g", "p"])
        gate, cursor = state
        return int(gate or 0), cursor

    def _catch_up(
        self,
        client_id: str,
        subscriptions: list[str],
        missed: list[list[tuple[int, Entry]]],
        stamp: int,
    ) -> None:
        """Queues for a session just taken over what it missed: each log's messages on its
        channels and those sent to it alone, in order. Its subscription changes met on the
        way are applied in turn: the record read may predate one made on another node while
        this one claimed it, and this node's fan-out passed over its entry then (the session
        was not here yet). Each log is gone through from the record's subscriptions; a change
        is written to every log, and the session keeps what the log that had most of them
        left."""
        engine = self.engine
        most, kept = 0, subscriptions
        for partition, entries in enumerate(missed):
            changes = 0
            pending: list[tuple[str, bytes, str | None, bool]] = []
            for _, (channel, message, excluded, to) in entries:
                if to not in (None, client_id):
                    continue  # sent to another session alone
                if channel != SUBSCRIPTION_CHANGE:
                    pending.append((channel, message, excluded, to == client_id))
                    continue
                engine.catch_up(client_id, pending, stamp)
                pending = []
                self._change_subscriptions(partition, client_id, message)
                changes += 1
            engine.catch_up(client_id, pending, stamp)
            if changes:
                info = engine.session_info(client_id)
                if changes >= most and info is not None:
                    most, kept = changes, info["subscriptions"]
                engine.resubscribe(client_id, subscriptions)
        if most:
            engine.resubscribe(client_id, kept)

    async def _replays_again(
        self, replays: list[Replay], subscriptions: list[str]
    ) -> list[tuple[Replay, list[bytes]]]:
        """The messages of a session's replays not delivered yet (channel, id, cut): each
        channel's history after the id up to the cut. A replay of a channel it no longer
        subscribes to, or whose messages went meanwhile, is passed over (logged)."""
        kept = self._kept
        again: list[tuple[Replay, list[bytes]]] = []
        reach = [0] * self.keys.partitions
        for replay in replays:
            channel, after, cut = replay
            rule = self.engine.history_rule(channel)
            if kept is None or rule is None or channel not in subscriptions:
                continue
            read = await self._read_kept(channel, None if after == -2 else after)
            partition = self.keys.partition(channel)
            messages = None
            if read is not None and read.epoch == self._epochs[partition]:
                messages = replayed_messages(read, after, rule[1], cut)
            if messages is None:
                log.warning(
                    "a replay of %s after %s moving with its session is lost", channel, after
                )
                continue
            again.append((replay, messages))
            reach[partition] = max(reach[partition], cut)
        # This node's fan-out past each cut first: what it fans out from there on is not the
        # replays', and would otherwise reach the session twice.
        await self._reach(Cursor(tuple(self._epochs), tuple(reach)))
        return again

    async def _missed_since(self, cursor: Cursor) -> list[list[tuple[int, Entry]]] | None:
        """Every entry of each log after ``cursor`` up to where this node's fan-out stands, in
        order; read until this node's position is reached after the last read (it moves
        meanwhile). ``None`` when they cannot all be had. Raises ``EngineUnavailable`` when
        this node's reading does not reach the cursor in time."""
        await self._reach(cursor)
        read_to = list(cursor.offsets)
        for partition, epoch in enumerate(cursor.epochs):
            if epoch is not None and epoch != self._epochs[partition]:
                return None
        missed: list[list[tuple[int, Entry]]] = [[] for _ in range(self.keys.partitions)]
        while True:
            behind = [p for p in range(self.keys.partitions) if read_to[p] < self._positions[p]]
            if not behind:
                return missed
            for partition in behind:
                start, end = read_to[partition] + 1, self._positions[partition]
                entries: Any = await self.redis.xrange(
                    self.keys.log(partition), f"0-{start}", f"0-{end}", count=READ_BATCH
                )
                if not entries or offset_of(entries[0][0]) != start:
                    return None  # trimmed away, or lost
                for entry_id, fields in entries:
                    entry = _entry(fields)
                    offset = offset_of(entry_id)
                    if entry is not None:
                        missed[partition].append((offset, entry))
                    read_to[partition] = offset

    async def _reach(self, cursor: Cursor) -> None:
        """Waits until this node's fan-out stands at ``cursor`` or past it in every log of the
        same epoch. A session taken over from a node whose readers were ahead of this one's
        would otherwise get again, from this node's fan-out, what it was delivered there."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REACH_WAIT
        while any(
            epoch == self._epochs[p] and self._positions[p] < offset
            for p, (epoch, offset) in enumerate(zip(cursor.epochs, cursor.offsets, strict=True))
        ):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise EngineUnavailable("this node's reading of the logs is behind")
            self._advanced.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._advanced.wait(), remaining)

    # Reading the logs

    async def _read_heads(self) -> list[tuple[str | None, int]]:
        """Each log's epoch (made now if it has none) and last offset."""
        heads = []
        for partition in range(self.keys.partitions):
            head = self.keys.head(partition)
            await self.redis.hsetnx(head, "epoch", secrets.token_hex(8))
            epoch, offset = cast(list[Any], await self.redis.hmget(head, ["epoch", "offset"]))
            heads.append((epoch.decode() if epoch is not None else None, int(offset or 0)))
        return heads

    def _start_at(self, heads: list[tuple[str | None, int]]) -> None:
        for partition, (epoch, offset) in enumerate(heads):
            if epoch != self._epochs[partition]:
                self._starts[partition] += 1
            self._epochs[partition] = epoch
            self._positions[partition] = offset
        self._advanced.set()

    async def _follow(self, partition: int) -> None:
        """Fans out every entry of one partition's log, in order, as it is written."""
        assert self._connection is not None
        reader = self._connection.reader
        gates = self._gates
        assert gates is not None
        log_key = self.keys.log(partition)
        while not self._stopping:
            start = self._starts[partition]
            try:
                read: Any = await reader.xread(
                    {log_key: f"0-{self._positions[partition]}"},
                    count=READ_BATCH,
                    block=READ_BLOCK_MS,
                )
            except asyncio.CancelledError:
                raise
            except _RESPONSE_ERRORS as error:
                # Not a log under its key: nothing can be read from it until that is fixed.
                self._report(f"partition {partition}", f"a log Redis refused to read ({error})")
                await asyncio.sleep(RETRY_DELAY * 10)
                continue
            except _REDIS_ERRORS as error:
                log.warning("reading the cluster's log failed: %s", error)
                await self._check_later()
                continue
            except Exception:
                # Not a Redis error (the client's, or this code's): read again all the same.
                # A reader that ended would lose every later message of its partition for
                # the sessions here, without a word.
                log.exception("reading partition %d of the cluster's log failed", partition)
                await self._check_later()
                continue
            if self._starts[partition] != start:
                continue  # read from where the old log stood: its entries are not the new one's
            for _, entries in read or ():
                for entry_id, fields in entries:
                    offset = offset_of(entry_id)
                    if offset <= self._positions[partition]:
                        continue
                    stamp = gates.stamp(tuple(self._positions))
                    self._positions[partition] = offset
                    self._fan_out(partition, fields, stamp)
            self._advanced.set()

    async def _check_later(self) -> None:
        """After a log read failed: Redis may have lost its data meanwhile; checked after a
        pause (a failure again is met by the next read)."""
        self._failed()
        await asyncio.sleep(RETRY_DELAY)
        try:
            await self._resume()
        except _REDIS_ERRORS:
            pass
        except Exception:
            log.exception("checking whether the cluster's Redis lost its data failed")

    def _fan_out(self, partition: int, fields: dict[bytes, bytes], stamp: int) -> None:
        entry = _entry(fields)
        if entry is None:
            self._report(f"partition {partition}", "a log entry without its fields")
            return
        channel, message, excluded, to = entry
        if channel == SUBSCRIPTION_CHANGE:
            self._change_subscriptions(partition, to, message)
            return
        try:
            if to is None:
                outcome = self.engine.fan_out(channel, message, excluded, stamp)
            elif self.engine.session_info(to) is not None:
                outcome = self.engine.deliver_message(to, message, stamp)
            else:
                return  # for a session served elsewhere
        except Exception as error:  # garbage in the log: that entry alone is passed over
            self._report(f"partition {partition}", f"a log entry the core refused ({error})")
            return
        assert self._context is not None
        self._context.apply(outcome)

    def _change_subscriptions(self, partition: int, client_id: str | None, change: bytes) -> None:
        """A session's subscriptions changed on another node (or this one): applied here if this
        node serves it. A change it made here already is applied again, to no effect."""
        engine = self.engine
        info = engine.session_info(client_id) if client_id else None
        if info is None or client_id is None:
            return
        try:
            diff = json.loads(change)
            names = set(info["subscriptions"]) - set(diff["-"]) | set(diff["+"])
            engine.resubscribe(client_id, sorted(names))
        except (ValueError, TypeError, KeyError) as error:
            self._report(f"partition {partition}", f"a subscription change refused ({error})")

    def _failed(self) -> None:
        """Redis failed (or may have lost its data): checked again before this node acts."""
        self._suspect = True
        self._redis_errors += 1

    async def _resume(self) -> None:
        """After Redis failed, before this node acts again: if Redis lost its data meanwhile
        (restarted empty), every session here is gone with it, and their clients must
        handshake again. Raises what Redis raises while it is still away.

        Those that come while a check is under way share its outcome, failure included: while
        Redis does not answer, each request waits for one check (``REPLY_WAIT`` at most), not
        for each of those queued before it in turn."""
        if not self._suspect:
            return
        check = self._resuming
        if check is None or check.done():
            check = self._resuming = asyncio.create_task(self._check_data())
            self._writes.add(check)  # cancelled when the node stops
            check.add_done_callback(self._writes.discard)
            check.add_done_callback(_checked)
        try:
            await asyncio.shield(check)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if check.cancelled() and not (task is not None and task.cancelling()):
                raise closed_error() from None  # the node stops, not the caller
            raise

    async def _check_data(self) -> None:
        failures = self._redis_errors
        heads = await self._read_heads()
        if self._redis_errors == failures:  # else Redis failed again meanwhile: checked again
            self._suspect = False
        self._redis_recoveries += 1
        if [epoch for epoch, _ in heads] != self._epochs:
            # The logs lost start again: read them from their new start. Those kept (on a
            # Redis Cluster, those of the shards that kept their data) go on.
            self._start_at(
                [
                    (epoch, self._positions[p] if epoch == self._epochs[p] else 0)
                    for p, (epoch, _) in enumerate(heads)
                ]
            )
            log.warning("the cluster's Redis lost its data: every session on %s ends", self.id)
            assert self._context is not None
            self._context.end_all_sessions()

    async def _listen_for_control(self) -> None:
        """Other nodes tell this one to let go of sessions they took over."""
        assert self._connection is not None
        while not self._stopping:
            try:
                # Closed here when the task is cancelled, not whenever it is collected: its
                # connection must not outlive the node.
                notes = self._connection.notes(self.keys.node(self.id))
                async with contextlib.aclosing(notes):
                    async for note in notes:
                        await self._obey(note.decode(errors="replace"))
            except asyncio.CancelledError:
                raise
            except _REDIS_ERRORS as error:
                log.warning("the cluster's control channel failed: %s", error)
                await asyncio.sleep(RETRY_DELAY)
            except Exception:
                # Listened to again whatever failed: without it, sessions taken over elsewhere
                # would stay here too.
                log.exception("the cluster's control channel failed")
                await asyncio.sleep(RETRY_DELAY)

    async def _end_orphans(self) -> None:
        """Ends the sessions whose deadline passed in Redis: those whose node died (a live node
        ends its sessions itself, sooner). Each is taken by one node, which announces it."""
        while not self._stopping:
            await asyncio.sleep(ORPHANS_EVERY)
            ended: list[tuple[str, Any]] = []
            try:
                taken: Any = await self._pop_expired(
                    keys=[self.keys.deadlines()], args=[ORPHANS_AT_ONCE]
                )
                if taken:
                    ids = [client_id.decode() for client_id in taken]
                    # Their records go, and their attributes with the announcement of their end.
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for client_id in ids:
                            pipe.hgetall(self.keys.session(client_id))
                        # One key per command: on a Redis Cluster the keys are in many slots.
                        for client_id in ids:
                            pipe.delete(self.keys.session(client_id))
                        records = await pipe.execute(raise_on_error=False)
                    ended = list(zip(ids, records, strict=False))
                    await self._uncount(ended)
            except asyncio.CancelledError:
                raise
            except _REDIS_ERRORS as error:
                log.warning("looking for sessions whose node died failed: %s", error)
                continue
            except Exception:
                log.exception("looking for sessions whose node died failed")
                continue
            assert self._context is not None
            for client_id, record in ended:
                self._context.end_orphan(client_id, record if isinstance(record, dict) else {})

    async def _uncount(self, ended: list[tuple[str, Any]]) -> None:
        """Takes sessions whose node died out of the sets they were counted in, as their
        records (read as they ended) say."""
        if self._counts is None:
            return
        counts = self._counts
        leaving = [
            (set_key, client_id)
            for client_id, record in ended
            if isinstance(record, dict)
            for set_key in counts.sets_in_record(record)
        ]
        if leaving:
            async with self.redis.pipeline(transaction=False) as pipe:
                for set_key, client_id in leaving:
                    pipe.zrem(set_key, client_id)
                await pipe.execute(raise_on_error=False)

    async def _tell(self, node: str, note: str) -> int:
        """Sends a note to another node: how many listened (0 when that node is gone)."""
        assert self._connection is not None
        return await self._connection.tell(self.keys.node(node), note)

    def _fenced(self) -> None:
        """Another node fenced this one (it took this one for dead): every session goes from
        here, unannounced; their clients' next requests take them over again, where their
        records stand, read against the gates this node completed before. So that none
        completed later counts, it goes on under a new id."""
        assert self._context is not None and self._gates is not None
        for client_id in self.engine.session_ids():
            self._context.let_go(client_id)
        self.id = secrets.token_hex(8)
        self._gates.rename(self.id)
        if not self._stopping:
            self._listen()

    def _gate_failed(self, error: BaseException) -> None:
        self._failed()
        log.warning("could not record where this node's sessions stand: %s", error)

    def _gate_refused(self, client_id: str, error: BaseException) -> None:
        self._in_background(self._rewrite(client_id, error))

    async def _keep_alive(self) -> None:
        """Moves the deadline of every session here, and the life of its record, about three
        times per time to live (a session's messages and connects write nothing per session)."""
        loop = asyncio.get_running_loop()
        period = self.session_ttl / 3
        while not self._stopping:
            await asyncio.sleep(period / 2)
            now = loop.time()
            here = set(self.engine.session_ids())
            for client_id in self._kept_alive.keys() - here:
                del self._kept_alive[client_id]
            due = [c for c in here if now - self._kept_alive.get(c, 0.0) >= period]
            for start in range(0, len(due), KEEP_ALIVE_AT_ONCE):
                batch = due[start : start + KEEP_ALIVE_AT_ONCE]
                try:
                    async with self.redis.pipeline(transaction=False) as pipe:
                        await self._touch(
                            keys=[self.keys.deadlines()],
                            args=[self._deadline_ms, *batch],
                            client=pipe,
                        )
                        for client_id in batch:
                            pipe.pexpire(self.keys.session(client_id), self._session_ttl_ms)
                        if self._counts is not None:
                            self._counts.queue_keep_alive(pipe, batch)
                        await pipe.execute(raise_on_error=False)
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    log.warning("could not keep %d sessions alive: %s", len(batch), error)
                    break
                for client_id in batch:
                    self._kept_alive[client_id] = now

    async def _obey(self, note: str) -> None:
        """What another node tells this one about a session this one serves: to let it go
        (it took it over, or ended it)."""
        what, _, client_id = note.partition(":")
        client_id, _, detail = client_id.partition(":")
        if what == "released":
            waiter = self._releases.get(client_id)  # by its nonce
            if waiter is not None and not waiter.done():
                waiter.set_result(detail)
            return
        if what == "release":
            # In a task: the answer may wait for a take-over here, which waits for notes.
            asker, _, nonce = detail.partition(":")
            self._in_background(self._release(client_id, asker, nonce))
            return
        engine = self.engine
        info = engine.session_info(client_id)
        if info is None:
            return  # not here (any more)
        assert self._context is not None
        if what == "forget":
            log.debug("node %s lets session %s go", self.id, client_id)
            self._context.let_go(client_id)
        elif what == "attributes":
            # Another node changed them while it borrowed the session.
            try:
                fields: Any = await self.redis.hgetall(self.keys.session(client_id))
            except _REDIS_ERRORS as error:
                log.warning("could not read the attributes of %s: %s", client_id, error)
                return
            if fields:
                self._load_attributes(client_id, fields)

    async def _release(self, client_id: str, asker: str, nonce: str) -> None:
        """Another node took a session over: this one lets it go, and tells that node where it
        stood as of this node's last gate ("" when it is not this node's: that node then reads
        its record against this node's last gate). A take-over of it under way here ends
        first."""
        adopting = self._adopting.get(client_id)
        if adopting is not None:
            await adopting.wait()
        assert self._gates is not None and self._context is not None
        standing = ""
        if self.engine.session_info(client_id) is not None and client_id not in self._borrowed:
            standing = self._gates.standing(client_id)
            log.debug("node %s lets session %s go to %s", self.id, client_id, asker)
            self._context.let_go(client_id)
        try:
            await self._tell(asker, f"released:{nonce}:{standing}")
        except _REDIS_ERRORS as error:
            log.warning("could not answer node %s about %s: %s", asker, client_id, error)

    # Session attributes (see attributes.py)

    def _load_attributes(self, client_id: str, fields: dict[bytes, bytes]) -> None:
        assert self._context is not None
        self._context.load_attributes(client_id, fields)

    async def save_attributes(
        self, writes: list[tuple[str, dict[str, str], list[str]]], owners: dict[str, str]
    ) -> None:
        """Writes what changed in sessions' attributes (per session: the attributes set, as
        JSON, and those removed) to their records, and tells the node serving a session this
        node only borrowed to read them again. Raises ``EngineUnavailable``."""
        if not writes:
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for client_id, written, removed in writes:
                    args: list[str] = [str(len(written))]
                    for name, text in written.items():
                        args += [FIELD + name, text]
                    args += [FIELD + name for name in removed]
                    await self._attributes(
                        keys=[self.keys.session(client_id)], args=args, client=pipe
                    )
                results = await pipe.execute(raise_on_error=False)
            for (client_id, _, _), result in zip(writes, results, strict=True):
                if isinstance(result, Exception):
                    self._report(f"session {client_id}", f"Redis refused its attributes ({result})")
                    continue
                owner = owners.get(client_id)
                if result and owner and owner != self.id:
                    await self._tell(owner, f"attributes:{client_id}")
        except _REDIS_ERRORS as error:
            self._failed()
            raise EngineUnavailable(str(error)) from error

    async def session_record(self, client_id: str) -> dict[str, Any] | None:
        """What the cluster knows of a session wherever it is served: its subscriptions,
        browser cookie, ack extension, first connect, the node serving it and its attributes;
        ``None`` when there is no such session. Raises ``EngineUnavailable``."""
        try:
            fields: Any = await self.redis.hgetall(self.keys.session(client_id))
        except _RESPONSE_ERRORS as error:
            self._report(f"session {client_id}", f"a session record Redis refused ({error})")
            return None
        except _REDIS_ERRORS as error:
            self._failed()
            raise EngineUnavailable(str(error)) from error
        record = self._parse_record(client_id, fields) if fields else None
        if record is None:
            return None
        browser, subscriptions, ack, connected, _ = record
        assert self._context is not None
        return {
            "subscriptions": sorted(subscriptions),
            "browser": browser,
            "ack": ack,
            "connected": connected,
            "node": fields.get(b"n", b"").decode(errors="replace"),
            "attributes": self._context.attributes_of(fields),
        }

    # The cluster's counters

    async def cluster_stats(self) -> dict[str, int]:
        """Every live node's counters added up (see ``node_stats``), ``processes``, how many
        nodes that is, and the history's figures, the cluster's. Raises
        ``EngineUnavailable``."""
        nodes, history = await self.node_stats()
        total: dict[str, int] = {}
        for stats in nodes.values():
            for key, value in stats.items():
                if not key.startswith((ERRORS, DURATIONS)):
                    total[key] = total.get(key, 0) + value
        total["processes"] = len(nodes)
        total.update(history)
        return total

    async def node_stats(
        self, reported: bool = False
    ) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
        """Each live node's counters (this node's as they are now, the others' as they last
        reported them, at most ``STATS_EVERY`` seconds ago; with ``reported``, this node's as
        it last reported them too, so that whichever node is asked, a counter never reads
        less than it did), by node, with the core's counters beyond them (see counters.py),
        and the history's figures (read from Redis; none without a history). Raises
        ``EngineUnavailable``."""
        if self._context is None or self._connection is None:
            raise EngineUnavailable("the node is not running")
        mine = self._counters()
        try:
            nodes: Any = await self._nodes_alive(keys=[self.keys.nodes()])
            alive = [n.decode() for n in nodes]
            others = [node for node in alive if reported or node != self.id]
            async with self.redis.pipeline(transaction=False) as pipe:
                for node in others:
                    pipe.hgetall(self.keys.node_stats(node))
                answers: list[Any] = await pipe.execute(raise_on_error=False)
            # The history is the cluster's, not the processes': read where it is kept.
            history = await self._kept.figures(self.redis) if self._kept is not None else {}
        except _REDIS_ERRORS as error:
            self._failed()
            raise EngineUnavailable(str(error)) from error
        found = {self.id: mine}
        for node, fields in zip(others, answers, strict=True):
            if isinstance(fields, Exception) or not fields:
                continue  # bad data, or the node left since: not counted
            found[node] = {
                key: int(value)
                for name, value in fields.items()
                if ((key := name.decode(errors="replace")) in mine or key.startswith(ERRORS))
                and value.isdigit()
            }
        return found, history

    def _counters(self) -> dict[str, int]:
        """This node's counters as ``node_stats`` gives them."""
        assert self._context is not None
        redis = {
            "redis_round_trips": self._turns.round_trips if self._turns is not None else 0,
            "redis_errors": self._redis_errors,
            "redis_recoveries": self._redis_recoveries,
        }
        return {**self._context.stats(), **redis, **flat_counters(self.engine)}

    async def _report_stats(self) -> None:
        """Reports this node's counters every ``STATS_EVERY`` seconds, for ``cluster_stats``
        on the others."""
        assert self._context is not None
        lives_ms = int(3 * STATS_EVERY * 1000)
        while not self._stopping:
            key = self.keys.node_stats(self.id)
            try:
                async with self._pipeline() as pipe:
                    pipe.hset(key, mapping=self._counters())
                    pipe.pexpire(key, lives_ms)
                    await self._alive(
                        keys=[self.keys.nodes()], args=[self.id, lives_ms], client=pipe
                    )
                    await pipe.execute()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.debug("node %s could not report its counters: %s", self.id, error)
            await asyncio.sleep(STATS_EVERY)

    async def _leave_stats(self) -> None:
        """A node leaving is no longer counted."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrem(self.keys.nodes(), self.id)
            pipe.delete(self.keys.node_stats(self.id))
            await pipe.execute()

    def _report_refused(self, results: list[Any]) -> list[int]:
        """A write Redis refused (bad data under its key) is that key's problem alone:
        reported once. Returns the places of those refused among ``results``."""
        refused = [index for index, result in enumerate(results) if isinstance(result, Exception)]
        for index in refused:
            self._report("a write", f"Redis refused a write ({results[index]})")
        return refused

    def _report(self, what: str, problem: str) -> None:
        if what not in self._reported:
            self._reported.add(what)
            log.error("cluster: %s in %s (reported once)", problem, what)


@dataclass(frozen=True, slots=True)
class Drain:
    """Where the sessions of a reply stood when the core drained their queues into it: this
    node's cursor, and per session the core's ``ack_report`` (the batch its client
    acknowledged and the one the reply carries; None without the ack extension)."""

    cursor: str
    reports: dict[str, tuple[int | None, int | None] | None]
    # The gate the sessions without the ack extension wait for (see gates.py).
    gate: asyncio.Future[frozenset[str] | None] | None = None


# A cursor to record: the session, its cursor, whether it connected, the ack extension's
# arguments (see RECORD), who waits for the result.
_Record = tuple[str, str, str, tuple[str, str, str], "asyncio.Future[int]"]

# A log entry: the channel, the message, the publisher left out, the one session it is for.
Entry = tuple[str, bytes, str | None, str | None]
# The channel of an entry that changes a session's subscriptions (no channel is empty): its
# message is {"+": [added], "-": [removed]}.
SUBSCRIPTION_CHANGE = ""


def gated_away(drain: Drain, held: frozenset[str] | None) -> set[str]:
    """The sessions of ``drain`` whose messages must not go out, by the result of the gate
    it waited for: those that moved to another node meanwhile."""
    return {client_id for client_id in drain.reports if not goes_out(held, client_id)}


def _checked(check: asyncio.Task[None]) -> None:
    """Its outcome is taken even when every caller waiting for it gave up meanwhile (each of
    them meets Redis away by its own request)."""
    if not check.cancelled():
        check.exception()


def _awaiting(task: asyncio.Task[Any]) -> str:
    """Where a task waits: its chain of coroutines, as far as it can be followed."""
    frames = []
    awaited: Any = task.get_coro()
    while awaited is not None:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
        if frame is not None:
            frames.append(f"{frame.f_code.co_qualname} line {frame.f_lineno}")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "ag_await", None)
    return " -> ".join(frames) or repr(task)


def _entry(fields: dict[bytes, bytes]) -> Entry | None:
    try:
        channel = fields[b"c"].decode()
        message = fields[b"m"]
        excluded = fields.get(b"x", b"").decode() or None
        to = fields.get(b"t", b"").decode() or None
    except (KeyError, UnicodeDecodeError):
        return None
    return channel, message, excluded, to


def replies_only(body: bytes) -> bytes:
    """A reply batch without the messages delivered in it (they stay for the node that serves
    their session now, or go again in the next batch), nor the ack extension's batch id, which
    the client would acknowledge without having its messages."""
    try:
        batch = json.loads(body)
    except ValueError:
        return body
    kept = [m for m in batch if isinstance(m, dict) and "successful" in m]
    for reply in kept:
        ext = reply.get("ext")
        if reply.get("channel") == "/meta/connect" and isinstance(ext, dict):
            ext.pop("ack", None)
            if not ext:
                del reply["ext"]
    return json.dumps(kept, separators=(",", ":")).encode()


def acknowledged_batches(body: bytes) -> dict[str, int]:
    """The ack batch each ``/meta/connect`` of a request batch acknowledges, by client id (the
    ack extension's ``ext.ack``), for taking its session over from there."""
    try:
        batch = json.loads(body)
    except ValueError:
        return {}
    acknowledged: dict[str, int] = {}
    for message in batch if isinstance(batch, list) else [batch]:
        if not isinstance(message, dict) or message.get("channel") != "/meta/connect":
            continue
        client_id, ext = message.get("clientId"), message.get("ext")
        acked = ext.get("ack") if isinstance(ext, dict) else None
        if isinstance(client_id, str) and type(acked) is int and acked >= 0:
            acknowledged[client_id] = acked
    return acknowledged


def _last_batch(fields: dict[bytes, bytes]) -> int:
    """The highest ack batch id a session's record says was sent (0 when none or garbage)."""
    try:
        return min(max(0, int(fields.get(b"u", b"0"))), 2**53)
    except ValueError:
        return 0
