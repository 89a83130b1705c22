"""``starlette-cometd``: a standalone CometD server on uvicorn with the in-memory engine."""

from __future__ import annotations

import argparse
import asyncio
import logging
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from .context import LongPollingServiceContext, LongPollingServiceContextBuilder
from .router import CometdRoute, RouterBuilder

log = logging.getLogger("starlette_cometd")


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
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
    )
    return parser.parse_args(argv)


def build_app(context: LongPollingServiceContext, path: str) -> Starlette:
    cometd = RouterBuilder().build(context)
    return Starlette(routes=[CometdRoute(path, cometd)], lifespan=context.lifespan)


class _Server(uvicorn.Server):
    """Releases held connects as soon as a stop is asked for: uvicorn otherwise waits for
    every open request, held connects included, before the lifespan ends."""

    def __init__(self, config: uvicorn.Config, context: LongPollingServiceContext) -> None:
        super().__init__(config)
        self._context = context

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
    context = (
        LongPollingServiceContextBuilder()
        .timeout(args.timeout)
        .max_interval(args.max_interval)
        .build()
    )
    app = build_app(context, args.path)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level)
    log.info("CometD endpoint at http://%s:%d%s", args.host, args.port, args.path)
    _Server(config, context).run()
    return 0
