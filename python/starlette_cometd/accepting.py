"""Accepting connections in batches.

libuv, under uvloop, accepts one connection per turn of the event loop (since libuv's pull
request 3696 of 2022, "don't accept() connections in a loop"). A busy server's turn takes tens
of milliseconds, so on the benchmark machine a burst of 1,000 new connections (clients arriving,
or coming back after a restart) waited in the kernel's queue for up to 10 s, at about 40 accepts
a second, while the connections already open were served. An ``Acceptor`` watches a duplicate of
the listening socket and takes the waiting connections (up to a bound) each time it is ready.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

log = logging.getLogger("starlette_cometd")

# Connections taken per readiness of the listening socket: a bound on one turn's work, and
# small enough that with several workers (each woken by the same readiness) each takes a share.
MAX_ACCEPTS = 64
# After accept() failed (no file descriptor left, say): how long the acceptor stands aside.
# libuv's own watcher of the socket still takes one connection per turn meanwhile.
PAUSE_AFTER_ERROR = 0.5


class Acceptor:
    """Takes the connections waiting on ``listener`` and hands each to ``protocol_factory``'s
    protocol on ``loop``, beside the server that owns the listener (which keeps accepting its
    one per turn)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        listener: socket.socket,
        protocol_factory: Callable[[], asyncio.Protocol],
    ) -> None:
        self._loop = loop
        self._factory = protocol_factory
        self._socket = listener.dup()
        self._socket.setblocking(False)
        self._starting: set[asyncio.Task[object]] = set()
        self._closed = False
        loop.add_reader(self._socket.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(MAX_ACCEPTS):
            try:
                connection, _ = self._socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # gone before it was taken: that connection alone
            except OSError as error:
                log.warning("accepting a connection failed: %s", error)
                self._loop.remove_reader(self._socket.fileno())
                self._loop.call_later(PAUSE_AFTER_ERROR, self._resume)
                return
            connection.setblocking(False)
            start = self._loop.connect_accepted_socket(self._factory, connection)
            task: asyncio.Task[object] = self._loop.create_task(start)
            self._starting.add(task)
            task.add_done_callback(self._started)

    def _started(self, task: asyncio.Task[object]) -> None:
        self._starting.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("starting a connection failed: %s", task.exception())

    def _resume(self) -> None:
        if not self._closed:
            self._loop.add_reader(self._socket.fileno(), self._accept)

    def close(self) -> None:
        """Stops accepting (connections already taken are the server's to end)."""
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._socket.fileno())
        self._socket.close()

    async def started(self) -> None:
        """Returns once every connection taken so far has its protocol (and so is among the
        server's connections, which a shutdown ends)."""
        if self._starting:
            await asyncio.gather(*self._starting, return_exceptions=True)
