"""Prometheus metrics (the ``metrics`` extra: prometheus-client), named as Centrifugo names its
own, under a ``bayeux_`` prefix.

Nothing is counted on the hot path for them: a scrape reads the counters the core keeps anyway
(``stats()``), so serving metrics costs nothing between scrapes. In a cluster (the Redis
engine, or ``--workers``), a scrape on any process reports every live process, each under its
``node`` label, as the processes last reported their counters to Redis (every few seconds):
behind one port shared by several workers, whichever answers the scrape tells of all. Labels
are never per channel or per client, so the series stay few."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .cluster.node import EngineUnavailable
from .counters import DURATIONS, ERRORS, flat_counters

if TYPE_CHECKING:
    from .context import LongPollingServiceContext

# (counter in stats(), metric name, help, whether it only grows)
_METRICS = [
    ("sessions", "bayeux_node_num_sessions", "Sessions alive now.", False),
    (
        "sessions_websocket",
        "bayeux_node_num_sessions_websocket",
        "Of those, on a WebSocket.",
        False,
    ),
    ("subscriptions", "bayeux_node_num_subscriptions", "Subscriptions, patterns too.", False),
    ("held", "bayeux_node_num_held_connects", "/meta/connect requests held now.", False),
    ("channels", "bayeux_node_num_channels", "Channels and patterns with subscribers.", False),
    ("sessions_created", "bayeux_node_handshakes", "Sessions made (handshakes accepted).", True),
    ("sessions_removed", "bayeux_node_sessions_removed", "Sessions ended, for any reason.", True),
    (
        "sessions_disconnected",
        "bayeux_node_sessions_disconnected",
        "Sessions ended by their client's /meta/disconnect.",
        True,
    ),
    ("sessions_expired", "bayeux_node_sessions_expired", "Sessions ended by expiry.", True),
    (
        "sessions_ended_by_server",
        "bayeux_node_sessions_ended_by_server",
        "Sessions ended by the server: the application, or lost with Redis's data.",
        True,
    ),
    ("published", "bayeux_node_messages_published", "Messages published.", True),
    ("delivered", "bayeux_node_messages_delivered", "Copies queued for sessions.", True),
    ("dropped", "bayeux_node_messages_dropped", "Copies dropped from full queues.", True),
    ("events_missed", "bayeux_node_events_missed", "Events receivers missed.", True),
    ("redis_round_trips", "bayeux_redis_round_trips", "Round trips of batched writes.", True),
    ("redis_errors", "bayeux_redis_errors", "Redis failures met.", True),
    ("redis_recoveries", "bayeux_redis_recoveries", "Redis found back after one.", True),
]
# The core's histograms (see rust/engine/durations.rs): (name in the core, metric, help).
_HISTOGRAMS = [
    ("batches", "bayeux_node_batch_duration_seconds", "How long the core took per batch."),
    ("fan_outs", "bayeux_node_broadcast_duration_seconds", "How long each fan-out took."),
]
# The history's, the whole server's (in a cluster, kept in Redis, not by any one process).
_HISTORY = [
    ("history_channels", "bayeux_history_num_channels", "Channels keeping a history."),
    ("history_messages", "bayeux_history_num_messages", "Messages the histories keep."),
]


class _Snapshot(Collector):
    """The counters of one scrape, per node (``None`` for a process alone), and the
    history's."""

    def __init__(
        self,
        nodes: dict[str | None, dict[str, int]],
        history: dict[str, int],
        bounds: list[float],
    ) -> None:
        self._nodes = nodes
        self._history = history
        self._bounds = bounds

    def collect(self) -> Iterator[Metric]:
        for key, name, text in _HISTORY:
            yield GaugeMetricFamily(name, text, value=self._history.get(key, 0))
        labels = ["node"] if any(node is not None for node in self._nodes) else []
        for key, name, text, grows in _METRICS:
            family: CounterMetricFamily | GaugeMetricFamily
            if grows:
                family = CounterMetricFamily(name, text, labels=labels)
            else:
                family = GaugeMetricFamily(name, text, labels=labels)
            for node, stats in self._nodes.items():
                if key in stats:
                    family.add_metric([node] if node is not None else [], stats[key])
            yield family
        errors = CounterMetricFamily(
            "bayeux_node_reply_errors",
            "Unsuccessful replies, by Bayeux error code and name.",
            labels=[*labels, "code", "error"],
        )
        for node, stats in self._nodes.items():
            for key, count in stats.items():
                if key.startswith(ERRORS):
                    code, _, error = key.removeprefix(ERRORS).partition(":")
                    errors.add_metric([*([node] if node is not None else []), code, error], count)
        yield errors
        yield from self._histograms(labels)

    def _histograms(self, labels: list[str]) -> Iterator[Metric]:
        for key, name, text in _HISTOGRAMS:
            family = HistogramMetricFamily(name, text, labels=labels)
            for node, stats in self._nodes.items():
                # Per bucket, one past the last bound too; Prometheus counts them cumulated.
                counts = [
                    stats.get(f"{DURATIONS}{key}:{i}", 0) for i in range(len(self._bounds) + 1)
                ]
                cumulative = itertools.accumulate(counts)
                bounds = [f"{bound:g}" for bound in self._bounds] + ["+Inf"]
                buckets = list(zip(bounds, cumulative, strict=True))
                total = stats.get(f"{DURATIONS}{key}:sum_us", 0) / 1e6
                family.add_metric([node] if node is not None else [], buckets, total)
            yield family


async def exposition(context: LongPollingServiceContext, accept: str = "") -> tuple[bytes, str]:
    """The metrics as a scrape reads them now, and their content type: Prometheus's text
    format, or OpenMetrics when ``accept`` (the scrape's Accept header) asks for it."""
    if context.cluster is None:
        stats = context.stats()
        nodes: dict[str | None, dict[str, int]] = {None: {**stats, **flat_counters(context.engine)}}
        history = stats
    else:
        node = context.cluster
        try:
            reported, history = await node.node_stats(reported=True)
        except EngineUnavailable:
            # Redis away (or the node not started): this process's own, as they are.
            reported = {node.id: {**context.stats(), **flat_counters(context.engine)}}
            history = {}
        nodes = {name: stats for name, stats in reported.items()}
    registry = CollectorRegistry(auto_describe=False)
    [(_, bounds, _, _), *_] = context.engine.durations()  # the same on every node
    registry.register(_Snapshot(nodes, history, bounds))
    encode, content_type = choose_encoder(accept)
    return encode(registry), content_type


def metrics_route(context: LongPollingServiceContext, path: str = "/metrics") -> Route:
    """A route answering GET at ``path`` with the metrics, for Prometheus to scrape."""

    async def scrape(request: Request) -> Response:
        body, content_type = await exposition(context, request.headers.get("accept", ""))
        return Response(body, headers={"content-type": content_type})

    return Route(path, scrape, methods=["GET"], name="cometd-metrics")
