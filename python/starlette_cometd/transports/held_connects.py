"""Held ``/meta/connect`` requests: one waiter per held connect (an asyncio future on the ASGI
path, a reply object on the native path), resolved by a wake-up from the engine, a release, the
timeout, or the client going away."""

from __future__ import annotations

import asyncio
import contextlib
from enum import Enum
from typing import Protocol

from starlette.types import Receive

from .._core import HeldConnect


class Wakeup(Enum):
    MESSAGES = "messages"  # messages are waiting: reply with them
    TIMEOUT = "timeout"  # nothing arrived in time: reply (a heartbeat)
    RELEASED = "released"  # a newer connect replaced this one, or the session ended
    SHUTDOWN = "shutdown"  # the server is stopping
    CLIENT_GONE = "client_gone"  # the HTTP client disconnected: do not drain
    # Its browser holds a long-poll on another process of the cluster: reply, with the advice
    MULTIPLE_CLIENTS = "multiple_clients"


# Why a held connect is answered with the messages queued for it.
DRAINING = frozenset((Wakeup.MESSAGES, Wakeup.TIMEOUT, Wakeup.MULTIPLE_CLIENTS))


class Waiter(Protocol):
    """What a held connect waits on: an ``asyncio.Future[Wakeup]`` has this shape."""

    def done(self) -> bool: ...

    def set_result(self, reason: Wakeup, /) -> None: ...


class Registry(Protocol):
    """Where held long-polls are also counted (the cluster: see ``cluster/browser_holds.py``)."""

    def held(self, held: HeldConnect, waiter: Waiter) -> None: ...

    def ended(self, client_id: str) -> None: ...


class Parking:
    """The held connects of this process, keyed by client id."""

    def __init__(self) -> None:
        self._waiters: dict[str, Waiter] = {}
        #: Set while the context is in a cluster.
        self.registry: Registry | None = None

    def __len__(self) -> int:
        return len(self._waiters)

    def wake(self, client_ids: list[str], reason: Wakeup) -> None:
        for client_id in client_ids:
            waiter = self._waiters.get(client_id)
            if waiter is not None and not waiter.done():
                waiter.set_result(reason)

    def release_all(self) -> None:
        for waiter in list(self._waiters.values()):
            if not waiter.done():
                waiter.set_result(Wakeup.SHUTDOWN)

    def park(self, held: HeldConnect, waiter: Waiter) -> None:
        self._waiters[held.client_id] = waiter
        if self.registry is not None:
            self.registry.held(held, waiter)

    def unpark(self, client_id: str, waiter: Waiter) -> None:
        if self._waiters.get(client_id) is waiter:
            del self._waiters[client_id]
            if self.registry is not None:
                self.registry.ended(client_id)

    def refuse(self, client_id: str, waiter: Waiter) -> None:
        """Answers a held connect now with ``multiple-clients`` advice, if it still waits."""
        if self._waiters.get(client_id) is waiter and not waiter.done():
            waiter.set_result(Wakeup.MULTIPLE_CLIENTS)

    async def hold(self, held: HeldConnect, receive: Receive) -> Wakeup:
        """Waits until the held connect should be answered, and says why."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Wakeup] = loop.create_future()
        client_id = held.client_id
        self.park(held, waiter)
        timer = loop.call_later(held.timeout, _resolve, waiter, Wakeup.TIMEOUT)
        watcher = loop.create_task(_watch_disconnect(receive, waiter))
        try:
            return await waiter
        finally:
            timer.cancel()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            self.unpark(client_id, waiter)


def _resolve(waiter: Waiter, reason: Wakeup) -> None:
    if not waiter.done():
        waiter.set_result(reason)


async def _watch_disconnect(receive: Receive, waiter: asyncio.Future[Wakeup]) -> None:
    # The request body has been read, so the next ASGI message can only be a disconnect.
    while not waiter.done():
        message = await receive()
        if message["type"] == "http.disconnect":
            _resolve(waiter, Wakeup.CLIENT_GONE)
            return
