"""starlette-cometd as its CLI builds it, as an ASGI app for Granian (the Rust ASGI server), so
the benchmarks can compare server stacks. Granian speaks ASGI only: the CLI's native
long-polling protocol is a uvicorn protocol and does not apply here.

Run: granian --interface asgi --working-dir benches/peers/granian app:app
(settings from STARLETTE_COMETD_TIMEOUT and STARLETTE_COMETD_MAX_INTERVAL, in seconds)
"""

from __future__ import annotations

import os

from starlette_cometd import LongPollingServiceContextBuilder
from starlette_cometd.cli import build_app

_context = (
    LongPollingServiceContextBuilder()
    .timeout(float(os.environ.get("STARLETTE_COMETD_TIMEOUT", "20")))
    .max_interval(float(os.environ.get("STARLETTE_COMETD_MAX_INTERVAL", "60")))
    # Every session of the load generator comes from one address.
    .max_sessions_per_address(None)
    .build()
)
app, _ = build_app(_context, "/cometd")
