"""Gates: where a node's sessions stand is written before their messages go out, once per
loop turn for all of them rather than once per session and message.

A node numbers its gates. Each gate writes, in the node's state hash, the gate's number and
the node's cursor when the gate was taken (``P``): every session of the node whose messages
all went out stands there. Only a session that holds undelivered messages when a gate is
taken (a long-poll between two connects, a slow socket) has its own cursor, written into its
record by the same gate: the cursor before its first undelivered message (``after``), with the
gate's number, and the cursor it stood at before that gate (``before``), which holds if the
gate never completed. So a session's record reads, against its node's state (see
:func:`settled`): its own cursor, or its node's. Messages drained into a reply wait for the
next gate to complete; a node that keeps up writes one small hash per gate, whatever the number
of sessions and messages.

A node that takes a session over asks the node serving it to let it go and say where it stood
(``release``); a node that does not answer (it died) is fenced: its next gate fails, its
messages do not go out, and it lets every session go, so that the cursor read from its state
when it was fenced is final.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from .connection import REDIS_ERRORS, RESPONSE_ERRORS, Connection
from .keys import GATE, MARK, MARK_MANY, Keys
from .turns import Turns

if TYPE_CHECKING:
    from .._core import Engine

log = logging.getLogger("starlette_cometd.cluster")

# A gate is taken at least this often in log entries, so that the stamps kept for it stay few
# even when no message goes out.
MAX_STAMPS = 10_000

# Sessions marked by one script call on one Redis server: a call holds Redis for all of them.
MARKS_PER_CALL = 500


class GatedPush:
    """Messages drained for a push on a socket, waiting for a gate. The gate's completion
    resolves it in the same step: with the messages, or ``None`` when they must not go out
    (the session moved to another node). A socket that sets ``on_passed`` is called back at
    once, where a future's callback would wait for the next loop turn; one may also await it.
    """

    __slots__ = ("_waiter", "body", "cancelled", "client_id", "done", "on_passed")

    def __init__(self, client_id: str, body: bytes) -> None:
        self.client_id = client_id
        self.body: bytes | None = body
        self.done = False
        self.cancelled = False
        self.on_passed: Callable[[GatedPush], None] | None = None
        self._waiter: asyncio.Future[bytes | None] | None = None

    def resolve(self, goes: bool) -> None:
        """The gate completed: the messages go out, or not."""
        if self.done:
            return
        self.done = True
        if not goes:
            self.body = None
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(self.body)
        callback, self.on_passed = self.on_passed, None
        if callback is not None:
            callback(self)

    def cancel(self) -> None:
        """The gate was cancelled (the node stops): nothing goes out."""
        if self.done:
            return
        self.done = self.cancelled = True
        self.body = None
        if self._waiter is not None:
            self._waiter.cancel()
        callback, self.on_passed = self.on_passed, None
        if callback is not None:
            callback(self)

    def __await__(self) -> Generator[Any, None, bytes | None]:
        if not self.done:
            if self._waiter is None:
                self._waiter = asyncio.get_running_loop().create_future()
            return (yield from self._waiter.__await__())
        if self.cancelled:
            raise asyncio.CancelledError
        return self.body


@dataclass(eq=False, slots=True)
class _Gate:
    # Resolves with the sessions whose messages must not go out (they moved to another node),
    # or None when none may (the node was fenced).
    future: asyncio.Future[frozenset[str] | None]
    # Sessions let go while the gate was pending or under way.
    dropped: set[str] = field(default_factory=set)
    number: int = 0
    # Pushes waiting for it.
    pushes: list[GatedPush] = field(default_factory=list)

    def settle(self) -> None:
        """Resolves the pushes once the gate's future is done: with their messages, or None
        for those that must not go out; cancelled if the gate was (the node stops)."""
        future = self.future
        held = None if future.cancelled() else future.result()
        pushes, self.pushes = self.pushes, []
        for pushed in pushes:
            if future.cancelled():
                pushed.cancel()
            else:
                pushed.resolve(goes_out(held, pushed.client_id))


def goes_out(held: frozenset[str] | None, client_id: str) -> bool:
    """Whether a gate's result lets a session's drained messages go out."""
    return held is not None and client_id not in held


Done = TypeVar("Done")
Made = TypeVar("Made")


def made_when_done(
    source: asyncio.Future[Done], make: Callable[[asyncio.Future[Done]], Made]
) -> asyncio.Future[Made]:
    """A future of ``make(source)``, made by ``source``'s own done callback (no task, no
    coroutine): cancelled when ``source`` is (the node stops), failed with what ``make``
    raised."""
    made: asyncio.Future[Made] = asyncio.get_running_loop().create_future()

    def done(source: asyncio.Future[Done]) -> None:
        if made.done():
            return
        if source.cancelled():
            made.cancel()
            return
        try:
            made.set_result(make(source))
        except Exception as error:
            made.set_exception(error)

    source.add_done_callback(done)
    return made


def when_passed(
    gate: asyncio.Future[frozenset[str] | None],
    make: Callable[[frozenset[str] | None], Made],
) -> asyncio.Future[Made]:
    """A future of ``make(held)``, ``held`` being the gate's result, made by the gate's own
    callback (see ``made_when_done``)."""
    return made_when_done(gate, lambda gate: make(gate.result()))


class Gates:
    def __init__(
        self,
        connection: Connection,
        turns: Turns,
        keys: Keys,
        node: str,
        engine: Engine,
        positions: Callable[[], Sequence[int]],
        encode: Callable[[Sequence[int]], str],
        ttl_ms: int,
    ) -> None:
        self._redis = connection.redis
        # A gate goes to Redis with the requests' writes of its turn.
        self._turns = turns
        self._cluster = connection.cluster
        self._mark = connection.script(MARK)
        self._mark_many = connection.script(MARK_MANY)
        self._gate = connection.script(GATE)
        self._keys = keys
        self._state_key = keys.node_state(node)
        self._session_key = keys.session
        self._node = node
        self._engine = engine
        self._positions = positions
        self._encode = encode
        self._ttl_ms = ttl_ms
        #: Gates taken so far, and the last that completed with the node's cursor then.
        self.taken = 0
        self.done = 0
        self.done_cursor = ""
        # Per session with undelivered messages as of the last gate completed: its cursor.
        self._behind: dict[str, str] = {}
        # Sessions whose record holds no gate yet (new, or taken over): the next gate marks them.
        self._unsettled: set[str] = set()
        # The marks of a gate Redis failed, written with the next (session -> its cursor then).
        self._retry: dict[str, str] = {}
        # The positions before each log entry fanned out since the last gate was taken.
        self._stamp = 0
        self._stamps: dict[int, Sequence[int] | str] = {}
        self._next: _Gate | None = None
        self._running: _Gate | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        #: Called when this node was fenced: every session here must go.
        self.on_fenced: Callable[[], None] = lambda: None
        #: Called when Redis failed a gate (its messages went out all the same).
        self.on_failed: Callable[[BaseException], None] = lambda error: None
        #: Called with a session whose record Redis refused (bad data under its key).
        self.on_refused: Callable[[str, BaseException], None] = lambda client_id, error: None

    @property
    def tasks(self) -> set[asyncio.Task[None]]:
        return self._tasks

    def start_at(self, positions: Sequence[int]) -> None:
        self.done_cursor = self._encode(positions)

    def rename(self, node: str) -> None:
        """This node goes on under a new id (it was fenced under the old one, whose records
        must be read against the gates that completed under it, and no later one)."""
        self._node = node
        self._state_key = self._keys.node_state(node)
        self.done = 0

    # Stamps: which cursor each queued message was fanned out at

    def stamp(self, before: Sequence[int]) -> int:
        """A stamp for the log entry fanned out now, ``before`` being the positions before it."""
        self._stamp += 1
        self._stamps[self._stamp] = before
        if len(self._stamps) >= MAX_STAMPS:
            self.wait()
        return self._stamp

    def stamp_at(self, cursor: str) -> int:
        """A stamp for messages a session catches up from ``cursor`` (an encoded one)."""
        self._stamp += 1
        self._stamps[self._stamp] = cursor
        return self._stamp

    # Sessions

    def settle(self, client_id: str, cursor: str) -> None:
        """A session whose record now holds ``cursor`` alone (new, or taken over): the next
        gate marks it, whatever its messages (before that, its messages wait for a gate taken
        after now, which marks it). Where a gate already left it stands."""
        self._behind.setdefault(client_id, cursor)
        self._unsettled.add(client_id)

    def standing(self, client_id: str) -> str:
        """Where a session stands as of the last gate completed."""
        return self._behind.get(client_id) or self.done_cursor

    def forget(self, client_id: str) -> None:
        """The session left this node: its messages waiting for a gate do not go out."""
        self._behind.pop(client_id, None)
        self._unsettled.discard(client_id)
        self._retry.pop(client_id, None)
        for gate in (self._running, self._next):
            if gate is not None:
                gate.dropped.add(client_id)

    def forget_all(self) -> None:
        self._behind.clear()
        self._unsettled.clear()
        self._retry.clear()

    # Taking gates

    def close(self) -> None:
        """The node leaves the cluster: no gate is taken any more (one would use its closed
        connections), and what waits for one goes out as it is."""
        self._closed = True
        gate, self._next = self._next, None
        if gate is not None and not gate.future.done():
            gate.future.set_result(frozenset(gate.dropped))
            gate.settle()

    def wait(self) -> asyncio.Future[frozenset[str] | None]:
        """Completes once a gate taken after now completed: with the sessions whose messages
        drained before now must not go out, or None when none may."""
        if self._closed:
            done: asyncio.Future[frozenset[str] | None] = asyncio.get_running_loop().create_future()
            done.set_result(frozenset())
            return done
        gate = self._next
        if gate is None:
            gate = self._next = _Gate(asyncio.get_running_loop().create_future())
            if self._running is None:
                self._start()
        return gate.future

    def push(self, client_id: str, body: bytes) -> GatedPush:
        """Messages drained for a push now: resolved with them once a gate taken after now
        completed, in the same step (no loop turn between), or with None when they must not go
        out (see ``wait``)."""
        pushed = GatedPush(client_id, body)
        self.wait()
        gate = self._next
        if gate is None:  # closed: they go out as they are
            pushed.resolve(True)
        else:
            gate.pushes.append(pushed)
        return pushed

    def _start(self) -> None:
        task = asyncio.create_task(self._take_soon())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _take_soon(self) -> None:
        # Taken two loop turns after it was asked for (the task's first step runs in the next
        # turn): the pushes scheduled in the turn that asked for it (or completed the last one)
        # drain first, rather than be marked as undelivered. Its writes go at once.
        await asyncio.sleep(0)
        taken = self._take()
        if taken is not None:
            await self._complete(*taken)

    def _take(self) -> tuple[_Gate, str, list[tuple[str, str, str]]] | None:
        gate = self._next
        if gate is None or self._running is not None or self._closed:
            return None
        self._next = None
        self._running = gate
        self.taken += 1
        gate.number = self.taken
        cursor = self._encode(self._positions())
        writes: list[tuple[str, str, str]] = []
        # The sessions of one channel share the stamps of its entries: each encoded once.
        encoded: dict[int, str] = {}
        for client_id, since in self._engine.take_marks():
            after = encoded.get(since) if since else ""
            if after is None:
                after = encoded[since] = self._stamp_cursor(since, client_id)
            self._retry.pop(client_id, None)
            writes.append((client_id, self.standing(client_id), after))
        # Those of a gate Redis failed; then sessions new here, whose queue is as last reported
        # (nothing undelivered, or their retried mark).
        for client_id, after in self._retry.items():
            writes.append((client_id, self.standing(client_id), after))
        self._retry.clear()
        marked = {client_id for client_id, _, _ in writes}
        for client_id in self._unsettled - marked:
            writes.append((client_id, self.standing(client_id), ""))
        self._stamps.clear()
        return gate, cursor, writes

    def _stamp_cursor(self, stamp: int, client_id: str) -> str:
        """The encoded cursor before the entry ``stamp`` was given to (``client_id``'s first
        undelivered message)."""
        before_entry = self._stamps.get(stamp)
        if before_entry is None:  # pragma: no cover - every stamp is kept until taken
            log.error("no cursor for stamp %d of session %s", stamp, client_id)
            return self.standing(client_id)
        return before_entry if isinstance(before_entry, str) else self._encode(before_entry)

    async def _complete(self, gate: _Gate, cursor: str, writes: list[tuple[str, str, str]]) -> None:
        held: frozenset[str] | None = frozenset(gate.dropped)
        try:
            held = await self._write(gate, cursor, writes)
        except asyncio.CancelledError:
            gate.future.cancel()  # the node stops
            raise
        except Exception:
            # Not Redis failing (this code, or the client's): as when Redis fails.
            log.exception("a gate failed")
            self._failed(writes)
        finally:
            self._running = None
            if not gate.future.done():
                gate.future.set_result(held)
            gate.settle()
            if self._next is not None and not self._closed:
                self._start()

    def _failed(self, writes: list[tuple[str, str, str]]) -> None:
        """A gate's writes did not happen (as far as this node knows): its messages go out all
        the same, and its marks are written with the next gate."""
        for client_id, _, after in writes:
            self._retry[client_id] = after

    async def _write(
        self, gate: _Gate, cursor: str, writes: list[tuple[str, str, str]]
    ) -> frozenset[str] | None:
        try:
            marked, passed = await self._write_gate(str(gate.number), cursor, writes)
        except REDIS_ERRORS as error:
            # Redis away: the messages go out as they are (nothing to record them in).
            self.on_failed(error)
            self._failed(writes)
            return frozenset(gate.dropped)
        if isinstance(passed, RESPONSE_ERRORS):
            # Bad data under the node's state: it goes, and the next gate writes it again.
            log.error("cluster: Redis refused node %s's state (%s)", self._node, passed)
            try:
                await self._redis.delete(self._state_key)
            except REDIS_ERRORS as error:
                self.on_failed(error)
            self._failed(writes)
            return frozenset(gate.dropped)
        elif not passed:
            log.warning("node %s was fenced by another: it lets every session go", self._node)
            self.forget_all()
            self.on_fenced()
            return None
        self.done, self.done_cursor = gate.number, cursor
        moved = set(gate.dropped)
        for (client_id, before, after), result in zip(writes, marked, strict=True):
            self._unsettled.discard(client_id)
            if isinstance(result, Exception):
                self.on_refused(client_id, result)
            elif not result:
                # Claimed by another node: its messages of this gate stay unsent, and it stands
                # where it did (what this node answers that node's release).
                moved.add(client_id)
                self._behind[client_id] = before
                continue
            if client_id in gate.dropped:
                continue
            if after:
                self._behind[client_id] = after
            else:
                self._behind.pop(client_id, None)
        return frozenset(moved)

    async def _write_gate(
        self, number: str, cursor: str, writes: list[tuple[str, str, str]]
    ) -> tuple[list[Any], Any]:
        """Writes each session's marks, then the gate: per session 1, 0 when it moved (or
        ended), or the error Redis raised for its record; and the gate's result (0: fenced).
        On one server all go in one round trip, in order, the marks a few calls for all
        sessions; on a Redis Cluster the marks are in many slots, one call each, and all
        complete before the gate is written."""
        gate = f"{self._node}:{number}"
        chunks = [writes[at : at + MARKS_PER_CALL] for at in range(0, len(writes), MARKS_PER_CALL)]
        async with self._turns.pipeline() as pipe:
            if self._cluster:
                for client_id, before, after in writes:
                    await self._mark(
                        keys=[self._session_key(client_id)],
                        args=[self._node, before, gate, after],
                        client=pipe,
                    )
                marked: list[Any] = await pipe.execute(raise_on_error=False) if writes else []
            else:
                for chunk in chunks:
                    await self._mark_many(
                        keys=[self._session_key(client_id) for client_id, _, _ in chunk],
                        args=[self._node, gate, *(c for _, *cursors in chunk for c in cursors)],
                        client=pipe,
                    )
            await self._gate(
                keys=[self._state_key], args=[number, cursor, self._ttl_ms], client=pipe
            )
            results: list[Any] = await pipe.execute(raise_on_error=False)
        if not self._cluster:
            marked = [
                mark
                for chunk, found in zip(chunks, results[:-1], strict=True)
                for mark in _each_mark(chunk, found)
            ]
        for result in [*marked, results[-1]]:
            if isinstance(result, Exception) and not isinstance(result, RESPONSE_ERRORS):
                raise result
        return marked, results[-1]


def _each_mark(chunk: list[tuple[str, str, str]], found: Any) -> list[Any]:
    """Each session's result of a MARK_MANY call: its own (a refusal of its record made an
    error). A call that failed as a whole is Redis failing, not bad data under each key: it
    is raised (the gate's marks are written again with the next)."""
    if isinstance(found, Exception):
        raise found
    from redis.exceptions import ResponseError

    return [
        ResponseError(result.decode(errors="replace")) if isinstance(result, bytes) else result
        for result in found
    ]


def marker(fields: dict[bytes, bytes]) -> str | None:
    """The node whose gate last marked a session's record (see ``settled``), if any."""
    gate = fields.get(b"g")
    if not gate:
        return None
    return gate.decode(errors="replace").rpartition(":")[0]


def settled(fields: dict[bytes, bytes], done: int, done_cursor: bytes | None) -> bytes:
    """Where a session stood by its record, against the last gate completed by the node that
    marked it (``marker``): the cursor its record holds, or that node's."""
    gate = fields.get(b"g")
    if not gate:
        return fields[b"c"]
    number = gate.decode(errors="replace").rpartition(":")[2]
    if number.isdigit() and done >= int(number):
        return fields.get(b"h") or done_cursor or fields[b"c"]
    return fields[b"c"]
