"""The health check (issue 13): 200 when the server can serve, 503 with the reasons when it
cannot (shutting down, its Redis not answering), from an application's route and the CLI's
--health, on one process and on the Redis engine."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from starlette_cometd import (
    LongPollingServiceContextBuilder,
    health_route,
)
from support.bayeux import handshake
from support.cli import start_cli, stop_cli, wait_listening
from support.redis_servers import RedisServer
from support.servers import beside_cometd, free_port


async def test_an_application_mounts_the_health_route() -> None:
    context = LongPollingServiceContextBuilder().build()
    async with (
        beside_cometd(context, health_route(context)) as base,
        httpx.AsyncClient(timeout=10) as http,
    ):
        reply = await http.get(f"{base}/health")
        assert reply.status_code == 200
        assert reply.json() == {"status": "ok", "engine": "memory", "problems": []}
        assert (await http.head(f"{base}/health")).status_code == 200
        context.begin_shutdown()
        reply = await http.get(f"{base}/health")
        assert reply.status_code == 503
        assert reply.json()["problems"] == ["the server is shutting down"]


async def test_a_context_not_started_is_not_ready() -> None:
    context = LongPollingServiceContextBuilder().build()
    report = await context.health()
    assert report["status"] == "unavailable"
    assert "not started" in report["problems"][0]


async def test_the_cli_is_ready_while_its_redis_answers(redis_server: RedisServer) -> None:
    port = free_port()
    process = await start_cli(
        port, "--health", "/health", "--redis", redis_server.url, "--log-level", "warning"
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_listening(f"{url}/cometd", process)
        async with httpx.AsyncClient(timeout=10) as http:
            reply = await http.get(f"{url}/health")
            assert reply.status_code == 200, reply.text
            assert reply.json() == {"status": "ok", "engine": "redis", "problems": []}
            assert await handshake(http, f"{url}/cometd")  # the endpoint beside it serves
            redis_server.stop()
            reply = await http.get(f"{url}/health")
            assert reply.status_code == 503
            [problem] = reply.json()["problems"]
            assert problem.startswith("Redis"), problem
            redis_server.start()
            for _ in range(50):
                reply = await http.get(f"{url}/health")
                if reply.status_code == 200:
                    break
                await asyncio.sleep(0.1)
            assert reply.status_code == 200, reply.text
    finally:
        await stop_cli(process)


@pytest.mark.parametrize(
    "options",
    [
        ("--health", "health"),
        ("--health", "/cometd"),
        ("--health", "/cometd/health"),
        ("--health", "/{x}"),
        ("--health", "/style.css", "--demo"),
    ],
)
async def test_the_cli_refuses_a_health_path_it_cannot_serve(options: tuple[str, ...]) -> None:
    process = await start_cli(free_port(), *options, stderr=asyncio.subprocess.PIPE)
    _, stderr = await process.communicate()
    assert process.returncode == 2
    assert b"--health:" in stderr, stderr
