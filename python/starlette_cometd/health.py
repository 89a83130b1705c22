"""Health: whether this process can serve, for a load balancer's or an orchestrator's probe.

Ready means started, not shutting down, and, on the Redis engine, Redis answering now: a
process whose Redis is away answers requests only with retry advice, so a balancer should send
clients elsewhere meanwhile."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

if TYPE_CHECKING:
    from .context import LongPollingServiceContext

# How long Redis may take to answer a probe's PING before the process is not ready.
PING_TIMEOUT = 2.0


async def health(context: LongPollingServiceContext) -> dict[str, Any]:
    """``status`` ("ok" or "unavailable"), ``engine`` ("memory" or "redis"), and ``problems``,
    each a short sentence (none when ok)."""
    problems: list[str] = []
    if context.closed:
        problems.append("the server is shutting down")
    elif not context.started:
        problems.append("the server has not started (its lifespan has not run)")
    node = context.cluster
    if node is not None and not problems:
        try:
            await asyncio.wait_for(node.ping(), PING_TIMEOUT)
        except TimeoutError:
            problems.append(f"Redis did not answer within {PING_TIMEOUT:g} s")
        except Exception as error:  # whatever the client raises: Redis is not answering
            problems.append(f"Redis is unavailable ({error})")
    return {
        "status": "unavailable" if problems else "ok",
        "engine": "memory" if node is None else "redis",
        "problems": problems,
    }


def health_route(context: LongPollingServiceContext, path: str = "/health") -> Route:
    """A route answering GET and HEAD at ``path`` with :func:`health` as JSON: 200 when ready,
    503 otherwise."""

    async def probe(request: Request) -> Response:
        report = await health(context)
        return JSONResponse(report, status_code=200 if report["status"] == "ok" else 503)

    return Route(path, probe, methods=["GET", "HEAD"], name="cometd-health")
