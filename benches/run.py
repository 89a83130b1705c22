"""Runs the benchmarks (issue 5): S1-S4 end to end against starlette-cometd (on uvicorn and on
Granian), the fixed-bytes ceilings and the peers (axum_cometd, Faye, CometD Java), then the S5
micro benchmarks, then S6 (issue 11: the S1 and S2 loads on the Redis engine, one process and
two, beside Faye with faye-redis), then S7 (issue 12: S1's load with a history on every room,
beside the same server without one), and writes benches/results.json.

    python benches/run.py --quick      # every scenario, small and once: a few minutes
    python benches/run.py              # the full scenarios, each figure a median of 3 runs

Each server runs pinned to core 0 and the load generator to core 1 (taskset), a fresh server
process per run. A peer whose runtime (node, java) is missing is recorded as skipped.
Options narrow a run: --servers starlette-cometd,faye --scenarios S1,S3 --runs 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import write_report
from runner.machine import describe_machine
from runner.micro import run_micro
from runner.procs import BuildFailed, build_tools, run_server
from runner.scenarios import (
    HISTORY_RULE,
    S6_SERVERS,
    S7_SERVERS,
    SERVERS,
    Server,
    full_settings,
    quick_settings,
)

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("S1", "S2", "S3", "S4", "S5", "S6", "S7")


def median(values: list[float]) -> float | None:
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def sweep_case(server: str, transport: str, s: dict[str, Any], runs: int) -> dict[str, Any]:
    """S1/S2: the highest rate that held, per run; the ceiling gets its closed-loop rate."""
    spec = SERVERS[server]
    results = [_sweep_run(spec, transport, s) for _ in range(runs)]
    return _sweep_summary(spec, results, s)


def interleaved_sweeps(
    names: list[str], transport: str, s: dict[str, Any], runs: int
) -> dict[str, dict[str, Any]]:
    """Sweeps of several servers taking turns run by run (S7), so that other work on a shared
    machine weighs on each alike: their ratio is the figure."""
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for _ in range(runs):
        for name in names:
            results[name].append(_sweep_run(SERVERS[name], transport, s))
    return {name: _sweep_summary(SERVERS[name], found, s) for name, found in results.items()}


def _sweep_run(spec: Server, transport: str, s: dict[str, Any]) -> dict[str, Any]:
    if spec.ceiling:
        args = ["--rps", "--clients", str(s["rps_clients"])]
    else:
        args = ["--sweep", "--clients", str(s["clients"]), "--rooms", str(s["rooms"])]
        args += ["--rate", str(s["start_rate"]), "--sweep-factor", str(s["factor"])]
        args += ["--sweep-refine", str(s["refine"]), "--drain", str(s["drain"])]
    args += ["--duration", str(s["duration"]), "--warmup", str(s["warmup"])]
    return run_server(spec, transport, args, timeout=20, max_interval=60)


def _sweep_summary(
    spec: Server, results: list[dict[str, Any]], s: dict[str, Any]
) -> dict[str, Any]:
    ok = [r for r in results if "error" not in r]
    if spec.ceiling:
        summary = {"requests_per_s": median([r["requests_per_s"] for r in ok])}
    else:
        best = [r.get("best") or {} for r in ok]
        summary = {
            "delivered_per_s": median([b.get("delivered_per_s", 0.0) for b in best]),
            "publishes_per_s": median([b.get("publishes_per_s", 0.0) for b in best]),
            "p99_ms": median([b["latency"]["p99_ms"] for b in best if b]),
            "loadgen_cpu_max": max(
                (st["loadgen_cpu"] for r in ok for st in r.get("steps", [])), default=None
            ),
        }
        if spec.redis:
            summary.update(_redis_costs(ok, s))
    return {"median": summary, "runs": results}


def _redis_costs(ok: list[dict[str, Any]], s: dict[str, Any]) -> dict[str, Any]:
    """S6: Redis commands per publish and Redis CPU per million deliveries, over each whole
    sweep (set-up and overloaded steps included; warm-ups estimated at each step's measured
    rate, since the load generator scores only the measured stretch)."""
    per_publish, cpu_per_million, per_command = [], [], []
    stretch = (s["duration"] + s["warmup"]) / s["duration"]
    for r in ok:
        published = sum(st["published"] for st in r.get("steps", [])) * stretch
        delivered = sum(st["delivered"] for st in r.get("steps", [])) * stretch
        usage = r.get("redis")
        if not usage or not published or not delivered:
            continue
        calls = usage["calls"]
        per_publish.append(sum(calls.values()) / published)
        cpu_per_million.append(usage["cpu_seconds"] / delivered * 1e6)
        per_command.append({name: n / published for name, n in calls.items()})
    commands = sorted({name for run in per_command for name in run})
    return {
        "redis_commands_per_publish": median(per_publish),
        "redis_cpu_s_per_million_deliveries": median(cpu_per_million),
        "redis_commands_per_publish_by_command": {
            name: median([run.get(name, 0.0) for run in per_command]) for name in commands
        },
    }


def burst_case(server: str, transport: str, s: dict[str, Any], runs: int) -> dict[str, Any]:
    spec = SERVERS[server]
    args = ["--burst", "--clients", str(s["burst_clients"])]
    args += ["--burst-messages", str(s["burst_messages"]), "--burst-timeout", "120"]
    results = [run_server(spec, transport, args, timeout=20, max_interval=120) for _ in range(runs)]
    ok = [r for r in results if "error" not in r]
    summary = {
        "seconds_to_last_copy": median([r["seconds_to_last_copy"] for r in ok]),
        "lost": median([r["lost"] for r in ok]),
        "all_delivered": all(r["all_delivered"] for r in ok) if ok else None,
        "p99_ms": median([r["latency"]["p99_ms"] for r in ok]),
        "loadgen_cpu_max": max((r["loadgen_cpu"] for r in ok), default=None),
    }
    return {"median": summary, "runs": results}


def idle_case(server: str, transport: str, sessions: int, hold: bool, runs: int) -> dict[str, Any]:
    spec = SERVERS[server]
    args = ["--idle", "--clients", str(sessions), "--rooms", "100", "--hold", "300"]
    if not hold:
        args.append("--no-hold")
    # Sessions must outlive their setup when nothing keeps them alive.
    results = [
        run_server(spec, transport, args, timeout=20, max_interval=900, measure_rss=True)
        for _ in range(runs)
    ]
    ok = [r for r in results if "error" not in r]
    summary = {
        "bytes_per_session": median([r["bytes_per_session"] for r in ok]),
        "sessions_ok": median([r["setup"]["ok"] for r in ok]),
        "rss_before_kib": median([r["rss_before_kib"] for r in ok]),
        "rss_after_kib": median([r["rss_after_kib"] for r in ok]),
    }
    return {"median": summary, "runs": results}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small scenarios, one run each")
    parser.add_argument("--runs", type=int, help="runs per figure (default 1 quick, 3 full)")
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated")
    parser.add_argument("--out", type=Path, default=ROOT / "benches" / "results.json")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the other scenarios already in --out and replace only those run now",
    )
    args = parser.parse_args()
    s = quick_settings() if args.quick else full_settings()
    runs = args.runs or (1 if args.quick else 3)
    wanted = [name for name in args.servers.split(",") if name]
    unknown = [n for n in wanted if n not in SERVERS]
    if unknown:
        parser.error(f"unknown servers {unknown}; known: {list(SERVERS)}")
    scenarios = [x.strip().upper() for x in args.scenarios.split(",") if x.strip()]

    try:
        build_tools(wanted)
    except BuildFailed as exc:
        print(f"stopping: {exc}", file=sys.stderr)
        return 1
    servers = {n: SERVERS[n] for n in wanted}
    skipped = {n: spec.missing() for n, spec in servers.items() if spec.missing()}
    servers = {n: spec for n, spec in servers.items() if n not in skipped}
    for name, why in skipped.items():
        print(f"skipping {name}: {why}", file=sys.stderr)

    out: dict[str, Any] = {
        "machine": describe_machine(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(["python", "benches/run.py", *sys.argv[1:]]),
        "mode": "quick" if args.quick else "full",
        "runs_per_figure": runs,
        "settings": s,
        "pinning": {"server": "taskset -c 0", "loadgen": "taskset -c 1"},
        "skipped": skipped,
        "scenarios": {},
    }
    # Each scenario names the CPU it ran on: merged figures may come from other machines.
    cpu = out["machine"]["cpu"]
    if args.merge and args.out.exists():
        # Each scenario keeps the date and command it was measured with.
        previous = json.loads(args.out.read_text())
        out["scenarios"] = previous.get("scenarios", {})
        for name in scenarios:
            out["scenarios"].pop(name, None)
        # Notes written beside the figures, and when S4 was measured, stay with them.
        if previous.get("notes"):
            out["notes"] = previous["notes"]
        if "S4" not in scenarios and "s4_measured" in previous:
            out["s4_measured"] = previous["s4_measured"]

    def save() -> None:
        args.out.write_text(json.dumps(out, indent=1) + "\n")

    for name, transport in (("S1", "long-polling"), ("S2", "websocket")):
        if name not in scenarios:
            continue
        table = out["scenarios"].setdefault(name, {"transport": transport, "servers": {}})
        table.update(date=out["date"], command=out["command"], runs=runs, cpu=cpu)
        table.update(clients=s["clients"], rooms=s["rooms"])
        for server, spec in servers.items():
            if transport in spec.transports and not spec.apart:
                print(f"{name} {server} ...", file=sys.stderr, flush=True)
                table["servers"][server] = sweep_case(server, transport, s, runs)
                save()
    if "S3" in scenarios:
        table = out["scenarios"].setdefault("S3", {"subscribers": s["burst_clients"]})
        table.update(date=out["date"], command=out["command"], runs=runs, cpu=cpu)
        table["messages"] = s["burst_messages"]
        for transport in ("long-polling", "websocket"):
            for server, spec in servers.items():
                if transport in spec.transports and not spec.ceiling and not spec.apart:
                    print(f"S3 {transport} {server} ...", file=sys.stderr, flush=True)
                    table.setdefault(transport, {})[server] = burst_case(server, transport, s, runs)
                    save()
    if "S4" in scenarios:
        table = out["scenarios"].setdefault("S4", {})
        out["s4_measured"] = {
            "date": out["date"],
            "command": out["command"],
            "runs": runs,
            "cpu": cpu,
        }
        for sessions, transport, hold in s["idle_cases"]:
            key = f"{sessions} {transport}" + ("" if hold else " (no held connect)")
            for server, spec in servers.items():
                if transport in spec.transports and not spec.ceiling and not spec.apart:
                    print(f"S4 {key} {server} ...", file=sys.stderr, flush=True)
                    table.setdefault(key, {})[server] = idle_case(
                        server, transport, sessions, hold, runs
                    )
                    save()
    if "S5" in scenarios:
        print("S5 micro benchmarks ...", file=sys.stderr, flush=True)
        out["scenarios"]["S5"] = {"date": out["date"], "cpu": cpu, **run_micro()}
        save()
    if "S6" in scenarios:
        table = out["scenarios"].setdefault("S6", {})
        table.update(date=out["date"], command=out["command"], runs=runs, cpu=cpu)
        table.update(clients=s["clients"], rooms=s["rooms"])
        for transport in ("long-polling", "websocket"):
            for server, spec in servers.items():
                if server in S6_SERVERS and transport in spec.transports:
                    print(f"S6 {transport} {server} ...", file=sys.stderr, flush=True)
                    cases = table.setdefault(transport, {})
                    cases[server] = sweep_case(server, transport, s, runs)
                    save()
    if "S7" in scenarios:
        # Only S1's transport: the history is kept the same whatever carries the messages.
        table = out["scenarios"].setdefault("S7", {})
        table.update(date=out["date"], command=out["command"], runs=runs, cpu=cpu)
        table.update(clients=s["clients"], rooms=s["rooms"], history=HISTORY_RULE)
        names = [server for server in S7_SERVERS if server in servers]
        print(f"S7 long-polling {', '.join(names)} ...", file=sys.stderr, flush=True)
        table["long-polling"] = interleaved_sweeps(names, "long-polling", s, runs)
        save()
    out["load_average_at_end"] = os.getloadavg()
    save()
    print(f"wrote {args.out}", file=sys.stderr)
    if args.out.parent == ROOT / "benches":
        write_report(args.out)
        print("wrote benches/RESULTS.md (and latency.png with matplotlib)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
