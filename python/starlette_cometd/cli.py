"""``starlette-cometd``: a standalone CometD server on uvicorn with the in-memory engine."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import logging.config
import re
import socket
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import uvicorn
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from . import demo, workers
from .accepting import Acceptor
from .builder import LongPollingServiceContextBuilder
from .cluster.keys import MAX_PARTITIONS
from .context import LongPollingServiceContext
from .gc_tuning import tune_gc
from .health import health_route
from .logs import log_config, skip_unused_record_fields
from .router import CometdApp, CometdRoute, RouterBuilder
from .transports.native_http import native_http_protocol

# uvicorn configures this logger, so these lines show beside its own.
log = logging.getLogger("uvicorn.error")


def _limit(text: str) -> int | None:
    """A limit on the command line: a count, or 0 for none."""
    count = int(text)
    if count < 0:
        raise argparse.ArgumentTypeError(f"{count} is not a count")
    return count or None


def _workers(text: str) -> int:
    """A number of worker processes: 1 or more."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"{count}: the server needs at least one worker process")
    return count


def _partitions(text: str) -> int:
    """A number of partitions of the Redis engine's log: 1 to MAX_PARTITIONS."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= count <= MAX_PARTITIONS:
        raise argparse.ArgumentTypeError(f"{count}: from 1 to {MAX_PARTITIONS} partitions")
    return count


def _history(text: str) -> tuple[str, int, float | None]:
    """A history rule on the command line: ``PATTERN[:SIZE[:TTL]]``."""
    pattern, _, rest = text.partition(":")
    size_text, _, ttl_text = rest.partition(":")
    try:
        size = int(size_text) if size_text else 1000
        ttl = float(ttl_text) if ttl_text else None
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not PATTERN[:SIZE[:TTL]]") from None
    if size < 1 or (ttl is not None and not ttl > 0):
        raise argparse.ArgumentTypeError(f"{text!r}: SIZE must be positive, TTL too")
    return pattern, size, ttl


# Sessions live in the memory of the process that created them: with several workers, a
# client's next request usually reaches another one, which does not know its session.
_SEVERAL_WORKERS_NEED_REDIS = (
    "several worker processes need the Redis engine (--redis URL) to share sessions; "
    "without it each session lives only in the process that created it, and most requests "
    "would reach another worker and get 402::session_unknown"
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="starlette-cometd", description="Run a standalone CometD (Bayeux 1.0) server."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument("--path", default="/cometd", help="URL path of the CometD endpoint")
    parser.add_argument(
        "--timeout", type=float, default=20.0, help="seconds a /meta/connect is held"
    )
    parser.add_argument(
        "--max-interval",
        type=float,
        default=60.0,
        help="seconds a session lives without a /meta/connect",
    )
    parser.add_argument(
        "--max-sessions-per-address",
        type=_limit,
        default=10_000,
        metavar="N",
        help="sessions one client address (IPv6: one /64) may have at once; 0 for no limit",
    )
    parser.add_argument(
        "--max-sessions-per-cookie",
        type=_limit,
        default=100,
        metavar="N",
        help="sessions that may share one BAYEUX_BROWSER cookie; 0 for no limit",
    )
    parser.add_argument(
        "--ack-extension",
        action="store_true",
        help="offer the ack extension (the clients' AckExtension): messages travel in "
        "/meta/connect replies and are sent again until acknowledged",
    )
    parser.add_argument(
        "--history",
        type=_history,
        action="append",
        default=[],
        metavar="PATTERN[:SIZE[:TTL]]",
        help="keep the last SIZE messages (default 1000) of each channel matching PATTERN, for "
        "TTL seconds at most, for the replay extension (repeatable; with --redis, the "
        "cluster's history, kept in Redis)",
    )
    parser.add_argument(
        "--health",
        metavar="PATH",
        help="answer GET PATH (such as /health) with 200 when the server is ready, 503 when "
        "not (shutting down, or its Redis not answering), with the reasons as JSON",
    )
    parser.add_argument(
        "--metrics",
        metavar="PATH",
        help="serve Prometheus metrics at PATH, such as /metrics (needs the metrics extra); "
        "in a cluster, of every process",
    )
    parser.add_argument(
        "--redis",
        metavar="URL",
        help="join the cluster sharing the Redis at URL (redis://host:6379/0, or any node of a "
        "Redis Cluster): every process started with the same URL and prefix serves as one "
        "server (needs the redis extra)",
    )
    parser.add_argument(
        "--redis-prefix",
        default="cometd",
        metavar="PREFIX",
        help="the prefix of the cluster's keys in Redis, so that several servers can share one",
    )
    parser.add_argument(
        "--redis-partitions",
        type=_partitions,
        default=1,
        metavar="N",
        help="how many logs the channels are spread over, the same on every process (on a "
        "Redis Cluster, its number of shards or a multiple spreads them over all)",
    )
    parser.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N",
        help="worker processes sharing the port; more than 1 needs --redis",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
    )
    parser.add_argument(
        "--access-log",
        action="store_true",
        help="log every request served, one line each, as uvicorn's access log does (off by "
        "default: a line per request costs on the busiest path)",
    )
    parser.add_argument(
        "--default-gc",
        action="store_true",
        help="keep Python's garbage collector settings (by default each worker calls "
        "tune_gc() before it serves: see the README)",
    )
    parser.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="log lines as text, or as one JSON object each (time, level, logger, message)",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="also serve a browser chat demo at / (it loads the CometD JavaScript library "
        f"{demo.COMETD_JS_VERSION} from a CDN, or from --cometd-js)",
    )
    parser.add_argument(
        "--cometd-js",
        metavar="DIR",
        type=Path,
        help="with --demo: serve the CometD JavaScript library from DIR, a copy of the npm "
        f"cometd {demo.COMETD_JS_VERSION} package (such as node_modules/cometd), "
        f"at {demo.LOCAL_PREFIX}/ instead of loading it from a CDN",
    )
    args = parser.parse_args(argv)
    if args.workers > 1 and args.redis is None:
        parser.error(f"--workers {args.workers}: {_SEVERAL_WORKERS_NEED_REDIS}")
    for pattern, size, ttl in args.history:
        try:  # the core says which patterns it takes
            LongPollingServiceContextBuilder().history(pattern, size=size, ttl=ttl).build()
        except ValueError as error:
            parser.error(f"--history {pattern}: {error}")
    if args.cometd_js is not None:
        if not args.demo:
            parser.error("--cometd-js needs --demo")
        if problem := demo.library_problem(args.cometd_js):
            parser.error(f"--cometd-js: {problem}")
    if args.demo and (problem := demo.path_conflict(args.path)):
        parser.error(f"--demo: {problem}")
    for option in ("health", "metrics"):
        path = getattr(args, option)
        if path is not None and (problem := _route_path_problem(path, args)):
            parser.error(f"--{option}: {problem}")
    if args.health is not None and args.health == args.metrics:
        parser.error("--health and --metrics need paths of their own")
    if args.metrics is not None and importlib.util.find_spec("prometheus_client") is None:
        parser.error("--metrics needs the metrics extra: pip install 'starlette-cometd[metrics]'")
    return args


def _route_path_problem(path: str, args: argparse.Namespace) -> str | None:
    """Why ``path`` cannot be served beside the CometD endpoint (and the demo)."""
    route, cometd = path.rstrip("/"), args.path.rstrip("/")
    if not re.fullmatch(r"(/[A-Za-z0-9._~-]+)+", path):
        return f"{path!r} is not a plain path (/health, /ops/metrics)"
    if route == cometd or route.startswith(cometd + "/"):
        return f"{path!r} is the CometD endpoint's path ({args.path}) or under it"
    if args.demo and demo.serves(route):
        return f"{path!r} is one of the demo's paths"
    return None


def build_app(
    context: LongPollingServiceContext, path: str, extra_routes: Sequence[BaseRoute] = ()
) -> tuple[ASGIApp, CometdApp]:
    """The ASGI app to serve, and the CometD endpoint inside it."""
    cometd = RouterBuilder().build(context)
    # The endpoint is matched first, without Starlette's routing and middleware in front (the
    # requests the native protocol leaves to the app: callback-polling, CORS preflights);
    # only the other routes (health, metrics, the demo) go through a Starlette router.
    others = Starlette(routes=list(extra_routes)) if extra_routes else None
    return _Standalone(CometdRoute(path, cometd), cometd, others), cometd


class _Standalone:
    """The CometD app at its path, and ``others`` (an ASGI app) for every other request, or
    404 without it; the CometD app runs the lifespan itself."""

    def __init__(self, route: CometdRoute, app: CometdApp, others: ASGIApp | None) -> None:
        self._route = route
        self._app = app
        self._others = others

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._app(scope, receive, send)
            return
        match, child = self._route.matches(scope)
        if match is Match.FULL:
            await self._app({**scope, **child}, receive, send)
        elif self._others is not None:
            await self._others(scope, receive, send)
        elif scope["type"] == "http":
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
        else:
            await send({"type": "websocket.close", "code": 1008})


class _Server(uvicorn.Server):
    """uvicorn's server, which also takes new connections in batches (see accepting.py), and
    releases held connects as soon as a stop is asked for: uvicorn otherwise waits for every
    open request, held connects included, before the lifespan ends."""

    def __init__(self, config: uvicorn.Config, context: LongPollingServiceContext) -> None:
        super().__init__(config)
        self._context = context
        self._acceptors: list[Acceptor] = []

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if sockets is None or self.should_exit or self.config.ssl is not None:
            return
        # Beside uvicorn's server, which takes one new connection per loop turn.
        loop = asyncio.get_running_loop()
        try:
            self._acceptors = [Acceptor(loop, sock, self._new_protocol) for sock in sockets]
        except NotImplementedError:  # a loop without add_reader (Windows' proactor)
            self._acceptors = []

    def _new_protocol(self) -> asyncio.Protocol:
        """A connection's protocol, made as uvicorn's server makes it."""
        protocol: asyncio.Protocol = self.config.http_protocol_class(  # type: ignore[call-arg]
            config=self.config, server_state=self.server_state, app_state=self.lifespan.state
        )
        return protocol

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for acceptor in self._acceptors:
            acceptor.close()
        # Connections just taken join the server's before uvicorn asks each to end.
        for acceptor in self._acceptors:
            await acceptor.started()
        await super().shutdown(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            loop.call_soon_threadsafe(self._context.begin_shutdown)
        super().handle_exit(sig, frame)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.workers > 1:
        # The supervisor's own lines, as its workers' (each configures its own).
        logging.config.dictConfig(log_config(args.log_level, args.log_format))
        return workers.supervise(args, serve)
    serve(args)
    return 0


def serve(args: argparse.Namespace, sockets: list[socket.socket] | None = None) -> None:
    """Runs one server process (on ``sockets`` its supervisor bound, if it has one)."""
    skip_unused_record_fields()  # here: a worker is a new interpreter that runs only this
    builder = (
        LongPollingServiceContextBuilder()
        .timeout(args.timeout)
        .max_interval(args.max_interval)
        .max_sessions_per_address(args.max_sessions_per_address)
        .max_sessions_per_cookie(args.max_sessions_per_cookie)
        .ack_extension(args.ack_extension)
    )
    for pattern, size, ttl in args.history:
        builder.history(pattern, size=size, ttl=ttl)
    if args.redis is not None:
        builder.redis(args.redis, prefix=args.redis_prefix, partitions=args.redis_partitions)
    context = builder.build()
    routes = demo.demo_routes(args.path, args.cometd_js) if args.demo else []
    if args.health is not None:
        routes.append(health_route(context, args.health))
    if args.metrics is not None:
        from .metrics import metrics_route  # the metrics extra's prometheus-client

        routes.append(metrics_route(context, args.metrics))
    app, cometd = build_app(context, args.path, routes)
    # Long-polling POSTs to the endpoint are answered by the native protocol; everything else
    # goes through uvicorn as usual. No proxy-header rewriting, and no access log unless asked
    # for: both cost on every request.
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        log_config=log_config(args.log_level, args.log_format),
        access_log=args.access_log,
        proxy_headers=False,
        http=native_http_protocol(cometd, args.path),
    )
    if sockets is None:
        # Bound before anything starts: a port already taken ends the process at once (exit
        # status 3), before the engine and a cluster's Redis tasks exist to be stopped.
        sockets = [config.bind_socket()]
    log.info("CometD endpoint at http://%s:%d%s", args.host, args.port, args.path)
    if args.demo:
        log.info("Demo chat at http://%s:%d/", args.host, args.port)
    if not args.default_gc:
        tune_gc()
    _Server(config, context).run(sockets=sockets)
