"""The servers under test and the scenario sizes (quick and full)."""

from __future__ import annotations

import importlib.util
import resource
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PEERS = ROOT / "benches" / "peers"
AXUM = ROOT / "target" / "release" / "axum-cometd-peer"
COMETD_JAR = PEERS / "cometd-java" / "target" / "cometd-bench-server.jar"

LP, WS = "long-polling", "websocket"


@dataclass(frozen=True)
class Server:
    name: str
    # (port, connect timeout s, max interval s) -> argv
    command: Callable[[int, int, int], list[str]]
    transports: tuple[str, ...]
    dialect: str = "standard"
    # The fixed-bytes ceiling: measured by closed-loop request rate, not by deliveries.
    ceiling: bool = False
    # A program, a path, or "python:MODULE" (importable by this interpreter, which runs the
    # project's servers).
    needs: tuple[str, ...] = ()
    # S6 only: the runner starts a Redis server of its own for every run and appends
    # `--redis URL` to the command.
    redis: bool = False
    # S7 only (issue 12): the project keeping a history of every room, measured beside the
    # project without one.
    history: bool = False

    @property
    def apart(self) -> bool:
        """A variant measured only in its own scenario (S6, S7), not in S1-S4."""
        return self.redis or self.history

    def missing(self) -> str | None:
        for need in self.needs:
            if need.startswith("python:"):
                module = need.removeprefix("python:")
                if importlib.util.find_spec(module) is None:
                    return f"the Python package {module} is not installed (pip install '.[redis]')"
            elif "/" in need:
                if not Path(need).exists():
                    return f"{need} is missing"
            elif shutil.which(need) is None:
                return f"{need} is not installed"
        return None


def _faye(port: int, timeout: int, max_interval: int) -> list[str]:
    # Faye drops a session 2 x timeout after its last connect; with long-lived idle sessions
    # (S4) that must be at least the max interval the other servers get.
    timeout = max(timeout, max_interval // 2) if max_interval > 120 else timeout
    return [
        "node",
        str(PEERS / "faye" / "server.js"),
        "--port",
        str(port),
        "--timeout",
        str(timeout),
    ]


def _faye_redis(port: int, timeout: int, max_interval: int) -> list[str]:
    """Faye with faye-redis on two Node.js processes sharing one port (the cluster module);
    the runner appends --redis URL. S6 sessions never idle long, so no timeout stretch."""
    server = str(PEERS / "faye-redis" / "server.js")
    return ["node", server, "--port", str(port), "--timeout", str(timeout), "--workers", "2"]


def _starlette_cometd(port: int, timeout: int, max_interval: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "starlette_cometd",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--timeout",
        str(timeout),
        "--max-interval",
        str(max_interval),
        # Every session of the load generator comes from one address.
        "--max-sessions-per-address",
        "0",
    ]


# S7: the load generator's clients join /room/0 .. /room/N-1; each room keeps its last 1,000
# messages, the CLI's default size.
HISTORY_RULE = "/room/*:1000"


def _starlette_cometd_history(port: int, timeout: int, max_interval: int) -> list[str]:
    return [*_starlette_cometd(port, timeout, max_interval), "--history", HISTORY_RULE]


def _granian(app_dir: str) -> Callable[[int, int, int], list[str]]:
    """Granian with one worker and the settings that served fastest here (uvloop, HTTP/1,
    a single-threaded runtime). Its default backpressure (1,024 requests in progress per
    worker) would stall publishes behind 1,000 held connects, so it is raised."""

    def command(port: int, timeout: int, max_interval: int) -> list[str]:
        settings = [
            f"STARLETTE_COMETD_TIMEOUT={timeout}",
            f"STARLETTE_COMETD_MAX_INTERVAL={max_interval}",
        ]
        return [
            "env",
            *settings,
            sys.executable,
            "-m",
            "granian",
            "--interface",
            "asgi",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--loop",
            "uvloop",
            "--http",
            "1",
            "--runtime-mode",
            "st",
            "--backlog",
            "16384",
            "--backpressure",
            "16384",
            "--log-level",
            "warning",
            "--working-dir",
            str(PEERS / app_dir),
            "app:app",
        ]

    return command


SERVERS: dict[str, Server] = {
    "starlette-cometd": Server("starlette-cometd", _starlette_cometd, (LP, WS)),
    "starlette-cometd-granian": Server(
        "starlette-cometd-granian", _granian("granian"), (LP, WS), needs=("granian",)
    ),
    "ceiling": Server(
        "ceiling",
        lambda p, t, m: [sys.executable, str(PEERS / "ceiling" / "app.py"), "--port", str(p)],
        (LP, WS),
        ceiling=True,
    ),
    "ceiling-granian": Server(
        "ceiling-granian", _granian("ceiling"), (LP, WS), ceiling=True, needs=("granian",)
    ),
    "axum_cometd": Server(
        "axum_cometd",
        lambda p, t, m: [
            str(AXUM),
            "--port",
            str(p),
            "--timeout",
            str(t),
            "--max-interval",
            str(m),
        ],
        (LP,),
        dialect="axum",
        needs=(str(AXUM),),
    ),
    "faye": Server(
        "faye", _faye, (LP, WS), needs=("node", str(PEERS / "faye" / "node_modules" / "faye"))
    ),
    "cometd-java": Server(
        "cometd-java",
        lambda p, t, m: ["java", "-jar", str(COMETD_JAR), str(p), str(t), str(m)],
        (LP, WS),
        needs=("java", str(COMETD_JAR)),
    ),
    # S6, the Redis cluster (issue 11): each run gets a fresh Redis server of its own.
    "starlette-cometd-redis": Server(
        "starlette-cometd-redis",
        _starlette_cometd,
        (LP, WS),
        needs=("redis-server", "redis-cli", "python:redis"),
        redis=True,
    ),
    "starlette-cometd-redis-2w": Server(
        "starlette-cometd-redis-2w",
        lambda p, t, m: [*_starlette_cometd(p, t, m), "--workers", "2"],
        (LP, WS),
        needs=("redis-server", "redis-cli", "python:redis"),
        redis=True,
    ),
    "faye-redis": Server(
        "faye-redis",
        _faye_redis,
        (LP, WS),
        needs=(
            "redis-server",
            "redis-cli",
            "node",
            str(PEERS / "faye-redis" / "node_modules" / "faye-redis"),
        ),
        redis=True,
    ),
    "starlette-cometd-history": Server(
        "starlette-cometd-history", _starlette_cometd_history, (LP, WS), history=True
    ),
}

# S6 measures these under the S1 and S2 loads: the in-memory engine (the same run's baseline),
# one process on Redis, two processes sharing Redis, and Faye with faye-redis on two processes.
S6_SERVERS = (
    "starlette-cometd",
    "starlette-cometd-redis",
    "starlette-cometd-redis-2w",
    "faye-redis",
)


# S7 measures S1's load on these in one run: the ratio is the cost of keeping a history.
S7_SERVERS = ("starlette-cometd", "starlette-cometd-history")


def _idle_cases(sizes: tuple[int, int]) -> list[tuple[int, str, bool]]:
    """S4: held sessions (a held connect or an open socket each) where the open-file limit
    allows one socket per session on each side; beyond it, long-polling sessions without a
    held connect, set up over a pool of connections."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    cases = []
    for n in sizes:
        if hard == resource.RLIM_INFINITY or hard >= n + 2000:
            cases += [(n, LP, True), (n, WS, True)]
        else:
            cases.append((n, LP, False))
    return cases


def quick_settings() -> dict[str, Any]:
    return {
        "clients": 1000,
        "rooms": 100,
        "start_rate": 100,
        "factor": 2.0,
        "refine": 2,
        "duration": 3,
        "warmup": 1,
        "drain": 2,
        "rps_clients": 100,
        "burst_clients": 2000,
        "burst_messages": 100,
        "idle_cases": _idle_cases((2000, 5000)),
    }


def full_settings() -> dict[str, Any]:
    return {
        "clients": 1000,
        "rooms": 100,
        "start_rate": 100,
        "factor": 1.5,
        "refine": 2,
        "duration": 10,
        "warmup": 2,
        "drain": 3,
        "rps_clients": 200,
        "burst_clients": 10000,
        "burst_messages": 100,
        "idle_cases": _idle_cases((10000, 50000)),
    }
