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

    python benches/ab_cpu.py --churn --build "info=/work/venv-main/bin/python --log-level info" \
        --build warning=/work/venv-main/bin/python   # sessions made and ended, not messages

Prints, per transport and build, the server's CPU microseconds per delivery of each round
and their median, and the p99 latency of each round's deliveries. With `--churn`, the load is
instead 20 long-polling clients each making a session and ending it (a handshake, then a
disconnect) as fast as the server answers, and the figure is CPU microseconds per session; the
server's standard error goes to a file then, as a deployment's log would. Needs `cargo build
--release -p loadgen`. With `--redis`, each run's server uses the Redis engine, on a fresh
`redis-server` of its own (also on core 0); the figure is still the server's CPU alone.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
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


def load_command(transport: str, rate: int, seconds: int, port: int) -> list[str]:
    """The load generator's command: ``rate`` publishes/s to 1,000 clients in 100 rooms, or
    for "churn" sessions made and ended as fast as the server goes."""
    url = f"http://127.0.0.1:{port}/cometd"
    timing = ["--duration", str(seconds), "--warmup", "2"]
    if transport == "churn":
        # Every session counted, from the first: the server's CPU is read over the whole run.
        timing[-1] = "0"
        load = ["--transport", "long-polling", "--rps", "--churn", "--clients", "20"]
    else:
        load = ["--transport", transport, "--clients", "1000", "--rooms", "100"]
        load += ["--rate", str(rate)]
    return ["taskset", "-c", "1", str(LOADGEN), "--url", url, *load, *timing]


def one_run(
    build: str, transport: str, rate: int, seconds: int, redis: bool
) -> tuple[float, float | None]:
    """CPU microseconds the server spent per delivery (per session for "churn"), over one run,
    and the p99 latency of those deliveries in ms (``None`` for "churn"); ``build`` is a Python
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
    # Churn's log lines go to a file, as a deployment's would (its cost is what is measured).
    with tempfile.TemporaryFile() as log:
        stderr = log if transport == "churn" else None
        server = subprocess.Popen(["taskset", "-c", "0", *command], cwd="/tmp", stderr=stderr)
        try:
            time.sleep(1.5)
            before = cpu_seconds(server.pid)
            load = subprocess.run(
                load_command(transport, rate, seconds, port),
                capture_output=True,
                text=True,
                check=True,
            )
            used = cpu_seconds(server.pid) - before
        finally:
            server.terminate()
            server.wait()
            if redis_server is not None:
                redis_server.terminate()
                redis_server.wait()
    report = json.loads(load.stdout)
    if transport == "churn":
        if report["errors"]:
            raise RuntimeError(f"{report['errors']} sessions failed")
        return used / max(int(report["replies"]), 1) * 1e6, None
    # One step in this mode; "best" is set only when it held the p99 bound.
    step = report["steps"][-1]
    return used / max(int(step["delivered"]), 1) * 1e6, float(step["latency"]["p99_ms"])


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
        "--churn", action="store_true", help="sessions made and ended instead of messages"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="also write the figures there as JSON (RESULTS.md shows "
        "benches/metrics-overhead.json, builds named on and off, and benches/log-cost.json, "
        "--churn with builds named info and warning)",
    )
    args = parser.parse_args()
    load_at_start = os.getloadavg()
    builds = dict(build.split("=", 1) for build in args.build)
    rates = {"long-polling": args.lp_rate, "websocket": args.ws_rate}
    loads = [(transport, rates[transport]) for transport in args.transports.split(",")]
    if args.churn:
        loads = [("churn", 0)]
    unit = "session" if args.churn else "delivery"
    figures: dict[tuple[str, str], list[float]] = {}
    p99s: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for transport, rate in loads:
            for name, python in builds.items():
                figure, p99 = one_run(python, transport, rate, args.seconds, args.redis)
                figures.setdefault((transport, name), []).append(figure)
                if p99 is not None:
                    p99s.setdefault((transport, name), []).append(p99)
    for (transport, name), runs in sorted(figures.items()):
        shown = " ".join(f"{run:.1f}" for run in runs)
        print(f"{transport:13} {name:10} median {statistics.median(runs):6.1f} us ({shown})")
        if (transport, name) in p99s:
            latencies = p99s[transport, name]
            shown = " ".join(f"{p99:.1f}" for p99 in latencies)
            print(f"{'':24} p99 median {statistics.median(latencies):6.1f} ms ({shown})")
    if args.out is not None:
        results: dict[str, Any] = {
            "command": " ".join(["python", "benches/ab_cpu.py", *sys.argv[1:]]),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": describe_machine(),
            "load_average_at_start": load_at_start,
            "load_average_at_end": os.getloadavg(),
            "rates": {transport: rate for transport, rate in loads},
            "builds": args.build,
            f"cpu_us_per_{unit}": {
                transport: {
                    name: {"median": statistics.median(runs), "runs": runs}
                    for (t, name), runs in sorted(figures.items())
                    if t == transport
                }
                for transport, _ in loads
            },
            "p99_ms": {
                transport: {
                    name: {"median": statistics.median(runs), "runs": runs}
                    for (t, name), runs in sorted(p99s.items())
                    if t == transport
                }
                for transport, _ in loads
                if transport != "churn"
            },
        }
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
