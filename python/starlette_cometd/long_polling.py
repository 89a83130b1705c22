"""Held ``/meta/connect`` requests: one asyncio future per held connect, resolved by a wake-up
from the engine, a release, the timeout, or the client going away."""

from __future__ import annotations

import asyncio
import contextlib
from enum import Enum

from starlette.types import Receive

from ._core import HeldConnect


class Wakeup(Enum):
    MESSAGES = "messages"  # messages are waiting: reply with them
    TIMEOUT = "timeout"  # nothing arrived in time: reply (a heartbeat)
    RELEASED = "released"  # a newer connect replaced this one, or the session ended
    SHUTDOWN = "shutdown"  # the server is stopping
    CLIENT_GONE = "client_gone"  # the HTTP client disconnected: do not drain


class Parking:
    """The held connects of this process, keyed by client id."""

    def __init__(self) -> None:
        self._waiters: dict[str, asyncio.Future[Wakeup]] = {}

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

    async def hold(self, held: HeldConnect, receive: Receive) -> Wakeup:
        """Waits until the held connect should be answered, and says why."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Wakeup] = loop.create_future()
        client_id = held.client_id
        self._waiters[client_id] = waiter
        timer = loop.call_later(held.timeout, _resolve, waiter, Wakeup.TIMEOUT)
        watcher = loop.create_task(_watch_disconnect(receive, waiter))
        try:
            return await waiter
        finally:
            timer.cancel()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            if self._waiters.get(client_id) is waiter:
                del self._waiters[client_id]


def _resolve(waiter: asyncio.Future[Wakeup], reason: Wakeup) -> None:
    if not waiter.done():
        waiter.set_result(reason)


async def _watch_disconnect(receive: Receive, waiter: asyncio.Future[Wakeup]) -> None:
    # The request body has been read, so the next ASGI message can only be a disconnect.
    while not waiter.done():
        message = await receive()
        if message["type"] == "http.disconnect":
            _resolve(waiter, Wakeup.CLIENT_GONE)
            return
