"""Logs in a cluster (issues 11 and 13): an unsuccessful reply is logged, with its session,
channel and error, by whichever process answers it, whether the session is served there or
was made elsewhere, whether the core or the application refused it, and while Redis is away."""

from __future__ import annotations

import asyncio
import logging

import pytest

from starlette_cometd import LongPollingServiceContextBuilder, SecurityPolicy, ServerSession
from starlette_cometd.hooks import Message
from support.cluster import Client, asgi_cluster
from support.logs import refusals_logged
from support.redis_servers import RedisServer


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
