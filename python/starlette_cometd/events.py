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


class _Entry:
    """An event waiting in a receiver, with its place in the order; ``event`` is ``None`` once
    it was dropped or cancelled."""

    __slots__ = ("event", "seq")

    def __init__(self, seq: int, event: Event) -> None:
        self.seq = seq
        self.event: Event | None = event


class _Queue:
    """Entries in order, some of them dead, counting the live ones."""

    def __init__(self) -> None:
        self.entries: deque[_Entry] = deque()
        self.live = 0

    def head(self) -> _Entry | None:
        """The first live entry, dropping the dead ones before it."""
        while self.entries and self.entries[0].event is None:
            self.entries.popleft()
        return self.entries[0] if self.entries else None

    def kill(self, entry: _Entry) -> None:
        entry.event = None
        self.live -= 1
        # Dead entries are dropped as they reach the head; past half the queue, at once.
        if len(self.entries) > 2 * self.live + 64:
            self.entries = deque(e for e in self.entries if e.event is not None)


class CometdEventReceiver:
    """Every event of the context, in order. Iterate with ``async for`` or call ``recv()``.

    A receiver that falls more than ``capacity`` events behind loses its oldest events rather
    than slowing the server; ``missed`` counts them. Session lifecycle events are never lost
    that way, so an application that keeps state per session can trust them: a
    ``SessionRemoved`` always follows the ``SessionAdded`` the receiver delivered. Instead,
    while the receiver is full, a session that came and went with its ``SessionAdded`` still
    unread is left out (neither event, nor its ``Subscribe``/``Unsubscribe``, is delivered),
    so that beyond ``capacity`` what waits is at most two lifecycle events per session that
    is alive or that the application has seen, whatever a flood of sessions does.
    ``stats()["sessions_created"]`` and ``["sessions_removed"]`` count every session exactly.
    """

    def __init__(self, capacity: int) -> None:
        self._lifecycle = _Queue()
        self._others = _Queue()
        self._seq = 0
        # Sessions whose SessionAdded is unread: its entry and those of their (un)subscribes.
        self._unread_sessions: dict[str, list[_Entry]] = {}
        self._capacity = max(1, capacity)
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self.missed = 0

    def _push(self, event: Event) -> None:
        self._seq += 1
        entry = _Entry(self._seq, event)
        if isinstance(event, SessionAdded):
            self._unread_sessions[str(event.client_id)] = [entry]
            self._append(self._lifecycle, entry)
        elif isinstance(event, SessionRemoved):
            unread = self._unread_sessions.pop(str(event.client_id), None)
            if unread is not None and self._full():
                self._forget(unread)
            else:
                self._append(self._lifecycle, entry)
        else:
            if self._others.live >= self._capacity:
                oldest = self._others.head()
                assert oldest is not None
                self._others.kill(oldest)
                self.missed += 1
            if isinstance(event, Subscribe | Unsubscribe):
                unread = self._unread_sessions.get(str(event.client_id))
                if unread is not None:
                    unread.append(entry)
            self._append(self._others, entry)
        self._wake()

    def _full(self) -> bool:
        return self._lifecycle.live + self._others.live >= self._capacity

    def _append(self, queue: _Queue, entry: _Entry) -> None:
        queue.entries.append(entry)
        queue.live += 1

    def _forget(self, session: list[_Entry]) -> None:
        """A session ended before the application read that it began: it never sees it."""
        added, *rest = session
        self._lifecycle.kill(added)
        for entry in rest:
            if entry.event is not None:
                self._others.kill(entry)

    def _pop(self) -> Event | None:
        lifecycle, other = self._lifecycle.head(), self._others.head()
        if lifecycle is None and other is None:
            return None
        if other is None or (lifecycle is not None and lifecycle.seq < other.seq):
            queue, entry = self._lifecycle, lifecycle
        else:
            queue, entry = self._others, other
        assert entry is not None and entry.event is not None
        event = entry.event
        queue.entries.popleft()
        queue.live -= 1
        if isinstance(event, SessionAdded):
            self._unread_sessions.pop(str(event.client_id), None)
        return event

    def _close(self) -> None:
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def try_recv(self) -> Event | None:
        """The next event if one is waiting, else ``None``, without waiting."""
        return self._pop()

    async def recv(self) -> Event | None:
        """The next event; ``None`` once the context is closed and every event was read."""
        while (event := self._pop()) is None:
            if self._closed:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return event

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
        #: Events every receiver missed so far, added up (see ``CometdEventReceiver``).
        self.missed = 0

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
            missed = receiver.missed
            receiver._push(event)
            self.missed += receiver.missed - missed

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
