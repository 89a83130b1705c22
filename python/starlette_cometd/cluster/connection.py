"""How a node reaches its Redis: one server, or a Redis Cluster. Which one is found out when the
node starts (``INFO cluster`` on the server the URL names), so the same ``redis://`` URL works
for both; everything that differs between them is here, and the node talks to either through
:class:`Connection`.

On one server the node's round trips (see turns.py) and its logs' blocking reads go by a lean
client of its own (resp.py, over ``redis://`` and ``unix://`` URLs without options other than
``db``), its other requests by a bounded pool of connections, and plain pub/sub carries the
control channels. On a Redis Cluster every command goes to the shard of its keys (each script
touches the keys of one slot, see ``keys.py``), the control channels are sharded
(``SPUBLISH``/``SSUBSCRIBE`` on the shard of the channel, so a note crosses no other shard),
and a cluster that cannot serve a slot now is reported as Redis away. Scripts go by ``EVAL``
on both (see :class:`_Eval`)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

# How often a command is tried again on a new connection when its connection failed.
RETRIES = 2
# Connections to Redis for requests, at most (per shard on a cluster), and how long a request
# waits for one on a single server.
MAX_CONNECTIONS = 32
CONNECTION_WAIT = 5.0
# How long the node waits for Redis to answer a command before it takes Redis as away: a
# Redis frozen (a paused VM, a process stopped by a signal) or a host gone without a word
# would otherwise hold every request for ever. Blocking reads wait this long past their block.
REPLY_WAIT = 5.0
# The longest a log's blocking read blocks in Redis (see node.READ_BLOCK_MS).
LONGEST_BLOCK = 2.0


class Script(Protocol):
    """A Lua script, called as redis-py's registered scripts are: on the client, or queued on a
    pipeline given as ``client``."""

    async def __call__(
        self, keys: Sequence[Any] = ..., args: Sequence[Any] = ..., client: Any = ...
    ) -> Any: ...


class Connection(Protocol):
    #: The client for requests (``Redis`` or ``RedisCluster``: the same commands and pipelines).
    redis: Any
    #: The client for the round trips of ``Turns``: its pipelines (``pipeline()``).
    requests: Any
    #: Another client, for the logs' blocking reads (``xread``).
    reader: Any
    #: Whether it is a Redis Cluster.
    cluster: bool

    def script(self, source: str) -> Script: ...

    async def tell(self, channel: str, note: str) -> int:
        """Publishes a note on a control channel: how many listened."""

    def notes(self, channel: str) -> AsyncGenerator[bytes, None]:
        """The notes published on a control channel from now on; raises what Redis raises when
        the subscription fails (the caller subscribes again)."""

    async def aclose(self) -> None: ...


async def connect(url: str) -> Connection:
    """A connection to the Redis at ``url``: a Redis Cluster when the server there is a node
    of one. Raises if it cannot be reached."""
    from redis.asyncio import Redis
    from redis.exceptions import ResponseError

    probe = Redis.from_url(url, **_retries())
    # Asked in database 0: a cluster node refuses to select another.
    database = probe.connection_pool.connection_kwargs.get("db") or 0
    probe.connection_pool.connection_kwargs["db"] = 0
    try:
        info: Any = await probe.info("cluster")
        cluster = bool(info.get("cluster_enabled"))
    except ResponseError:
        cluster = False  # INFO refused (an ACL, a proxy): taken for a single server
    finally:
        await probe.aclose()
    if not cluster:
        return SingleRedis(url)
    if database:
        raise ValueError(f"{url}: a Redis Cluster has only database 0, not {database}")
    return await ClusterRedis.open(url)


def _retries() -> dict[str, Any]:
    """A connection kept from before Redis restarted fails once: try again on a new one,
    briefly, so that a Redis that is really away still fails the request soon. A command that
    timed out is not sent again: it may have reached Redis, and a request would wait for each
    try."""
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import ConnectionError

    backoff = ExponentialBackoff(cap=0.2, base=0.02)
    return {
        # Retry's own default would add TimeoutError.
        "retry": Retry(backoff, RETRIES, supported_errors=(ConnectionError,)),
        "retry_on_error": [ConnectionError],
    }


# What the lean client (resp.py) understands of a URL.
LEAN_OPTIONS = {"host", "port", "path", "db", "username", "password", "connection_class"}


class SingleRedis:
    """One Redis server."""

    cluster = False

    def __init__(self, url: str) -> None:
        from redis.asyncio import BlockingConnectionPool
        from redis.asyncio.connection import UnixDomainSocketConnection, parse_url

        from .resp import RespClient

        client_class = _single_client_class()
        # Requests wait for a connection rather than fail when all are busy. A timeout the
        # URL names (socket_timeout=...) is taken over REPLY_WAIT.
        self._pool = BlockingConnectionPool.from_url(
            url, max_connections=MAX_CONNECTIONS, timeout=CONNECTION_WAIT, socket_timeout=REPLY_WAIT
        )
        self.redis: Redis = client_class(connection_pool=self._pool, **_retries())
        # Pub/sub waits for notes as long as none come (redis-py reads it without a timeout).
        self._listener: Redis = client_class.from_url(url, **_retries())
        # The clients for requests and log reads when they are not self.redis: closed with it.
        self._own: list[Any] = []
        options = parse_url(url)
        if options.get("connection_class") in (None, UnixDomainSocketConnection) and not (
            set(options) - LEAN_OPTIONS
        ):
            self._own = [RespClient(url), RespClient(url, exclusive=True)]
            self.requests, self.reader = self._own
        else:  # TLS, or options such as socket_timeout: by redis-py alone, which has them
            self.requests = self.redis
            # A URL's socket_timeout must then exceed a blocking read's block (2 s).
            self.reader = client_class.from_url(
                url, socket_timeout=REPLY_WAIT + LONGEST_BLOCK, **_retries()
            )
            self._own = [self.reader]

    def script(self, source: str) -> Script:
        return _Eval(source, self.redis)

    async def tell(self, channel: str, note: str) -> int:
        return int(await self.redis.publish(channel, note))

    async def notes(self, channel: str) -> AsyncGenerator[bytes, None]:
        async with self._listener.pubsub() as pubsub:
            await pubsub.subscribe(channel)
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    yield message["data"]

    async def aclose(self) -> None:
        _leave(self.redis, self._listener, *self._own)
        for client in self._own:
            await client.aclose()
        await self.redis.aclose()
        await self._listener.aclose()
        await self._pool.disconnect()


class ClusterRedis:
    """A Redis Cluster, found from any of its nodes."""

    cluster = True

    def __init__(self, redis: RedisCluster, reader: RedisCluster) -> None:
        self.redis = redis
        self.requests = redis
        self.reader = reader

    @classmethod
    async def open(cls, url: str) -> ClusterRedis:
        client_class = _cluster_client_class()
        options: dict[str, Any] = {"max_connections": MAX_CONNECTIONS, **_retries()}
        redis = client_class.from_url(url, socket_timeout=REPLY_WAIT, **options)
        reader = client_class.from_url(url, socket_timeout=REPLY_WAIT + LONGEST_BLOCK, **options)
        try:
            await redis.initialize()
            await reader.initialize()
        except BaseException:
            await redis.aclose()
            await reader.aclose()
            raise
        return cls(redis, reader)

    def script(self, source: str) -> Script:
        return _Eval(source, self.redis)

    async def tell(self, channel: str, note: str) -> int:
        return int(await self.redis.spublish(channel, note))

    async def notes(self, channel: str) -> AsyncGenerator[bytes, None]:
        from redis.asyncio import ConnectionPool, Redis
        from redis.exceptions import ConnectionError

        # On the shard that holds the channel's slot, as the cluster knows it now (it learns of
        # a moved slot from the commands that meet it, and the caller subscribes again).
        node = self.reader.get_node_from_key(channel)
        if node is None:
            raise ConnectionError(f"no node of the Redis Cluster holds {channel}")
        # No timeout: a subscription waits for notes as long as none come.
        kwargs = {**node.connection_kwargs, "socket_timeout": None}
        pool = ConnectionPool(connection_class=node.connection_class, **kwargs)
        try:
            async with Redis(connection_pool=pool) as client, client.pubsub() as pubsub:
                await pubsub.ssubscribe(channel)
                async for message in pubsub.listen():
                    kind = message.get("type")
                    if kind == "smessage":
                        yield message["data"]
                    elif kind == "sunsubscribe":
                        return  # the slot moved to another shard: subscribe there
        finally:
            await pool.disconnect()

    async def aclose(self) -> None:
        _leave(self.redis, self.reader)
        await self.redis.aclose()
        await self.reader.aclose()


def _leave(*clients: Any) -> None:
    """Marks the node's clients closed for good: a command sent after raises (see
    ``closed_error``). Not in the clients' own ``aclose``, which a Redis Cluster client calls itself
    to start again after a failure."""
    for client in clients:
        client.left = True


class _Eval:
    """A script sent whole with every call (``EVAL``), on either kind of Redis. Redis keeps it
    compiled by its hash, so the cost is its bytes on the wire. By ``EVALSHA``, redis-py asks
    ``SCRIPT EXISTS`` before every pipeline that holds a script, a round trip of its own per
    pipeline; and a server restarted, or a shard failed over, has forgotten the scripts loaded
    on it, which a pipeline would meet as errors."""

    def __init__(self, source: str, redis: Any) -> None:
        from redis.asyncio.client import Pipeline
        from redis.asyncio.cluster import ClusterPipeline

        from .resp import RespPipeline
        from .turns import Batch

        # Encoded once: the client sends bytes as they are.
        self.source = source.encode()
        self.redis = redis
        self._pipelines = (Pipeline, ClusterPipeline, Batch, RespPipeline)

    async def __call__(
        self, keys: Sequence[Any] = (), args: Sequence[Any] = (), client: Any = None
    ) -> Any:
        target = self.redis if client is None else client
        result = target.eval(self.source, len(keys), *keys, *args)
        if isinstance(target, self._pipelines):
            return None  # queued: its result comes with the pipeline's
        return await result


# What redis-py lets escape, no RedisError, when a connection is closed under a command (by
# another task of the same client, or by the peer): an attribute of the torn-down connection or
# transport found None, or (uvloop) a write on a closed transport, a RuntimeError that says so
# (see ``torn_down``). Taken as the connection failing, which it did.
TORN_DOWN = (AttributeError, TypeError, RuntimeError)


def torn_down(error: BaseException) -> bool:
    """Whether an error of ``TORN_DOWN`` is a connection torn down; any other RuntimeError
    (a closed loop, a bug) is raised as it is."""
    return not isinstance(error, RuntimeError) or "handler is closed" in str(error)


def _raise_torn_down(error: BaseException) -> NoReturn:
    """Raises an error of ``TORN_DOWN``: as ``ConnectionError`` when it is a connection torn
    down (see ``torn_down``), else as it is."""
    if not torn_down(error):
        raise error
    from redis.exceptions import ConnectionError

    raise ConnectionError(f"the connection was closed under the command ({error!r})") from error


def closed_error() -> Exception:
    """What a command sent after the node closed its client raises. redis-py would open new
    connections for it (a cluster client initializes itself again), which nothing would close:
    a node that has left meets Redis as away instead."""
    from redis.exceptions import ConnectionError

    return ConnectionError("this node has closed its connections to Redis")


_single_class: Any = None


def _single_client_class() -> Any:
    """``Redis``, with a connection torn down under a command raising ``ConnectionError``
    (see ``TORN_DOWN``). Made on first use, since redis is an optional extra."""
    global _single_class
    if _single_class is not None:
        return _single_class
    from redis.asyncio import Redis
    from redis.asyncio.client import Pipeline as RedisPipeline

    class Pipeline(RedisPipeline):
        owner: Client

        async def execute(self, raise_on_error: bool = True) -> list[Any]:
            if self.owner.left:
                raise closed_error()
            try:
                return await super().execute(raise_on_error)
            except TORN_DOWN as error:
                _raise_torn_down(error)

    class Client(Redis):
        left = False

        async def execute_command(self, *args: Any, **options: Any) -> Any:
            if self.left:
                raise closed_error()
            execute: Any = super().execute_command  # untyped in redis-py
            try:
                return await execute(*args, **options)
            except TORN_DOWN as error:
                _raise_torn_down(error)

        def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Any:
            pipeline = Pipeline(
                self.connection_pool, self.response_callbacks, transaction, shard_hint
            )
            pipeline.owner = self
            return pipeline

    _single_class = Client
    return Client


_client_class: Any = None


def _cluster_client_class() -> Any:
    """``RedisCluster``, with a cluster that cannot serve a slot now (a shard down, the cluster
    down, a slot moving) raising ``ClusterUnavailable``, a ``ConnectionError``: the node takes it
    as Redis away (the request is answered with retry advice), not as bad data under a key
    (``ClusterDownError`` is a ``ResponseError`` in redis-py), nor as a crash (``RedisCluster
    Exception`` is no ``RedisError``); a connection torn down under a command raises
    ``ConnectionError`` (see ``TORN_DOWN``). Made on first use, since redis is an optional
    extra."""
    global _client_class
    if _client_class is not None:
        return _client_class
    from redis.asyncio.cluster import ClusterPipeline, RedisCluster
    from redis.exceptions import (
        ClusterError,
        ConnectionError,
        RedisClusterException,
        TimeoutError,
        TryAgainError,
    )

    class ClusterUnavailable(ConnectionError):
        """The Redis Cluster cannot serve a slot now."""

    passing = (ClusterError, TryAgainError, RedisClusterException)
    away = (*passing, ConnectionError, TimeoutError)

    class Pipeline(ClusterPipeline):
        async def execute(
            self, raise_on_error: bool = True, allow_redirections: bool = True
        ) -> list[Any]:
            owner: Any = self.cluster_client  # our Client
            if owner.left:
                raise closed_error()
            try:
                results = await super().execute(raise_on_error, allow_redirections)
            except passing as error:
                raise ClusterUnavailable(str(error)) from error
            except TORN_DOWN as error:
                _raise_torn_down(error)
            for result in results:
                if isinstance(result, passing):
                    raise ClusterUnavailable(str(result)) from result
                if isinstance(result, away):
                    raise result
                if isinstance(result, TORN_DOWN):
                    _raise_torn_down(result)
            return results

    class Client(RedisCluster):
        left = False
        # A command that timed out may have reached Redis: not sent again, nor waited for
        # again (a pipeline still is: redis-py's cluster pipeline tries again on its own).
        ERRORS_ALLOW_RETRY = tuple(  # type: ignore[assignment]
            e for e in RedisCluster.ERRORS_ALLOW_RETRY if e is not TimeoutError
        )

        async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
            if self.left:
                raise closed_error()
            try:
                return await super().execute_command(*args, **kwargs)
            except passing as error:
                raise ClusterUnavailable(str(error)) from error
            except TORN_DOWN as error:
                _raise_torn_down(error)

        def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
            if transaction or shard_hint:
                raise ValueError("the cluster's pipelines are not transactions")
            return Pipeline(self, transaction)  # type: ignore[abstract]

    _client_class = Client
    return Client


def _redis_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """Every error of the Redis client, and those where Redis refused one command (bad data
    under a key) rather than failed altogether."""
    try:
        from redis.exceptions import RedisError, ResponseError
    except ImportError:  # pragma: no cover - the redis extra is missing
        return (OSError,), ()
    return (RedisError, OSError), (ResponseError,)


REDIS_ERRORS, RESPONSE_ERRORS = _redis_errors()
