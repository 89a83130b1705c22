"""One round trip to Redis for the writes of many requests: the pipelines that requests fill
in one loop turn are sent as one, at most one at a time.

Each round trip costs the Redis client far more than each command in it (a connection taken
from the pool and given back, timeouts armed, a task to write, a reply read): under load a
node answers many requests per loop turn, and their writes then share that cost, as a node's
gates do (see gates.py). Commands keep their order in a turn, as they would on one connection;
requests of one turn were never ordered between themselves.

Appends to a partition's log (``Batch.append_entry``) that follow each other in a turn, as the
publishes of many requests do, go in one call of the log's script (``PUBLISH``): a script call
costs Redis several times what an entry does. Entries keep their order in each log; logs are
not ordered between themselves."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from .connection import closed_error

# A command queued: the client's method, its arguments.
Command = tuple[str, tuple[Any, ...], dict[str, Any]]

# The method name of a log append (see Batch.append_entry), which redis-py has none of.
APPEND = "append_entry"

# Log entries appended by one script call at most: a call holds Redis for all of them.
APPENDS_PER_CALL = 500

# The log's script, queued on a pipeline: ``script(keys=..., args=..., client=pipe)``.
Script = Callable[..., Awaitable[Any]]


class Batch:
    """A pipeline of one request's commands, queued on a :class:`Turns`: called as redis-py's
    (``pipe.delete(key)``, scripts given it as ``client``), then ``await batch.execute()``."""

    def __init__(self, turns: Turns) -> None:
        self._turns = turns
        self.commands: list[Command] = []

    def __getattr__(self, name: str) -> Callable[..., Batch]:
        def queue(*args: Any, **kwargs: Any) -> Batch:
            self.commands.append((name, args, kwargs))
            return self

        return queue

    def append_entry(
        self, head: str, log: str, history: int, fields: tuple[str, bytes, str, str]
    ) -> Batch:
        """Appends an entry to a partition's log (``head``, ``log``: its keys; ``history``:
        the entries it keeps): its channel, message, publisher left out and session sent to
        ("" for none), as ``PUBLISH`` takes them."""
        self.commands.append((APPEND, (head, log, history, fields), {}))
        return self

    def __len__(self) -> int:
        return len(self.commands)

    async def __aenter__(self) -> Batch:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Each command's result (an exception for a command Redis refused, unless
        ``raise_on_error``: then the first is raised). Raises what the round trip raised."""
        commands, self.commands = self.commands, []  # sent: the pipeline is empty again
        if not commands:
            return []
        results = await self._turns.send(commands)
        if raise_on_error:
            for result in results:
                if isinstance(result, Exception):
                    raise result
        return results


class Turns:
    def __init__(self, redis: Any, publish: Script) -> None:
        self._redis = redis
        self._publish = publish
        self._queued: list[tuple[list[Command], asyncio.Future[list[Any]]]] = []
        self._sending = False
        self._tasks: set[asyncio.Task[None]] = set()
        #: Round trips made (one per loop turn with writes), for the metrics.
        self.round_trips = 0

    def pipeline(self) -> Batch:
        return Batch(self)

    def send(self, commands: list[Command]) -> asyncio.Future[list[Any]]:
        loop = asyncio.get_running_loop()
        sent: asyncio.Future[list[Any]] = loop.create_future()
        self._queued.append((commands, sent))
        if not self._sending:
            self._start()
        return sent

    def _start(self) -> None:
        """Starts a round trip. A task's first step runs in the next loop turn: it takes what
        every request of this one queued."""
        self._sending = True
        task = asyncio.create_task(self._round_trip())
        self._tasks.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            # The node stops, perhaps before the round trip took what was queued: what waits
            # meets Redis as away, and nothing more is sent.
            queued, self._queued = self._queued, []
            for _, sent in queued:
                if not sent.done():
                    sent.set_exception(closed_error())
            self._sending = False

    async def _round_trip(self) -> None:
        queued, self._queued = self._queued, []
        self.round_trips += 1
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                slots = await self._queue(pipe, queued)
                results: list[Any] = await pipe.execute(raise_on_error=False)
        except BaseException as error:
            # Cancelled: the node stops, and what waits meets Redis as away (see _ended).
            failure = error if isinstance(error, Exception) else closed_error()
            for _, sent in queued:
                if not sent.done():
                    sent.set_exception(failure)
            if not isinstance(error, Exception):
                raise
        else:
            start = 0
            for commands, sent in queued:
                end = start + len(commands)
                if not sent.done():
                    sent.set_result([results[slot] for slot in slots[start:end]])
                start = end
        self._sending = False
        if self._queued:
            self._start()

    async def _queue(
        self, pipe: Any, queued: list[tuple[list[Command], asyncio.Future[list[Any]]]]
    ) -> list[int]:
        """Queues the commands on ``pipe``, each run of log appends as script calls of up to
        ``APPENDS_PER_CALL`` entries per log. Returns, per command queued, the index of its
        result in the pipeline's (an append's is its call's)."""
        slots: list[int] = []
        # The run of appends under way: per log (its head and log keys), the history it keeps
        # (the node's: the same for every append) and each append's fields and slot.
        run: dict[tuple[str, str], tuple[int, list[tuple[tuple[Any, ...], int]]]] = {}
        count = 0  # calls on the pipeline so far

        async def end_run() -> None:
            nonlocal count
            for (head, log), (history, appends) in run.items():
                for start in range(0, len(appends), APPENDS_PER_CALL):
                    call = appends[start : start + APPENDS_PER_CALL]
                    fields = [field for entry, _ in call for field in entry]
                    await self._publish(
                        keys=[head, log], args=[secrets.token_hex(8), history, *fields], client=pipe
                    )
                    for _, position in call:
                        slots[position] = count
                    count += 1
            run.clear()

        for commands, _ in queued:
            for name, args, kwargs in commands:
                if name == APPEND:
                    head, log, history, fields = args
                    run.setdefault((head, log), (history, []))[1].append((fields, len(slots)))
                    slots.append(-1)  # set once the run's calls are queued
                    continue
                await end_run()
                getattr(pipe, name)(*args, **kwargs)
                slots.append(count)
                count += 1
        await end_run()
        return slots

    @property
    def tasks(self) -> set[asyncio.Task[None]]:
        """The round trip under way, which the node cancels when it stops."""
        return self._tasks
