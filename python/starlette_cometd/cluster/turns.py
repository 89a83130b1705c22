"""One round trip to Redis for the writes of many requests: the pipelines that requests fill
in one loop turn are sent as one, at most one at a time.

Each round trip costs the Redis client far more than each command in it (a connection taken
from the pool and given back, timeouts armed, a task to write, a reply read): under load a
node answers many requests per loop turn, and their writes then share that cost, as a node's
gates do (see gates.py). Commands keep their order in a turn, as they would on one connection;
requests of one turn were never ordered between themselves."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType
from typing import Any

from .connection import closed_error

# A command queued: the client's method, its arguments.
Command = tuple[str, tuple[Any, ...], dict[str, Any]]


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
    def __init__(self, redis: Any) -> None:
        self._redis = redis
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
        if len(self._queued) == 1 and not self._sending:
            loop.call_soon(self._send_queued)
        return sent

    def _send_queued(self) -> None:
        if self._sending or not self._queued:
            return
        queued, self._queued = self._queued, []
        self._sending = True
        task = asyncio.create_task(self._round_trip(queued))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _round_trip(
        self, queued: list[tuple[list[Command], asyncio.Future[list[Any]]]]
    ) -> None:
        self.round_trips += 1
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for commands, _ in queued:
                    for name, args, kwargs in commands:
                        getattr(pipe, name)(*args, **kwargs)
                results: list[Any] = await pipe.execute(raise_on_error=False)
        except BaseException as error:
            # Cancelled: the node stops, and what waits meets Redis as away.
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
                    sent.set_result(results[start:end])
                start = end
        finally:
            self._sending = False
            if self._queued:
                asyncio.get_running_loop().call_soon(self._send_queued)

    @property
    def tasks(self) -> set[asyncio.Task[None]]:
        """The round trip under way, which the node cancels when it stops."""
        return self._tasks
