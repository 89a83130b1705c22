"""Prometheus metrics (issue 13): a scrape reads what the core counts, parsed here with
prometheus-client's own parser; on one process from an application's route and the CLI's
--metrics, and in a cluster, where any process tells of every one, each under its node."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from starlette_cometd import (
    LongPollingServiceContextBuilder,
    Message,
    SecurityPolicy,
    ServerSession,
)
from starlette_cometd.metrics import metrics_route
from support.bayeux import handshake, post
from support.cli import start_cli, stop_cli, wait_listening
from support.cluster import Client, cli_cluster
from support.servers import beside_cometd, free_port

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(http: httpx.AsyncClient, url: str) -> Samples:
    reply = await http.get(url)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")  # Prometheus 2
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    }


async def test_an_application_serves_what_the_core_counts() -> None:
    builder = LongPollingServiceContextBuilder().history("/chat/**")
    context = builder.events_channel_capacity(1).build()
    receiver = context.rx()  # never read: it misses what passes its capacity
    async with (
        beside_cometd(context, metrics_route(context)) as base,
        httpx.AsyncClient(timeout=10) as http,
    ):
        client_id = await handshake(http, f"{base}/cometd")
        subscribe = {"channel": "/meta/subscribe", "clientId": client_id}
        for channel in ("/chat/a", "/news"):
            await post(http, f"{base}/cometd", {**subscribe, "subscription": channel})
        publish = {"channel": "/chat/a", "clientId": client_id, "data": {"n": 1}}
        await post(http, f"{base}/cometd", publish)
        # Refusals, counted by kind whatever channel or id they name.
        for channel in ("/chat/b", "/chat/c"):
            unknown = {"channel": "/meta/subscribe", "clientId": "0" * 40}
            await post(http, f"{base}/cometd", {**unknown, "subscription": channel})
            asking = {**subscribe, "subscription": channel, "ext": {"replay": {channel: 9}}}
            await post(http, f"{base}/cometd", asking)
        gone = await handshake(http, f"{base}/cometd")
        await post(http, f"{base}/cometd", {"channel": "/meta/disconnect", "clientId": gone})
        samples = await scrape(http, f"{base}/metrics")
        accept = {"accept": "application/openmetrics-text; version=1.0.0"}
        open_metrics = await http.get(f"{base}/metrics", headers=accept)
    assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
    assert open_metrics.text.endswith("# EOF\n")
    assert samples[("bayeux_node_num_sessions", ())] == 1
    assert samples[("bayeux_node_num_sessions_websocket", ())] == 0
    assert samples[("bayeux_node_num_subscriptions", ())] == 2
    assert samples[("bayeux_node_num_channels", ())] == 2
    assert samples[("bayeux_node_handshakes_total", ())] == 2
    assert samples[("bayeux_node_events_missed_total", ())] == receiver.missed > 0
    assert samples[("bayeux_node_sessions_disconnected_total", ())] == 1
    assert samples[("bayeux_node_sessions_expired_total", ())] == 0
    errors = {
        dict(labels)["error"]: (dict(labels)["code"], value)
        for (name, labels), value in samples.items()
        if name == "bayeux_node_reply_errors_total"
    }
    assert errors == {"session_unknown": ("402", 2), "replay_id_invalid": ("400", 2)}
    # Every batch the core processed, and the one fan-out (to the publisher itself).
    batches = samples[("bayeux_node_batch_duration_seconds_count", ())]
    assert batches >= 9
    assert samples[("bayeux_node_batch_duration_seconds_bucket", (("le", "+Inf"),))] == batches
    assert samples[("bayeux_node_batch_duration_seconds_sum", ())] > 0
    assert samples[("bayeux_node_broadcast_duration_seconds_count", ())] == 1
    assert samples[("bayeux_node_messages_published_total", ())] == 1
    assert samples[("bayeux_node_messages_delivered_total", ())] == 1
    assert samples[("bayeux_node_messages_dropped_total", ())] == 0
    assert samples[("bayeux_history_num_messages", ())] == 1


async def test_the_cli_serves_metrics_beside_the_endpoint() -> None:
    port = free_port()
    process = await start_cli(port, "--metrics", "/metrics", "--log-level", "warning")
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_listening(f"{base}/cometd", process)
        async with httpx.AsyncClient(timeout=10) as http:
            await handshake(http, f"{base}/cometd")
            samples = await scrape(http, f"{base}/metrics")
    finally:
        await stop_cli(process)
    assert samples[("bayeux_node_num_sessions", ())] == 1


async def test_any_process_of_a_cluster_tells_of_every_one(redis_url: str) -> None:
    async with cli_cluster(redis_url, 2, "--metrics", "/metrics") as cluster:
        for node in range(2):
            await Client(cluster.node_url(node)).handshake()
        url = cluster.node_url(0).replace("/cometd", "/metrics")
        async with httpx.AsyncClient(timeout=10) as http:
            for _ in range(100):  # the other reports its counters every few seconds
                samples = await scrape(http, url)
                sessions = {
                    labels: value
                    for (name, labels), value in samples.items()
                    if name == "bayeux_node_num_sessions"
                }
                if len(sessions) == 2 and all(v == 1 for v in sessions.values()):
                    break
                await asyncio.sleep(0.2)
        assert len(sessions) == 2 and all(v == 1 for v in sessions.values()), sessions
        assert all(dict(labels).keys() == {"node"} for labels in sessions)
        trips = [v for (name, _), v in samples.items() if name == "bayeux_redis_round_trips_total"]
        assert len(trips) == 2 and all(v > 0 for v in trips), "the handshakes were written"


@pytest.mark.parametrize(
    "options", [("--metrics", "metrics"), ("--metrics", "/x", "--health", "/x")]
)
async def test_the_cli_refuses_metrics_it_cannot_serve(options: tuple[str, ...]) -> None:
    process = await start_cli(free_port(), *options, stderr=asyncio.subprocess.PIPE)
    _, stderr = await process.communicate()
    assert process.returncode == 2
    assert b"--" in stderr and b"error" in stderr, stderr


class NoSubscribing(SecurityPolicy):
    async def can_subscribe(self, session: ServerSession, channel: str, message: Message) -> bool:
        return False


async def test_refusals_made_by_the_applications_hooks_are_counted_too() -> None:
    context = LongPollingServiceContextBuilder().build()
    context.security_policy = NoSubscribing()
    async with (
        beside_cometd(context, metrics_route(context)) as base,
        httpx.AsyncClient(timeout=10) as http,
    ):
        client_id = await handshake(http, f"{base}/cometd")
        subscribe = {"channel": "/meta/subscribe", "clientId": client_id, "subscription": "/a"}
        [refused] = await post(http, f"{base}/cometd", subscribe)
        assert refused["successful"] is False
        samples = await scrape(http, f"{base}/metrics")
    denied = (("code", "403"), ("error", "subscribe_denied"))
    assert samples[("bayeux_node_reply_errors_total", denied)] == 1
