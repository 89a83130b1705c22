"""A lean client for one Redis server, for the node's busiest calls: the round trips of
``Turns`` (commits, appends, gates) and the logs' blocking reads.

redis-py costs a node far more than the round trip itself: each pipeline takes a connection
from the pool and gives it back (checking the process id each time), arms timeouts, runs in a
retry wrapper, and reads each reply by a coroutine of its own. Here a round trip is its
commands encoded into one write; hiredis parses the replies as they arrive, and they are
handed to the round trips in order. Requests share one connection (Redis answers in order);
a blocking read has a connection to itself while it waits.

A connection that fails fails every round trip waiting on it, as Redis away; the next one
opens a new connection. So does a reply that does not come in ``REPLY_WAIT`` seconds (a Redis
frozen, a host gone without a word): a request is told rather than held for ever. Nothing
is sent twice: a round trip that may have reached Redis is not tried again (a log append
would be doubled). Errors come as redis-py's, so that the
node tells Redis away (``ConnectionError``) from bad data under a key (``ResponseError``).
A Redis Cluster, ``rediss://``, and URLs with options other than the database go through
redis-py (see connection.py)."""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import hiredis
from hiredis import pack_command
from redis._parsers.base import BaseParser
from redis.asyncio.connection import parse_url
from redis.exceptions import ConnectionError, DataError, InvalidResponse, TimeoutError

from .connection import REPLY_WAIT, closed_error

# How long opening a connection (and saying who the node is) may take.
CONNECT_WAIT = 5.0

Arg = str | bytes | int | float

# hiredis's stub types the argument as a tuple of one element.
_pack: Callable[[tuple[Arg, ...]], bytes] = cast(Any, pack_command)


def encode(commands: Iterable[Sequence[Arg]]) -> bytes:
    """Commands as Redis reads them (RESP arrays of bulk strings), in one buffer: by hiredis,
    in C (twice as fast as in Python for a gate's marks). An argument of another type raises
    ``DataError`` (a Redis error, as redis-py's)."""
    try:
        return b"".join([_pack(tuple(command)) for command in commands])
    except TypeError as error:
        raise DataError(f"a command Redis cannot be sent: {error}") from error


# How long a round trip past its reply wait is given to read what may have come meanwhile.
OVERDUE_GRACE = 0.05


class _Waiting:
    __slots__ = ("count", "deadline", "done", "overdue", "replies")

    def __init__(self, count: int, done: asyncio.Future[list[Any]], deadline: float) -> None:
        self.count = count
        self.replies: list[Any] = []
        self.done = done
        self.deadline = deadline
        self.overdue = False


class _Wire(asyncio.Protocol):
    """One connection: round trips written whole, replies matched to them in order."""

    def __init__(self) -> None:
        # Error replies become redis-py's exceptions (LOADING a ConnectionError, WRONGTYPE
        # a ResponseError...), as values among the replies.
        self._parser = hiredis.Reader(protocolError=InvalidResponse, replyError=_error)
        self._waiting: deque[_Waiting] = deque()
        self._transport: asyncio.Transport | None = None
        # Checks that the oldest round trip is answered in time (one timer, not one per trip).
        self._timer: asyncio.TimerHandle | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def keep_alive(self) -> None:
        """TCP keep-alive: a peer gone without a word (a host down, a dropped NAT entry) is
        found out in time rather than waited on for ever."""
        sock = self._transport.get_extra_info("socket") if self._transport else None
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def data_received(self, data: bytes) -> None:
        parser, waiting = self._parser, self._waiting
        parser.feed(data)
        while True:
            try:
                reply = parser.gets()
            except InvalidResponse as error:
                self.close(ConnectionError(f"Redis sent what is not RESP: {error}"))
                return
            if reply is False:
                return
            if not waiting:
                self.close(ConnectionError(f"Redis replied to nothing asked: {reply!r}"))
                return
            first = waiting[0]
            first.replies.append(reply)
            if len(first.replies) == first.count:
                waiting.popleft()
                if not first.done.done():  # its caller may have been cancelled
                    first.done.set_result(first.replies)

    def connection_lost(self, error: Exception | None) -> None:
        self.close(ConnectionError(f"the connection to Redis was lost ({error or 'closed'})"))

    def send(self, encoded: bytes, count: int, patience: float) -> asyncio.Future[list[Any]]:
        """Writes ``count`` commands encoded: a future of their replies, which fails (and the
        connection with it) when they do not come in ``patience`` seconds. Round trips on one
        connection must share their patience: the oldest is the first due."""
        assert count > 0, "every round trip waits for a reply"
        loop = asyncio.get_running_loop()
        done: asyncio.Future[list[Any]] = loop.create_future()
        if self.lost or self._transport is None or self._transport.is_closing():
            done.set_exception(ConnectionError("the connection to Redis was lost"))
            return done
        deadline = loop.time() + patience
        self._waiting.append(_Waiting(count, done, deadline))
        self._transport.write(encoded)
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(deadline, self._check_due)
        return done

    def _check_due(self) -> None:
        self._timer = None
        if not self._waiting:
            return
        first = self._waiting[0]
        loop = asyncio.get_running_loop()
        if loop.time() < first.deadline:
            self._timer = loop.call_at(first.deadline, self._check_due)
            return
        if not first.overdue:
            # After this process stalled (paused, frozen with its VM), the timer may fire
            # before the loop reads the replies that came meanwhile: they get a last look.
            first.overdue = True
            self._timer = loop.call_later(OVERDUE_GRACE, self._check_due)
            return
        # The reply may still come, and would then be taken for the next round trip's.
        self.close(TimeoutError("Redis did not answer in time: taken as away"))

    def close(self, error: Exception) -> None:
        """Closes the connection: every round trip waiting on it fails with ``error``."""
        self.lost = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._transport.close()
        waiting, self._waiting = self._waiting, deque()
        for each in waiting:
            if not each.done.done():
                each.done.set_exception(error)


def _error(message: str) -> Exception:
    parse: Any = BaseParser.parse_error  # untyped in redis-py
    error: Exception = parse(message)
    return error


class RespClient:
    """Round trips to one Redis server (a ``redis://`` or ``unix://`` URL, with its user,
    password and database). ``exclusive``: each call has a connection to itself while it
    waits (for blocking reads); else all share one."""

    def __init__(self, url: str, exclusive: bool = False) -> None:
        self._options: dict[str, Any] = dict(parse_url(url))
        self._exclusive = exclusive
        self._shared: _Wire | None = None
        self._opening: asyncio.Lock | None = None
        self._idle: list[_Wire] = []
        self._wires: set[_Wire] = set()
        #: Set when the node has left: a call after raises (see connection.closed_error).
        self.left = False

    def pipeline(self, transaction: bool = False) -> RespPipeline:
        if transaction:
            raise ValueError("a lean pipeline is no transaction")
        return RespPipeline(self)

    async def round_trip(self, commands: Sequence[Sequence[Arg]], blocks: float = 0.0) -> list[Any]:
        """Each command's reply, in order (an error reply as its exception). Raises
        ``ConnectionError`` when Redis cannot be reached or the connection fails meanwhile,
        ``TimeoutError`` when the replies did not come in ``REPLY_WAIT`` seconds (after the
        ``blocks`` seconds a blocking command may wait, on an exclusive client)."""
        if self.left:
            raise closed_error()
        encoded = encode(commands)
        if not self._exclusive:
            return await (await self._shared_wire()).send(encoded, len(commands), REPLY_WAIT)
        wire = await self._idle_wire()
        try:
            replies = await wire.send(encoded, len(commands), REPLY_WAIT + blocks)
        except BaseException:
            wire.close(ConnectionError("a call was given up"))  # its reply may still come
            self._wires.discard(wire)
            raise
        if wire.lost or self.left:
            self._wires.discard(wire)
        else:
            self._idle.append(wire)
        return replies

    async def call(self, *command: Arg, blocks: float = 0.0) -> Any:
        """One command's reply; an error reply is raised. ``blocks``: see ``round_trip``."""
        (reply,) = await self.round_trip([command], blocks)
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def xread(
        self, streams: dict[str, str], count: int | None = None, block: int | None = None
    ) -> list[list[Any]] | None:
        """``XREAD``, its reply as redis-py gives it: per stream, its name and its entries,
        each its id and its fields as a dict; None when nothing came in ``block`` ms."""
        command: list[Arg] = ["XREAD"]
        if count is not None:
            command += ["COUNT", count]
        if block is not None:
            command += ["BLOCK", block]
        command += ["STREAMS", *streams, *streams.values()]
        read = await self.call(*command, blocks=(block or 0) / 1000)
        if read is None:
            return None
        return [
            [name, [(entry_id, _pairs(fields)) for entry_id, fields in entries]]
            for name, entries in read
        ]

    async def _idle_wire(self) -> _Wire:
        """A connection no call waits on: one kept from before (but one Redis closed since),
        or a new one."""
        while self._idle:
            wire = self._idle.pop()
            if not wire.lost:
                return wire
            self._wires.discard(wire)
        return await self._open()

    async def _shared_wire(self) -> _Wire:
        wire = self._shared
        if wire is not None and not wire.lost:
            return wire
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:  # callers meanwhile wait for the one connection opened
            old = self._shared
            if old is not None and not old.lost:
                return old
            if old is not None:
                self._wires.discard(old)
            self._shared = await self._open()
            return self._shared

    async def _open(self) -> _Wire:
        options = self._options
        loop = asyncio.get_running_loop()
        host, port = options.get("host", "localhost"), options.get("port", 6379)
        where = options.get("path") or f"{host}:{port}"
        wire: _Wire | None = None
        try:
            async with asyncio.timeout(CONNECT_WAIT):
                if "path" in options:
                    _, wire = await loop.create_unix_connection(_Wire, options["path"])
                else:
                    _, wire = await loop.create_connection(_Wire, host, port)
                    wire.keep_alive()
                hello: list[list[Arg]] = []
                if options.get("password") is not None:
                    user = options.get("username")
                    hello.append(["AUTH", *([user] if user else []), options["password"]])
                if options.get("db"):
                    hello.append(["SELECT", options["db"]])
                if hello:
                    for reply in await wire.send(encode(hello), len(hello), CONNECT_WAIT):
                        if isinstance(reply, Exception):
                            raise ConnectionError(f"Redis at {where} refused the node: {reply}")
            if self.left:  # closed meanwhile: this one would never be
                raise closed_error()
        except BaseException as error:
            if wire is not None:
                wire.close(ConnectionError("the connection could not be set up"))
            if isinstance(error, OSError | TimeoutError):
                raise ConnectionError(f"Error connecting to Redis at {where}: {error}") from error
            raise
        self._wires.add(wire)
        return wire

    async def aclose(self) -> None:
        self.left = True
        for wire in self._wires:
            wire.close(closed_error())
        self._wires.clear()
        self._idle.clear()
        self._shared = None


def _pairs(fields: list[Any] | None) -> dict[Any, Any]:
    if not fields:
        return {}
    return dict(zip(fields[::2], fields[1::2], strict=False))


class RespPipeline:
    """Commands queued as on a redis-py pipeline (``pipe.zrem(key, member)``, scripts given it
    as ``client``), sent in one round trip by ``execute``. Replies are Redis's own, unconverted
    (``SET`` gives ``b"OK"``, ``PEXPIRE`` 1)."""

    def __init__(self, client: RespClient) -> None:
        self._client = client
        self._commands: list[Sequence[Arg]] = []
        # The replies given as redis-py gives them: by the index of their command.
        self._converted: dict[int, Callable[[Any], Any]] = {}

    def __getattr__(self, name: str) -> Any:
        """Any command, its arguments as Redis takes them (redis-py's keyword arguments are
        not understood: a call with any raises ``DataError``)."""

        def queue(*args: Arg, **options: Any) -> RespPipeline:
            if options:
                raise DataError(f"{name}: the lean client takes no keyword arguments")
            self._commands.append((name.upper(), *args))
            return self

        return queue

    def delete(self, *keys: str) -> RespPipeline:
        self._commands.append(("DEL", *keys))
        return self

    def hgetall(self, name: str) -> RespPipeline:
        """The hash as a dict, as redis-py gives it."""
        self._converted[len(self._commands)] = _pairs
        self._commands.append(("HGETALL", name))
        return self

    def hset(self, name: str, mapping: dict[str, Arg]) -> RespPipeline:
        self._commands.append(("HSET", name, *(item for pair in mapping.items() for item in pair)))
        return self

    def __len__(self) -> int:
        return len(self._commands)

    async def __aenter__(self) -> RespPipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._commands, self._converted = [], {}

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Each command's reply (an exception for a command Redis refused, unless
        ``raise_on_error``: then the first is raised). Raises ``ConnectionError`` when the
        round trip failed, or Redis answered one of its commands as unavailable (loading)."""
        commands, self._commands = self._commands, []
        converted, self._converted = self._converted, {}
        if not commands:
            return []
        replies = await self._client.round_trip(commands)
        for index, reply in enumerate(replies):
            if isinstance(reply, ConnectionError) or (
                raise_on_error and isinstance(reply, Exception)
            ):
                raise reply
            if index in converted and not isinstance(reply, Exception):
                replies[index] = converted[index](reply)
        return replies
