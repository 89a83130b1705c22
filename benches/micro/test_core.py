"""Micro benchmarks of the Rust core through its Python API (pytest-benchmark).

Run: python -m pytest benches/micro -q --benchmark-columns=median,ops
Each benchmark also prints nanoseconds per unit of work (per delivery, per message).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from starlette_cometd._core import Engine

SUBSCRIBERS = 10_000


def engine(**options: Any) -> Engine:
    settings: dict[str, Any] = {
        "timeout": 20.0,
        "max_interval": 600.0,
        "interval": 0.0,
        "queue_capacity": 1_000,
        "trust_client_session": True,
        "connection_types": ["long-polling"],
    }
    settings.update(options)
    return Engine(**settings)


def handshake(core: Engine) -> str:
    reply = json.loads(core.process(b'[{"channel":"/meta/handshake"}]').body)
    client_id: str = reply[0]["clientId"]
    return client_id


def subscribe(core: Engine, client_id: str, channel: str) -> None:
    body = json.dumps(
        [{"channel": "/meta/subscribe", "clientId": client_id, "subscription": channel}]
    )
    assert b'"successful":true' in core.process(body.encode()).body


def report(benchmark: Any, units: int, unit: str) -> None:
    median_ns = benchmark.stats.stats.median * 1e9
    benchmark.extra_info[f"ns_per_{unit}"] = median_ns / units
    print(f"\n{benchmark.name}: {median_ns / units:.1f} ns per {unit}")


def drained(core: Engine, ids: list[str]) -> Callable[[], None]:
    def setup() -> None:
        for client_id in ids:
            core.drain(client_id)

    return setup


@pytest.fixture(scope="module")
def fanout() -> tuple[Engine, list[str]]:
    core = engine()
    ids = [handshake(core) for _ in range(SUBSCRIBERS)]
    for client_id in ids:
        subscribe(core, client_id, "/news")
    return core, ids


def test_fanout_to_10000_subscribers(benchmark: Any, fanout: tuple[Engine, list[str]]) -> None:
    core, ids = fanout
    data = {"headline": "x" * 100, "n": 1}
    benchmark.pedantic(core.publish, args=("/news", data), setup=drained(core, ids[:1]), rounds=200)
    assert core.session_info(ids[-1])["queued"] > 0  # type: ignore[index]
    report(benchmark, SUBSCRIBERS, "delivery")


def test_wildcard_matching_with_10000_patterns(benchmark: Any) -> None:
    core = engine()
    client_id = handshake(core)
    for i in range(SUBSCRIBERS):
        subscribe(core, client_id, f"/rooms/{i}/*" if i % 2 else f"/rooms/{i}/**")
    # One publish to a channel under one of the patterns: cost must not grow with patterns.
    benchmark.pedantic(
        core.publish, args=("/rooms/4242/chat", 1), setup=drained(core, [client_id]), rounds=2000
    )
    report(benchmark, 1, "publish")


def test_parse_a_100_message_request(benchmark: Any) -> None:
    core = engine()
    client_id = handshake(core)
    batch = [
        {
            "channel": "/nobody/listens",
            "clientId": client_id,
            "data": {"text": "hello", "n": i},
            "id": str(i),
        }
        for i in range(100)
    ]
    body = json.dumps(batch).encode()
    outcome = benchmark(core.process, body)
    assert outcome.body.count(b'"successful":true') == 100
    report(benchmark, 100, "message")


def test_build_a_100_message_response(benchmark: Any) -> None:
    core = engine()
    client_id = handshake(core)
    subscribe(core, client_id, "/feed")
    connect = json.dumps(
        [{"channel": "/meta/connect", "clientId": client_id, "advice": {"timeout": 0}}]
    ).encode()

    def fill() -> None:
        core.drain(client_id)
        for i in range(100):
            core.publish("/feed", {"text": "hello", "n": i})

    outcome = benchmark.pedantic(core.process, args=(connect,), setup=fill, rounds=500)
    assert outcome.body.count(b'"channel":"/feed"') == 100
    report(benchmark, 100, "message")


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def test_idle_session_memory_in_the_core() -> None:
    """S4 in the core alone: resident memory per idle session with two subscriptions."""
    core = engine()
    count = 50_000
    # Build the request bodies first so that their memory is not counted.
    bodies = [
        json.dumps(
            [
                {
                    "channel": "/meta/subscribe",
                    "clientId": "{}",
                    "subscription": [f"/room/{i % 1000}", f"/user/{i}"],
                }
            ]
        )
        for i in range(count)
    ]
    handshake_body = b'[{"channel":"/meta/handshake"}]'
    before = rss_bytes()
    for body in bodies:
        reply = core.process(handshake_body).body
        client_id = reply[reply.index(b'"clientId":"') + 12 :][:40].decode()
        core.process(body.replace("{}", client_id).encode())
        del reply
    per_session = (rss_bytes() - before) / count
    print(f"\nidle session in the core: {per_session:.0f} bytes ({count} sessions)")
    assert core.stats()["sessions"] == count
