"""The Grafana dashboard (docs/grafana/starlette-cometd.json, issue 13) asks only for metrics a
server serves: every metric its queries name is one a real scrape carries (as a family, with
its samples' suffixes: _total, _bucket), so a rename cannot leave a panel empty unnoticed. And
with a real Prometheus scraping a server on the Redis engine under traffic, every query of
every panel is valid PromQL, and every panel draws something above zero."""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from starlette_cometd import LongPollingServiceContextBuilder
from starlette_cometd.cluster import node as node_module
from starlette_cometd.metrics import metrics_route
from support.bayeux import connect_message, handshake, post, subscribe
from support.drivers import require
from support.prometheus import PrometheusServer, prometheus_missing
from support.servers import beside_cometd

DASHBOARD = Path(__file__).parents[2] / "docs" / "grafana" / "starlette-cometd.json"
SUFFIXES = ("_total", "_bucket", "_count", "_sum")


def queried_metrics() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert exprs, "a dashboard without queries"
    return {name for expr in exprs for name in re.findall(r"\bbayeux_[a-z_]+", expr)}


async def test_every_metric_the_dashboard_queries_is_served() -> None:
    context = LongPollingServiceContextBuilder().history("/chat/**").build()
    async with (
        beside_cometd(context, metrics_route(context)) as base,
        httpx.AsyncClient(timeout=10) as http,
    ):
        text = (await http.get(f"{base}/metrics")).text
    families = {family.name for family in text_string_to_metric_families(text)}
    for name in sorted(queried_metrics()):
        family = next((name.removesuffix(s) for s in SUFFIXES if name.endswith(s)), name)
        assert family in families, f"{name}: no such metric is served"


def panels() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = json.loads(DASHBOARD.read_text())["panels"]
    return panels


async def traffic(http: httpx.AsyncClient, url: str, rounds: int) -> None:
    """What each panel shows, a round a second: sessions made, subscribed, published to and
    ended (by themselves, by expiry, by the application), held connects, refused messages."""
    for n in range(rounds):
        ids = [await handshake(http, url) for _ in range(3)]
        for client_id in ids:
            await subscribe(http, url, client_id, "/chat/room")
        for m in range(10):
            await post(http, url, {"channel": "/chat/room", "clientId": ids[0], "data": m})
        await post(http, url, {"channel": "/chat/room", "clientId": "0" * 40, "data": n})
        held = asyncio.ensure_future(post(http, url, connect_message(ids[1])))
        await post(http, url, {"channel": "/meta/disconnect", "clientId": ids[0]})
        await asyncio.sleep(1)
        await post(http, url, {"channel": "/meta/disconnect", "clientId": ids[1]})
        await held


async def test_every_panel_draws_data_from_a_real_prometheus(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require("prometheus", prometheus_missing())
    # A node reports its counters for the others every 5 s; every second here, for speed.
    monkeypatch.setattr(node_module, "STATS_EVERY", 1.0)
    context = (
        LongPollingServiceContextBuilder()
        .timeout(5)
        .max_interval(1)  # the third session of each round expires
        .history("/chat/**")
        .events_channel_capacity(1)
        .redis(redis_url)
        .build()
    )
    unread = context.rx()  # a receiver that never reads: it misses events
    async with (
        beside_cometd(context, metrics_route(context)) as base,
        httpx.AsyncClient(timeout=10) as http,
    ):
        prometheus = PrometheusServer(tmp_path / "prometheus", [f"{base}/metrics"])
        await asyncio.to_thread(prometheus.__enter__)
        try:
            start = time.time()
            # A session that stays, its connect held, while others come and go.
            standing = await handshake(http, f"{base}/cometd")
            await subscribe(http, f"{base}/cometd", standing, "/quiet/**")
            held = asyncio.ensure_future(
                post(http, f"{base}/cometd", connect_message(standing, timeout=8000))
            )
            await traffic(http, f"{base}/cometd", rounds=5)
            await held
            removed = await handshake(http, f"{base}/cometd")
            await context.remove_session(removed)
            await asyncio.sleep(3)  # the last scrapes
            end = time.time()
            for panel in panels():
                drawn = []
                for target in panel["targets"]:
                    series = await asyncio.to_thread(
                        prometheus.query_range, target["expr"], start, end, 1
                    )
                    drawn += [float(v) for s in series for _, v in s["values"]]
                assert any(v > 0 and not math.isnan(v) for v in drawn), panel["title"]
        finally:
            await asyncio.to_thread(prometheus.__exit__)
    del unread
