"""A round-robin TCP proxy for the tests: each new connection goes to the next backend in turn,
as a load balancer without sticky sessions sends it, so that a client's requests reach several
server processes whenever it opens new connections."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import TracebackType

# The most read from one side before it is written to the other.
CHUNK = 64 * 1024


class RoundRobinProxy:
    """Listens on ``127.0.0.1:port`` (a free port, known once started) and pipes each accepted
    connection to ``127.0.0.1:<backend>``, taking the backends in turn. A backend taken out is
    skipped by new connections; a connection that finds no backend, or whose backend refuses
    it, is closed at once (as a load balancer without retries would). ``routed`` lists the
    backend each connection was sent to, in order."""

    def __init__(self, backends: Sequence[int]) -> None:
        if not backends:
            raise ValueError("a proxy needs at least one backend")
        self.backends = list(backends)
        self.port = 0
        self.routed: list[int] = []
        self._out: set[int] = set()
        self._turn = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        # Port 0: the kernel picks a free port and nobody can take it in between.
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def take_out(self, backend: int) -> None:
        """New connections skip ``backend`` (those open stay as they are)."""
        self._out.add(backend)

    def put_back(self, backend: int) -> None:
        self._out.discard(backend)

    def move(self, backend: int, to: int) -> None:
        """A backend now listens on another port (taken out, it stays out)."""
        self.backends[self.backends.index(backend)] = to
        if backend in self._out:
            self._out.discard(backend)
            self._out.add(to)

    def _next_backend(self) -> int | None:
        for _ in self.backends:
            backend = self.backends[self._turn % len(self.backends)]
            self._turn += 1
            if backend not in self._out:
                return backend
        return None

    async def _handle(
        self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(client)
        try:
            backend_port = self._next_backend()
            if backend_port is None:
                return
            self.routed.append(backend_port)
            try:
                backend_reader, backend = await asyncio.open_connection("127.0.0.1", backend_port)
            except OSError:
                return
            self._writers.add(backend)
            try:
                await asyncio.gather(
                    _pipe(client_reader, backend, client), _pipe(backend_reader, client, backend)
                )
            finally:
                self._writers.discard(backend)
                backend.close()
        finally:
            self._writers.discard(client)
            client.close()
            self._handlers.discard(task)

    async def close(self) -> None:
        """Stops listening and cuts every open connection."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> RoundRobinProxy:
        await self.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, source: asyncio.StreamWriter
) -> None:
    """Copies bytes from ``reader`` to ``writer`` until EOF, then passes the EOF on (a
    half-close: the other direction keeps flowing). A reset on either side cuts both, through
    ``source``, the reader's own writer."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof() and not writer.is_closing():
            writer.write_eof()
    except OSError:  # ConnectionResetError, BrokenPipeError and the like
        writer.transport.abort()
        source.transport.abort()
