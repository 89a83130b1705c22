"""What both kinds of WebSocket share (the ASGI path's and the native one): the sessions bound
to the socket and their held connects, and the browser the socket speaks for.

A session belongs to the socket it is bound to (by a handshake or a connect over it): another
socket, or an HTTP request, may use it only with the session's ``BAYEUX_BROWSER`` cookie (see
``Engine::lookup`` in the core). A socket's browser is its upgrade's cookie; an upgrade without
one is given one in its reply, so that a client that keeps it (a browser, the CometD Java
client, Faye) can prove on its next socket that the sessions made on this one are its own."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from .._core import HeldConnect
from ..cookies import is_browser_id, new_browser_id

if TYPE_CHECKING:
    from ..context import LongPollingServiceContext
    from .batch import Reply

# Every socket's number, which the core records as the owner of the sessions bound to it.
_numbers = itertools.count(1)


def socket_browser(cookie: str | None) -> tuple[str, bool]:
    """The browser a socket speaks for, from its upgrade's cookie, and whether it is new (then
    the upgrade's reply sets it)."""
    if cookie is not None and is_browser_id(cookie):
        return cookie, False
    return new_browser_id(), True


class BoundSessions:
    """The sessions a socket carries. A subclass says how a held connect's reply goes out."""

    def __init__(self, context: LongPollingServiceContext, browser: str) -> None:
        self._context = context
        self.number = next(_numbers)
        self._browser = browser
        self._holds: dict[str, tuple[HeldConnect, asyncio.TimerHandle]] = {}
        self.sessions: set[str] = set()
        # Sessions with messages to push, in order (a dict as an ordered set).
        self._flushes: dict[str, None] = {}
        # Set while a batch's reply waits (see waited_reply): pushes wait for it.
        self._replying = False

    @property
    def held(self) -> int:
        """How many connects this socket holds."""
        return len(self._holds)

    def wake(self, client_id: str) -> None:
        """Messages wait for a session that takes them only in connect replies (the ack
        extension): answer its held connect now, with them."""
        self._finish(client_id, True)

    def release(self, client_id: str) -> None:
        """The session's held connect must be answered now, without its messages."""
        self._finish(client_id, False)

    def detach(self, client_id: str) -> None:
        """The session moved to another socket (its owner came back on a new one): it is no
        longer this socket's, and its connect held here ends now."""
        self.sessions.discard(client_id)
        self._flushes.pop(client_id, None)
        self._finish(client_id, False)

    def push(self, client_id: str) -> None:
        """Messages are waiting for a session on this socket: send them soon."""
        self._flushes[client_id] = None
        self._flush_soon()
        node = self._context.cluster
        if node is not None:
            # In a cluster they go out after the next gate: asked for now, it is taken once
            # they drained (see gates.py), a loop turn sooner than if the drain asked for it.
            node.gate_soon()

    async def waited_reply(self, pending: Awaitable[Reply]) -> Reply:
        """The reply of a batch that must wait (a cluster's writes, the application's hooks).
        Pushes wait for it: a connect reply carries the messages its session had queued, and
        those queued while it waits must go out after them, not before."""
        self._replying = True
        try:
            return await pending
        finally:
            self._replying = False

    def _next_push(self) -> bytes | Awaitable[bytes | None] | None:
        """The messages of the next session waiting to push, as one JSON array; ``None`` when
        no session has any. In a cluster they come once where the session stands is recorded
        (an awaitable, which gives ``None`` if the session moved to another node meanwhile)."""
        engine = self._context.engine
        node = self._context.cluster
        while self._flushes:
            client_id = next(iter(self._flushes))
            del self._flushes[client_id]
            body = engine.drain(client_id, self.number)
            if body is not None:
                return body if node is None else node.pushed(client_id, body)
        return None

    # What each kind of socket does its own way.

    def _flush_soon(self) -> None:
        """Arrange for the pushes waiting in ``_flushes`` to be written."""
        raise NotImplementedError

    def shutdown(self) -> None:
        """The server is stopping: close with 1001 once what is pending is written."""
        raise NotImplementedError

    def _reply_to_held(self, held: HeldConnect, drain: bool) -> None:
        """Sends ``_held_reply(held, drain)`` in order with the socket's other output."""
        raise NotImplementedError

    async def _held_reply(self, held: HeldConnect, drain: bool) -> bytes:
        """A held connect's reply, built when its turn to be written comes rather than when it
        is woken, so that the messages published in the same loop turn go with it."""
        reply = self._context.finish_connect(held, drain)
        return reply if isinstance(reply, bytes) else await reply

    def _bind(self, client_ids: list[str]) -> None:
        # Registered before the batch's effects apply, so that a message the batch published
        # to its own session is pushed here.
        for client_id in client_ids:
            self._context.bind_socket(client_id, self)
            self.sessions.add(client_id)

    def _hold(self, held: HeldConnect) -> None:
        """Holds a connect until its timeout, when it is answered as a heartbeat."""
        timer = asyncio.get_running_loop().call_later(held.timeout, self._hold_expired, held)
        self._holds[held.client_id] = (held, timer)

    def _hold_expired(self, held: HeldConnect) -> None:
        entry = self._holds.get(held.client_id)
        if entry is not None and entry[0] is held:
            self._finish(held.client_id, True)

    def _finish(self, client_id: str, drain: bool) -> None:
        entry = self._holds.pop(client_id, None)
        if entry is not None:
            held, timer = entry
            timer.cancel()
            self._reply_to_held(held, drain)

    def _end_sessions(self) -> None:
        """The socket is gone: its held connects end undrained, and its sessions start their
        expiry clocks; they can continue on another socket or over HTTP while they live."""
        engine = self._context.engine
        for held, timer in self._holds.values():
            timer.cancel()
            engine.complete_connect(held, False)
        self._holds.clear()
        for client_id in self.sessions:
            if self._context.unbind_socket(client_id, self):
                self._context.apply(engine.unbind(client_id, self.number))
        self.sessions.clear()
