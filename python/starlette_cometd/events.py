"""Server events: frozen dataclasses, and the receivers and sender that carry them."""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from starlette.datastructures import Headers

from ._core import ClientId, ContextClosedError


class RemovalReason(StrEnum):
    """Why a session ended."""

    DISCONNECTED = "disconnected"
    EXPIRED = "expired"
    REMOVED = "removed"


@dataclass(frozen=True, slots=True)
class SessionAdded:
    client_id: ClientId
    headers: Headers
    data: Any
    #: The session's attributes (see ServerSession), as the security policy set them.
    attributes: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class Subscribe:
    client_id: ClientId
    headers: Headers
    channels: tuple[str, ...]
    data: Any
    attributes: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    client_id: ClientId
    headers: Headers
    channels: tuple[str, ...]
    data: Any
    attributes: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class SessionRemoved:
    client_id: ClientId
    reason: RemovalReason
    attributes: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class CustomData:
    data: Any


Event = SessionAdded | Subscribe | Unsubscribe | SessionRemoved | CustomData


class CometdEventReceiver:
    """Every event of the context, in order. Iterate with ``async for`` or call ``recv()``.

    A receiver that falls more than ``capacity`` events behind loses its oldest events rather
    than slowing the server; ``missed`` counts them.
    """

    def __init__(self, capacity: int) -> None:
        self._events: deque[Event] = deque()
        self._capacity = max(1, capacity)
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self.missed = 0

    def _push(self, event: Event) -> None:
        if len(self._events) >= self._capacity:
            self._events.popleft()
            self.missed += 1
        self._events.append(event)
        self._wake()

    def _close(self) -> None:
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def try_recv(self) -> Event | None:
        """The next event if one is waiting, else ``None``, without waiting."""
        return self._events.popleft() if self._events else None

    async def recv(self) -> Event | None:
        """The next event; ``None`` once the context is closed and every event was read."""
        while not self._events:
            if self._closed:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._events.popleft()

    def __aiter__(self) -> CometdEventReceiver:
        return self

    async def __anext__(self) -> Event:
        event = await self.recv()
        if event is None:
            raise StopAsyncIteration
        return event


class EventHub:
    """Fans each event out to every live receiver. Receivers are held weakly, so one that the
    application drops stops costing anything."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._receivers: weakref.WeakSet[CometdEventReceiver] = weakref.WeakSet()
        self.closed = False

    def receiver(self) -> CometdEventReceiver:
        receiver = CometdEventReceiver(self._capacity)
        if self.closed:
            receiver._close()
        else:
            self._receivers.add(receiver)
        return receiver

    @property
    def listening(self) -> bool:
        return len(self._receivers) > 0

    def publish(self, event: Event) -> None:
        for receiver in list(self._receivers):
            receiver._push(event)

    def close(self) -> None:
        self.closed = True
        for receiver in list(self._receivers):
            receiver._close()
        self._receivers.clear()


class CometdCustomDataSender:
    """Delivers ``CustomData`` events to every receiver of the context."""

    def __init__(self, hub: EventHub) -> None:
        self._hub = hub

    async def send(self, data: Any) -> None:
        if self._hub.closed:
            raise ContextClosedError("the context has been closed")
        self._hub.publish(CustomData(data))
