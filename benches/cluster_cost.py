"""What a delivery costs on the Redis engine (issue 11), at a fixed load well below saturation:
server CPU (every worker process) and Redis CPU per million deliveries, and Redis commands per
publish and per delivery, for 1, 2 and 4 workers sharing one Redis, beside the in-memory engine
on one process. Flat server CPU per delivery as workers are added is what linear scaling needs
(each worker reads every message of the log once, and delivers only to its own clients).

Then what an idle held connect costs Redis: 1,000 sessions each holding a connect (or an open
WebSocket) for a while, no publishes, and the Redis commands counted meanwhile, against the same
stretch with no session at all.

    python benches/cluster_cost.py                 # both transports, 1, 2 and 4 workers
    python benches/cluster_cost.py --transports long-polling --workers 1,2 --seconds 10

Each figure comes from two runs, one twice as long as the other: their difference is the
steady state, without set-up and warm-up. The server and its Redis share core 0, the load
generator has core 1 (so 2 and 4 workers share one core: the figures are CPU per delivery, not
throughput). Writes benches/cluster_cost.json and prints a table. Needs `cargo build --release
-p loadgen` and redis-server.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from runner.procs import (
    LOADGEN,
    LOADGEN_CORE,
    SERVER_CORE,
    RedisServer,
    _cpu_seconds,
    _free_port,
    _redis_usage,
    _stop,
    _wait_listening,
)

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = 1000
ROOMS = 100


def _server(port: int, redis: RedisServer | None, workers: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "starlette_cometd", "--port", str(port)]
    command += ["--log-level", "warning", "--max-sessions-per-address", "0"]
    if redis is not None:
        command += ["--redis", redis.url]
    if workers > 1:
        command += ["--workers", str(workers)]
    return subprocess.Popen(
        ["taskset", "-c", SERVER_CORE, *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )


def _loadgen(port: int, transport: str, args: list[str]) -> list[str]:
    command = ["taskset", "-c", LOADGEN_CORE, str(LOADGEN)]
    command += ["--url", f"http://127.0.0.1:{port}/cometd", "--transport", transport, "--quiet"]
    return [*command, "--clients", str(CLIENTS), "--rooms", str(ROOMS), *args]


def _run(transport: str, workers: int, on_redis: bool, rate: int, seconds: int) -> dict[str, Any]:
    """One fixed-rate run on a fresh server (and Redis): what the server and Redis spent over
    the whole run, set-up included, and what the load generator measured."""
    redis = RedisServer() if on_redis else None
    port = _free_port()
    server = _server(port, redis, workers)
    try:
        _wait_listening(port, server)
        time.sleep(1 + workers)  # every worker up and following the logs
        before = redis.counters() if redis is not None else {}
        cpu, began = _cpu_seconds(server.pid), time.monotonic()
        load = _loadgen(port, transport, ["--rate", str(rate), "--duration", str(seconds)])
        done = subprocess.run([*load, "--warmup", "2"], capture_output=True, text=True, check=True)
        step = json.loads(done.stdout)["steps"][-1]
        run = {
            "server_cpu": _cpu_seconds(server.pid) - cpu,
            "delivered": step["delivered"],
            "published": step["published"],
            "delivered_per_s": round(step["delivered"] / seconds),
            "p99_ms": step["latency"]["p99_ms"],
            "lost": step.get("lost", 0),
        }
        if redis is not None:
            usage = _redis_usage(before, redis.counters(), time.monotonic() - began)
            run.update(redis_cpu=usage["cpu_seconds"], redis_calls=usage["calls"])
        return run
    finally:
        _stop(server)
        if redis is not None:
            redis.stop()


def under_load(
    transport: str, workers: int, on_redis: bool, rate: int, seconds: int
) -> dict[str, Any]:
    """CPU and Redis per delivery in the steady state: the difference between a run of
    ``seconds`` and one of twice as long, so that set-up (handshakes, subscriptions, first
    connects) and warm-up, the same in both, cancel out."""
    short = _run(transport, workers, on_redis, rate, seconds)
    long = _run(transport, workers, on_redis, rate, 2 * seconds)
    delivered = max(long["delivered"] - short["delivered"], 1)
    published = max(long["published"] - short["published"], 1)
    figures: dict[str, Any] = {
        "delivered_per_s": long["delivered_per_s"],
        "p99_ms": long["p99_ms"],
        "lost": long["lost"],
        "server_cpu_s_per_million": round(
            (long["server_cpu"] - short["server_cpu"]) / delivered * 1e6, 1
        ),
    }
    if on_redis:
        calls = {
            name: long["redis_calls"].get(name, 0) - short["redis_calls"].get(name, 0)
            for name in long["redis_calls"]
        }
        figures.update(
            redis_cpu_s_per_million=round(
                (long["redis_cpu"] - short["redis_cpu"]) / delivered * 1e6, 1
            ),
            redis_commands_per_publish=round(sum(calls.values()) / published, 2),
            redis_commands_per_delivery=round(sum(calls.values()) / delivered, 3),
            redis_commands_per_publish_by_command={
                name: round(n / published, 2) for name, n in calls.items() if n > 0
            },
        )
    return figures


def idle(transport: str, hold_seconds: int) -> dict[str, Any]:
    """Redis commands per second with 1,000 held connects (or sockets) and nothing published,
    and with no session at all."""
    redis = RedisServer()
    port = _free_port()
    server = _server(port, redis, 1)
    try:
        _wait_listening(port, server)
        time.sleep(2)
        empty_before = redis.counters()
        time.sleep(hold_seconds)
        empty = _redis_usage(empty_before, redis.counters(), hold_seconds)
        args = ["--idle", "--hold", str(hold_seconds * 10)]
        gen = subprocess.Popen(
            _loadgen(port, transport, args),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert gen.stdout is not None and gen.stdin is not None
            setup = json.loads(gen.stdout.readline())
            time.sleep(2)  # the first connects answered, the next ones held
            held_before = redis.counters()
            time.sleep(hold_seconds)
            held = _redis_usage(held_before, redis.counters(), hold_seconds)
            gen.stdin.close()
            gen.wait(60)
        finally:
            if gen.poll() is None:
                gen.kill()
                gen.wait(10)

        def per_second(usage: dict[str, Any]) -> float:
            calls: dict[str, int] = usage["calls"]
            return round(sum(calls.values()) / hold_seconds, 2)

        return {
            "sessions": setup["setup"]["ok"],
            "seconds": hold_seconds,
            "redis_commands_per_s_no_session": per_second(empty),
            "redis_commands_per_s_held": per_second(held),
            "redis_commands_held": held["calls"],
        }
    finally:
        _stop(server)
        redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transports", default="long-polling,websocket")
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--seconds", type=int, default=10, help="measured seconds per run")
    parser.add_argument("--lp-rate", type=int, default=100, help="long-polling publishes/s")
    parser.add_argument("--ws-rate", type=int, default=500, help="WebSocket publishes/s")
    parser.add_argument("--idle-seconds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "benches" / "cluster_cost.json")
    args = parser.parse_args()
    rates = {"long-polling": args.lp_rate, "websocket": args.ws_rate}
    out: dict[str, Any] = {"command": " ".join(sys.argv), "date": time.strftime("%FT%T%z")}
    out["load_average_at_start"] = os.getloadavg()
    for transport in args.transports.split(","):
        rate = rates[transport]
        runs: dict[str, Any] = {"publishes_per_s": rate}
        print(f"{transport} in-memory ...", file=sys.stderr, flush=True)
        runs["in-memory, 1 process"] = under_load(transport, 1, False, rate, args.seconds)
        for workers in (int(w) for w in args.workers.split(",")):
            print(f"{transport} redis, {workers} workers ...", file=sys.stderr, flush=True)
            runs[f"redis, {workers} workers"] = under_load(
                transport, workers, True, rate, args.seconds
            )
        print(f"{transport} idle ...", file=sys.stderr, flush=True)
        runs["idle"] = idle(transport, args.idle_seconds)
        out[transport] = runs
    out["load_average_at_end"] = os.getloadavg()
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    for transport in args.transports.split(","):
        runs = out[transport]
        print(f"\n{transport}, {runs['publishes_per_s']} publishes/s to {CLIENTS} clients")
        for name, run in runs.items():
            if name in ("publishes_per_s", "idle"):
                continue
            print(
                f"  {name:22} delivered/s {run['delivered_per_s']:>7} p99 {run['p99_ms']:>7} ms"
                f"  server CPU {run['server_cpu_s_per_million']:>6} s/M"
                f"  redis CPU {run.get('redis_cpu_s_per_million', '-'):>6} s/M"
                f"  commands/publish {run.get('redis_commands_per_publish', '-')}"
            )
        quiet = runs["idle"]
        held, none = quiet["redis_commands_per_s_held"], quiet["redis_commands_per_s_no_session"]
        print(f"  idle: {quiet['sessions']} held, Redis commands/s {held} (none held: {none})")


if __name__ == "__main__":
    main()
