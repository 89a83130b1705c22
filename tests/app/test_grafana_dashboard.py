"""The Grafana dashboard (docs/grafana/starlette-cometd.json, issue 13) asks only for metrics a
server serves: every metric its queries name is one a real scrape carries (as a family, with
its samples' suffixes: _total, _bucket), so a rename cannot leave a panel empty unnoticed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from starlette_cometd import LongPollingServiceContextBuilder
from starlette_cometd.metrics import metrics_route
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
