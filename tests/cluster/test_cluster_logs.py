"""Logs in a cluster (issues 11 and 13): an unsuccessful reply is logged, with its session,
channel and error, by whichever process answers it, whether the session is served there or
was made elsewhere, whether the core or the application refused it, and while Redis is away;
and Redis being away is logged a line a second, however many requests meet it."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from asyncio.subprocess import PIPE

import pytest

from starlette_cometd import LongPollingServiceContextBuilder, SecurityPolicy, ServerSession
from starlette_cometd.hooks import Message
from support.cli import start_cli, stop_cli, wait_listening
from support.cluster import Client, asgi_cluster
from support.logs import refusals_logged
from support.redis_servers import RedisServer
from support.servers import free_port


class NoSecrets(SecurityPolicy):
    async def can_publish(self, session: ServerSession, channel: str, message: Message) -> bool:
        return not channel.startswith("/secret")


async def test_refusals_are_logged_by_every_process(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="starlette_cometd.errors")
    with_policy = lambda: LongPollingServiceContextBuilder().security_policy(NoSecrets())  # noqa: E731
    async with asgi_cluster(redis_url, 3, with_policy) as cluster:
        client = Client(cluster.url)
        await client.handshake()
        # Behind the proxy each request reaches the next process of three.
        for n in range(3):
            reply = await client.publish("/secret/x", n)
            assert reply["error"] == "403:denied_by_security_policy:publish_denied"
        for n in range(3):
            reply = await client.publish("/bad/*", n)
            assert reply["error"] == "405::channel_invalid"
        stranger = Client(cluster.url)
        stranger.client_id = "e" * 40
        for n in range(3):
            assert (await stranger.publish("/a", n))["error"] == "402::session_unknown"
    logged = refusals_logged(caplog)
    assert logged == [
        *[(client.client_id, "/secret/x", "403:denied_by_security_policy:publish_denied")] * 3,
        *[(client.client_id, "/bad/*", "405::channel_invalid")] * 3,
        *[("e" * 40, "/a", "402::session_unknown")] * 3,
    ]


async def test_requests_refused_while_redis_is_away_are_logged(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="starlette_cometd.errors")
    async with asgi_cluster(redis_server.url, 2) as cluster:
        client = Client(cluster.url)
        await client.handshake()
        await asyncio.to_thread(redis_server.stop)
        for n in range(2):
            assert (await client.publish("/a", n))["error"] == "503::engine_unavailable"
    logged = refusals_logged(caplog)
    assert logged == [(client.client_id, "/a", "503::engine_unavailable")] * 2


# How many requests the flood below sends while Redis is away, 20 at a time.
FLOOD = 400
UNAVAILABLE = "the cluster's Redis is unavailable: "


def outage_lines(lines: list[str]) -> tuple[int, int]:
    """The lines that name Redis's error, and the requests that the others counted."""
    named = counted = 0
    for line in lines:
        if UNAVAILABLE not in line:
            continue
        more = re.search(r"unavailable: met (\d+) more times since", line)
        if more:
            counted += int(more.group(1))
        else:
            named += 1
    return named, counted


async def flood_while_away(url: str, redis_server: RedisServer) -> float:
    """A session's publishes while Redis is away, each answered unavailable; then long enough
    for the sweeper to log the last second's count. Returns the seconds the flood took."""
    client = Client(url)
    await client.handshake()
    await asyncio.to_thread(redis_server.stop)
    started = time.monotonic()
    for start in range(0, FLOOD, 20):
        replies = await asyncio.gather(*(client.publish("/a", n) for n in range(start, start + 20)))
        assert {reply["error"] for reply in replies} == {"503::engine_unavailable"}
    took = time.monotonic() - started
    await asyncio.sleep(2.5)
    return took


@pytest.mark.parametrize("stack", ["native", "asgi"])
async def test_a_flood_while_redis_is_away_logs_a_line_a_second(
    stack: str, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Thousands of clients retrying while Redis is away must not write a line each: the
    first request of each second is logged with Redis's error, and the others counted."""
    if stack == "asgi":
        caplog.set_level(logging.WARNING, logger="starlette_cometd")
        async with asgi_cluster(redis_server.url, 1) as cluster:
            took = await flood_while_away(cluster.url, redis_server)
        lines = [record.getMessage() for record in caplog.records]
    else:
        port = free_port()
        process = await start_cli(
            port, "--redis", redis_server.url, "--log-level", "warning", stderr=PIPE
        )
        try:
            url = f"http://127.0.0.1:{port}/cometd"
            await wait_listening(url, process)
            took = await flood_while_away(url, redis_server)
        finally:
            await stop_cli(process)
        assert process.stderr is not None
        lines = (await process.stderr.read()).decode().splitlines()
    named, counted = outage_lines(lines)
    assert named + counted == FLOOD, lines
    assert 1 <= named <= int(took) + 2, (named, took)
