"""The Redis the Redis engine's tests stand on: real redis-server processes started by the
fixtures, checked with redis-py's asyncio client."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
import redis
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from support.redis_servers import RedisServer


def client(url: str) -> Redis:
    """A client that reports a stopped server at once instead of retrying."""
    return Redis.from_url(url, retry=Retry(NoBackoff(), 0), socket_connect_timeout=1)


async def test_redis_server_answers_on_loopback_without_persistence(redis_url: str) -> None:
    assert redis_url.startswith("redis://127.0.0.1:")
    async with client(redis_url) as redis_client:
        assert await redis_client.ping() is True
        assert await redis_client.dbsize() == 0
        assert await redis_client.set("greeting", "hello") is True
        assert await redis_client.get("greeting") == b"hello"
        version = (await redis_client.info("server"))["redis_version"]
        # Streams, functions and sharded pub/sub, which the engine is designed on, are Redis 7.
        assert int(str(version).split(".")[0]) >= 7
        assert await redis_client.config_get("save") == {"save": ""}
        assert await redis_client.config_get("appendonly") == {"appendonly": "no"}


async def test_stop_then_restart_on_the_same_port_empties_the_server(
    redis_server: RedisServer,
) -> None:
    url = redis_server.url
    async with client(url) as redis_client:
        await redis_client.set("kept?", "no")
        first_run = (await redis_client.info("server"))["run_id"]

        await asyncio.to_thread(redis_server.stop)
        assert redis_server.process is None
        with pytest.raises(redis.ConnectionError):
            await redis_client.ping()

        await asyncio.to_thread(redis_server.start)
        assert redis_server.url == url
        # The same client reconnects to the same address and finds a new, empty server.
        assert await redis_client.dbsize() == 0
        assert await redis_client.get("kept?") is None
        assert (await redis_client.info("server"))["run_id"] != first_run


async def test_restart_in_one_call(redis_server: RedisServer) -> None:
    async with client(redis_server.url) as redis_client:
        await redis_client.set("kept?", "no")
        first_run = (await redis_client.info("server"))["run_id"]
    await asyncio.to_thread(redis_server.restart)
    async with client(redis_server.url) as redis_client:
        assert await redis_client.exists("kept?") == 0
        assert (await redis_client.info("server"))["run_id"] != first_run


def test_stop_kills_a_server_that_does_not_exit(redis_server: RedisServer) -> None:
    process = redis_server.process
    assert process is not None
    # A stopped process cannot act on SIGTERM; only SIGKILL ends it.
    os.kill(process.pid, signal.SIGSTOP)
    redis_server.stop(timeout=0.5)
    assert process.returncode == -signal.SIGKILL


def test_a_port_in_use_is_reported_with_the_servers_log(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    second = RedisServer(tmp_path / "second", redis_server.port)
    with pytest.raises(RuntimeError, match="exited with status") as failure:
        second.start()
    assert "Address already in use" in str(failure.value)
    assert second.process is None


async def node_key_counts(urls: list[str]) -> list[int]:
    counts = []
    for url in urls:
        async with client(url) as node:
            counts.append(await node.dbsize())
    return counts


async def test_cluster_is_ok_on_every_node(redis_cluster_urls: list[str]) -> None:
    assert len(redis_cluster_urls) == 3
    for url in redis_cluster_urls:
        async with client(url) as node:
            info = await node.cluster("INFO")
            assert info["cluster_state"] == "ok"
            assert info["cluster_known_nodes"] == "3"
            assert info["cluster_size"] == "3"
            assert info["cluster_slots_assigned"] == "16384"
    assert await node_key_counts(redis_cluster_urls) == [0, 0, 0], "not emptied for the test"


async def test_cluster_spreads_keys_in_different_slots_over_its_nodes(
    redis_cluster_urls: list[str],
) -> None:
    assert await node_key_counts(redis_cluster_urls) == [0, 0, 0], "not emptied for the test"
    keys = [f"cometd:{{p{partition}}}:head" for partition in range(16)]
    async with RedisCluster.from_url(redis_cluster_urls[0]) as cluster:
        assert len({cluster.keyslot(key) for key in keys}) == len(keys)
        for key in keys:
            assert await cluster.set(key, key) is True
        for key in keys:
            assert await cluster.get(key) == key.encode()
        # Keys with one hash tag share a slot, so one node holds them all.
        assert cluster.keyslot("cometd:{p3}:log") == cluster.keyslot("cometd:{p3}:head")
    # Each node holds its own share of the slots, and so of the keys.
    counts = await node_key_counts(redis_cluster_urls)
    assert sum(counts) == len(keys)
    assert all(count > 0 for count in counts), counts
