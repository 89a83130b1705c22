"""Server CPU per delivered message at a fixed load, for two or more builds side by side.

The sweeps of run.py find the highest rate with p99 <= 200 ms; on a shared machine their
latency, and so their figure, moves by a whole step between runs. The CPU a server spends per
delivery at a rate well below saturation moves far less, so comparing builds by it shows a
regression of a few percent. Each build is a Python interpreter with starlette-cometd
installed (a venv); runs alternate between the builds, each with a fresh server pinned to core
0 and the load generator to core 1.

    python benches/ab_cpu.py --build new=/work/venv-main/bin/python \\
        --build old=/work/venv-old/bin/python --rounds 4
    python benches/ab_cpu.py --build "on=/work/venv-main/bin/python --metrics /metrics" \\
        --build off=/work/venv-main/bin/python   # a build with options of its server's own

Prints, per transport and build, the server's CPU microseconds per delivery of each round
and their median. Needs `cargo build --release -p loadgen`. With `--redis`, each run's server
uses the Redis engine, on a fresh `redis-server` of its own (also on core 0); the figure is
still the server's CPU alone.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from runner.machine import describe_machine

ROOT = Path(__file__).resolve().parent.parent
LOADGEN = ROOT / "target" / "release" / "loadgen"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User and system CPU of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def accepts(python: str, option: str) -> bool:
    """Whether that build's CLI has an option (older builds lack the session limits)."""
    usage = subprocess.run(
        [python, "-m", "starlette_cometd", "--help"], capture_output=True, text=True
    ).stdout
    return option in usage


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    """An empty redis-server on a free port, pinned to the server's core, and its URL. A port
    free when picked may be taken before Redis binds it (the load generator's connections of
    the run before use ephemeral ports): then another is tried."""
    for _ in range(5):
        port = free_port()
        redis = subprocess.Popen(
            [
                *("taskset", "-c", "0", "redis-server", "--port", str(port)),
                *("--save", "", "--appendonly", "no", "--loglevel", "warning"),
            ],
            cwd="/tmp",
            stdout=subprocess.DEVNULL,
        )
        for _ in range(100):
            if redis.poll() is not None:
                break  # it exited: the port was taken
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    return redis, f"redis://127.0.0.1:{port}/0"
            time.sleep(0.05)
        redis.kill()
        redis.wait()
    raise RuntimeError("redis-server did not start")


def one_run(build: str, transport: str, rate: int, seconds: int, redis: bool) -> float:
    """CPU microseconds the server spent per delivery, over one run; ``build`` is a Python
    interpreter, then any options of the server's own."""
    python, *options = build.split()
    port = free_port()
    extra = ["--max-sessions-per-address", "0"]
    command = [python, "-m", "starlette_cometd", "--port", str(port), "--log-level", "warning"]
    if accepts(python, extra[0]):
        command += extra
    command += options
    redis_server = None
    if redis:
        redis_server, url = start_redis()
        command += ["--redis", url]
    server = subprocess.Popen(["taskset", "-c", "0", *command], cwd="/tmp")
    try:
        time.sleep(1.5)
        before = cpu_seconds(server.pid)
        load = subprocess.run(
            [
                *("taskset", "-c", "1", str(LOADGEN)),
                *("--url", f"http://127.0.0.1:{port}/cometd", "--transport", transport),
                *("--clients", "1000", "--rooms", "100", "--rate", str(rate)),
                *("--duration", str(seconds), "--warmup", "2"),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        used = cpu_seconds(server.pid) - before
        # One step in this mode; "best" is set only when it held the p99 bound.
        delivered = json.loads(load.stdout)["steps"][-1]["delivered"]
        return used / max(delivered, 1) * 1e6
    finally:
        server.terminate()
        server.wait()
        if redis_server is not None:
            redis_server.terminate()
            redis_server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--build", action="append", required=True, help="NAME=PYTHON [SERVER OPTIONS]"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8, help="measured seconds per run")
    parser.add_argument("--lp-rate", type=int, default=800, help="long-polling publishes/s")
    parser.add_argument("--ws-rate", type=int, default=4000, help="WebSocket publishes/s")
    parser.add_argument("--redis", action="store_true", help="the Redis engine, one process")
    parser.add_argument("--transports", default="long-polling,websocket")
    parser.add_argument(
        "--out",
        type=Path,
        help="also write the figures there as JSON (benches/metrics-overhead.json is shown in "
        "RESULTS.md: name the builds on and off)",
    )
    args = parser.parse_args()
    load_at_start = os.getloadavg()
    builds = dict(build.split("=", 1) for build in args.build)
    rates = {"long-polling": args.lp_rate, "websocket": args.ws_rate}
    loads = [(transport, rates[transport]) for transport in args.transports.split(",")]
    figures: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for transport, rate in loads:
            for name, python in builds.items():
                figure = one_run(python, transport, rate, args.seconds, args.redis)
                figures.setdefault((transport, name), []).append(figure)
    for (transport, name), runs in sorted(figures.items()):
        shown = " ".join(f"{run:.1f}" for run in runs)
        print(f"{transport:13} {name:10} median {statistics.median(runs):6.1f} us ({shown})")
    if args.out is not None:
        results: dict[str, Any] = {
            "command": " ".join(["python", "benches/ab_cpu.py", *sys.argv[1:]]),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": describe_machine(),
            "load_average_at_start": load_at_start,
            "load_average_at_end": os.getloadavg(),
            "rates": {transport: rate for transport, rate in loads},
            "builds": args.build,
            "cpu_us_per_delivery": {
                transport: {
                    name: {"median": statistics.median(runs), "runs": runs}
                    for (t, name), runs in sorted(figures.items())
                    if t == transport
                }
                for transport, _ in loads
            },
        }
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
