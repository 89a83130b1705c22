"""Turns benches/results.json into benches/RESULTS.md, benches/latency.png (p99 latency
against delivered messages/s for every server in S1 and S2) and benches/latency-s6.png (the
same for S6, the Redis cluster), with the figures of benches/cluster_cost.json,
benches/replay.json and benches/replay-redis.json where they are. run.py and replay.py call it
at the end; it also runs alone: python benches/report.py [results.json]. Without matplotlib
the table is still written and the plot is skipped."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PROJECT = "starlette-cometd"


def _num(v: float | None, digits: int = 0) -> str:
    if v is None:
        return "n/a"
    return f"{v:,.{digits}f}"


def _ratio(v: float | None, base: float | None) -> str:
    if not v or not base:
        return "n/a"
    return f"{v / base:.2f}x"


def _machine(r: dict[str, Any]) -> str:
    m = r["machine"]
    return (
        f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, kernel {m['kernel']}; "
        f"server on core 0, load generator on core 1; Python {m['python']}, "
        f"Node.js {m['node']}, {m['java']}; commit {m['git_commit']}"
    )


def _sweep_table(name: str, sc: dict[str, Any]) -> list[str]:
    servers = sc["servers"]
    base = (servers.get(PROJECT) or {}).get("median", {}).get("delivered_per_s")
    lines = [
        f"### {name}: {sc['transport']}, {sc['clients']:,} clients in {sc['rooms']} rooms",
        "",
        *_when(sc),
        "| server | delivered msgs/s (p99 <= 200 ms, none lost) | vs project | p99 ms there "
        "| publishes/s | load generator CPU (max) |",
        "|---|---|---|---|---|---|",
    ]
    for server, case in servers.items():
        med = case["median"]
        if "requests_per_s" in med:
            rps = med["requests_per_s"]
            lines.append(
                f"| {server} (fixed bytes, requests/s) | {_num(rps)} | {_ratio(rps, base)} | | | |"
            )
            continue
        v = med["delivered_per_s"]
        lines.append(
            f"| {server} | {_num(v)} | {_ratio(v, base)} | {_num(med['p99_ms'], 1)} "
            f"| {_num(med['publishes_per_s'])} | {_num(med['loadgen_cpu_max'], 2)} |"
        )
    return [*lines, ""]


def _when(sc: dict[str, Any]) -> list[str]:
    """When and how a scenario was measured, where it differs from the file's latest run."""
    if "date" not in sc:
        return []
    # Figures merged before the runs named their machine say only when.
    on = f" on {sc['cpu']}" if "cpu" in sc else ""
    return [
        f"Measured {sc['date']}{on} with `{sc['command']}`, median of {sc['runs']} run(s).",
        "",
    ]


def _burst_tables(sc: dict[str, Any]) -> list[str]:
    lines = [
        f"### S3: {sc['subscribers']:,} subscribers of one channel, a burst of "
        f"{sc['messages']} messages",
        "",
        *_when(sc),
    ]
    for transport in ("long-polling", "websocket"):
        if transport not in sc:
            continue
        base = (sc[transport].get(PROJECT) or {}).get("median", {}).get("seconds_to_last_copy")
        lines += [
            f"{transport}:",
            "",
            "| server | seconds to the last copy | vs project | lost | p99 ms "
            "| load generator CPU |",
            "|---|---|---|---|---|---|",
        ]
        for server, case in sc[transport].items():
            med = case["median"]
            s = med["seconds_to_last_copy"]
            lines.append(
                f"| {server} | {_num(s, 2)} | {_ratio(s, base)} | {_num(med['lost'])} "
                f"| {_num(med['p99_ms'], 1)} | {_num(med.get('loadgen_cpu_max'), 2)} |"
            )
        lines.append("")
    return lines


def _idle_table(sc: dict[str, Any], when: dict[str, Any] | None) -> list[str]:
    lines = [
        "### S4: idle sessions, two subscriptions each",
        "",
        *_when(when or {}),
        "| sessions, transport | server | RSS growth per session | vs project | sessions set up |",
        "|---|---|---|---|---|",
    ]
    for case_name, servers in sc.items():
        base = (servers.get(PROJECT) or {}).get("median", {}).get("bytes_per_session")
        for server, case in servers.items():
            med = case["median"]
            b = med["bytes_per_session"]
            size = "n/a" if b is None else f"{b / 1024:,.1f} KiB"
            lines.append(
                f"| {case_name} | {server} | {size} | {_ratio(b, base)} "
                f"| {_num(med['sessions_ok'])} |"
            )
    return [*lines, ""]


S6_WHAT = {
    PROJECT: "in-memory engine, one process (the baseline)",
    "starlette-cometd-redis": "Redis engine, one process",
    "starlette-cometd-redis-2w": "Redis engine, two processes on one port (`--workers 2`)",
    "faye-redis": "Faye 1.4.3 + faye-redis 0.2.0, two Node.js processes on one port",
}


def _s6_tables(sc: dict[str, Any]) -> list[str]:
    """S6: the S1 and S2 loads on the Redis engine, beside faye-redis and the in-memory engine."""
    lines = [
        f"### S6: the Redis cluster, {sc['clients']:,} clients in {sc['rooms']} rooms",
        "",
        *_when(sc),
        "Every server-side process (workers, Node.js's primary, Redis) runs on core 0; "
        "Redis figures are over the whole sweep (set-up and overloaded steps included).",
        "",
    ]
    for transport in ("long-polling", "websocket"):
        servers = sc.get(transport)
        if not servers:
            continue
        base = (servers.get(PROJECT) or {}).get("median", {}).get("delivered_per_s")
        faye = (servers.get("faye-redis") or {}).get("median", {}).get("delivered_per_s")
        lines += [
            f"{transport}:",
            "",
            "| server | what | delivered msgs/s (p99 <= 200 ms, none lost) | vs in-memory "
            "| vs faye-redis | p99 ms there | publishes/s | Redis commands per publish "
            "| Redis CPU s per million deliveries | load generator CPU (max) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for server, case in servers.items():
            med = case["median"]
            v = med["delivered_per_s"]
            lines.append(
                f"| {server} | {S6_WHAT.get(server, '')} | {_num(v)} | {_ratio(v, base)} "
                f"| {_ratio(v, faye)} | {_num(med['p99_ms'], 1)} "
                f"| {_num(med['publishes_per_s'])} "
                f"| {_num(med.get('redis_commands_per_publish'), 1)} "
                f"| {_num(med.get('redis_cpu_s_per_million_deliveries'), 2)} "
                f"| {_num(med['loadgen_cpu_max'], 2)} |"
            )
        lines.append("")
        for server, case in servers.items():
            by_command = case["median"].get("redis_commands_per_publish_by_command")
            if by_command:
                top = sorted(by_command.items(), key=lambda kv: -(kv[1] or 0))
                shown = ", ".join(f"`{name}` {n:.2f}" for name, n in top if n and n >= 0.01)
                lines.append(f"- {server}, Redis commands per publish: {shown}")
        lines.append("")
        for server, case in servers.items():
            failures = _failures(case)
            if failures:
                lines.append(f"- {server}: {failures}")
        lines.append("")
    return lines


def _failures(case: dict[str, Any]) -> str:
    """What went wrong in the steps of a sweep that did not hold, summed over its runs."""
    totals = dict.fromkeys(("lost", "refused", "errors", "rehandshakes", "not_sent"), 0)
    failed_steps = 0
    for run in case["runs"]:
        if "error" in run:
            return f"the run failed: {run['error'][:200]}"
        for step in run.get("steps", []):
            failed_steps += not step["held"]
            for key in totals:
                totals[key] += step.get(key, 0)
    if not any(totals.values()):
        return ""
    shown = ", ".join(f"{key.replace('_', ' ')} {n:,}" for key, n in totals.items() if n)
    return f"over all steps of the sweep ({failed_steps} did not hold): {shown}"


def _delivered(sc: dict[str, Any], server: str) -> float | None:
    case = sc["servers"].get(server)
    return None if case is None else case["median"].get("delivered_per_s")


def _targets(r: dict[str, Any], replays: list[dict[str, Any]]) -> list[str]:
    """Issues 5, 11 and 12's targets, each checked against the figures (results.json, and
    benches/replay.json and replay-redis.json for the replay)."""
    scenarios = r["scenarios"]
    rows: list[tuple[str, str, bool]] = []
    for name in ("S1", "S2"):
        if name not in scenarios:
            continue
        sc = scenarios[name]
        project = _delivered(sc, PROJECT)
        for peer, factor in (("cometd-java", 1), ("faye", 3), ("axum_cometd", 3)):
            theirs = _delivered(sc, peer)
            if project is None or theirs is None:
                continue
            met = project >= factor * theirs
            rows.append((f"{name}: at least {factor}x {peer}", f"{project / theirs:.1f}x", met))
    if "S3" in scenarios:
        for transport in ("long-polling", "websocket"):
            case = scenarios["S3"].get(transport, {}).get(PROJECT)
            if case is not None:
                sec = case["median"]["seconds_to_last_copy"]
                met = sec is not None and sec < 2 and case["median"]["lost"] == 0
                rows.append((f"S3 {transport}: every copy in under 2 s", f"{_num(sec, 2)} s", met))
    for case_name, servers in scenarios.get("S4", {}).items():
        b = (servers.get(PROJECT) or {}).get("median", {}).get("bytes_per_session")
        if b is not None:
            label = f"S4 {case_name}: under 16 KiB per idle session"
            rows.append((label, f"{b / 1024:.1f} KiB", b < 16 * 1024))
    rust = scenarios.get("S5", {}).get("rust", {}).get("results", {})
    fan_out = rust.get("fan_out_to_10000_subscribers", {}).get("ns_per_delivery")
    if fan_out is not None:
        rows.append(("S5: under 50 ns per delivery", f"{fan_out:.1f} ns", fan_out < 50))
    rows += _s6_targets(scenarios.get("S6", {}))
    rows += _s7_targets(scenarios.get("S7", {}), replays)
    lines = ["### Targets (issues 5, 11 and 12)", "", "| target | project | met |"]
    lines.append("|---|---|---|")
    for label, value, ok in rows:
        lines.append(f"| {label} | {value} | {'yes' if ok else 'no'} |")
    return [*lines, ""]


def _s6_targets(sc: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """Issue 11: at least 10x Faye with faye-redis, and the Redis engine on one process at
    least half the in-memory figure."""
    rows: list[tuple[str, str, bool]] = []
    for transport in ("long-polling", "websocket"):
        table = {"servers": sc.get(transport, {})}
        faye, memory = _delivered(table, "faye-redis"), _delivered(table, PROJECT)
        for server, what in (
            ("starlette-cometd-redis-2w", "two processes"),
            ("starlette-cometd-redis", "one process"),
        ):
            ours = _delivered(table, server)
            if ours is not None and faye:
                label = f"S6 {transport}: Redis engine, {what}, at least 10x faye-redis"
                rows.append((label, f"{ours / faye:.1f}x", ours >= 10 * faye))
        ours = _delivered(table, "starlette-cometd-redis")
        if ours is not None and memory:
            label = f"S6 {transport}: Redis engine, one process, at least 0.5x in-memory"
            rows.append((label, f"{ours / memory:.2f}x", ours >= 0.5 * memory))
    return rows


def _s7_targets(sc: dict[str, Any], replays: list[dict[str, Any]]) -> list[tuple[str, str, bool]]:
    """Issue 12: a replay of 10,000 retained messages in under 100 ms in memory and 300 ms on
    Redis (the median of fresh subscribers), and S1's load with a history on every room at
    least 0.8x without one."""
    rows: list[tuple[str, str, bool]] = []
    for replay in replays:
        count = replay["replay"]["messages"]
        on_redis = replay["replay"].get("engine") == "redis"
        where, limit = ("on Redis", 300) if on_redis else ("in memory", 100)
        for transport in ("websocket", "long-polling"):
            case = replay["replay"][transport]
            label = f"S7 {transport}: replay of {count:,} {where} under {limit} ms"
            shown = f"{case['median_ms']:.1f} ms (max {case['max_ms']:.1f})"
            rows.append((label, shown, case["median_ms"] < limit))
    table = {"servers": sc.get("long-polling", {})}
    ours, without = _delivered(table, "starlette-cometd-history"), _delivered(table, PROJECT)
    if ours is not None and without:
        label = "S7 long-polling: S1 with a history on every room at least 0.8x S1"
        rows.append((label, f"{ours / without:.2f}x", ours >= 0.8 * without))
    return rows


def _history_section(sc: dict[str, Any] | None, replays: list[dict[str, Any]]) -> list[str]:
    """S7 (issue 12): the replay of a channel's history, and what keeping one costs."""
    lines = ["### S7: history and replay (issue 12)", ""]
    for replay in replays:
        lines += _replay_lines(replay)
    if sc and sc.get("long-polling"):
        lines += _history_sweep(sc)
    return lines


def _replay_lines(r: dict[str, Any]) -> list[str]:
    replay, m = r["replay"], r["machine"]
    rule = f'`--history "{replay["history"]}"`'
    load = f"{_load(m['load_average_at_start'])} at start, {_load(r['load_average_at_end'])} at end"
    server = f"The CLI with {rule} on core 0"
    if replay.get("engine") == "redis":
        server = (
            f"On the Redis engine: a fresh redis-server and two CLI processes with {rule} and "
            "`--redis` on core 0, the history filled through one and replayed through the "
            "other"
        )
    lines = [
        f"Replay measured {r['date']} with `{r['command']}` ({m['cpu']}, {m['cores']} cores, "
        f"commit {m['git_commit']}; load average {load}). {server}, the "
        f"clients (Python: websockets, httpx) on core 1. {replay['messages']:,} messages of "
        f"{replay['data_bytes']:.0f} bytes of object data were published first; then "
        f"{replay['subscribers']} fresh subscribers per transport, in turns, each subscribing "
        "with `ext.replay` -2 (everything kept). WebSocket: from sending the subscribe to "
        "receiving the frame that completes the last copy (a connect held meanwhile). "
        "Long-polling: from sending the subscribe's POST, through its reply, to the end of the "
        "reply of the connect sent next, which carries the copies. Both include the Python "
        "client's own reading of the replies.",
        "",
        "| transport | median ms | max ms | each subscriber, ms | bytes received |",
        "|---|---|---|---|---|",
    ]
    for transport in ("websocket", "long-polling"):
        case = replay[transport]
        runs = ", ".join(f"{v:.1f}" for v in case["runs_ms"])
        lines.append(
            f"| {transport} | {case['median_ms']:.1f} | {case['max_ms']:.1f} | {runs} "
            f"| {case['bytes_received']:,} |"
        )
    lp = replay["long-polling"]
    lines += [
        "",
        f"Long-polling: the subscribe's own reply came after {lp['subscribe_reply_median_ms']} "
        f"ms (median); connect replies that carried the copies: {lp['connects']}.",
        "",
    ]
    memory = r.get("memory")
    if memory:
        lines += [*_memory_line(memory), ""]
    return lines


def _memory_line(memory: dict[str, Any]) -> list[str]:
    rule = f'`--history "{memory["history"]}"`'
    return [
        f"Memory: {memory['bytes_per_message']:,} bytes of server RSS per retained message "
        f"({memory['messages']:,} messages of {memory['data_bytes']:.0f} bytes of object data "
        f"on one channel, {rule}; VmRSS {memory['rss_before_kib']:,} KiB before, "
        f"{memory['rss_after_kib']:,} KiB after, on a fresh server warmed up first by "
        f"{memory['warm_up_publishes']:,} publishes on a channel without history)."
    ]


def _load(average: list[float] | None) -> str:
    """A load average (1, 5, 15 min), rounded."""
    return "n/a" if average is None else ", ".join(f"{v:.2f}" for v in average)


def _history_sweep(sc: dict[str, Any]) -> list[str]:
    servers = sc["long-polling"]
    base = (servers.get(PROJECT) or {}).get("median", {}).get("delivered_per_s")
    lines = [
        f"S1's load (long-polling, {sc['clients']:,} clients in {sc['rooms']} rooms) on the CLI "
        f'keeping a history of every room (`--history "{sc["history"]}"`), beside the CLI '
        "without one; the servers take turns run by run.",
        "",
        *_when(sc),
        "| server | delivered msgs/s (p99 <= 200 ms, none lost) | vs without history "
        "| p99 ms there | publishes/s | load generator CPU (max) |",
        "|---|---|---|---|---|---|",
    ]
    for server, case in servers.items():
        med = case["median"]
        v = med["delivered_per_s"]
        lines.append(
            f"| {server} | {_num(v)} | {_ratio(v, base)} | {_num(med['p99_ms'], 1)} "
            f"| {_num(med['publishes_per_s'])} | {_num(med['loadgen_cpu_max'], 2)} |"
        )
    lines.append("")
    failures = {server: _failures(case) for server, case in servers.items()}
    notes = [f"- {server}: {why}" for server, why in failures.items() if why]
    return [*lines, *notes, ""] if notes else lines


def _micro_table(sc: dict[str, Any]) -> list[str]:
    """S5: nanoseconds per unit of work, in pure Rust and through the Python API."""
    rust = sc.get("rust", {}).get("results", {})
    python = sc.get("python", {}).get("results", {})
    rows = [
        (
            "fan-out to 10,000 subscribers",
            "fan_out_to_10000_subscribers",
            "test_fanout_to_10000_subscribers",
            "delivery",
        ),
        (
            "publish with 10,000 wildcard patterns",
            "wildcard_matching_with_10000_patterns",
            "test_wildcard_matching_with_10000_patterns",
            "publish",
        ),
        (
            "parse a 100-message request",
            "parse_a_100_message_request",
            "test_parse_a_100_message_request",
            "message",
        ),
        (
            "build a 100-message response",
            "build_a_100_message_response",
            "test_build_a_100_message_response",
            "message",
        ),
    ]
    lines = [
        "### S5: micro benchmarks of the core (median)",
        "",
        "`cargo bench --bench core` (divan, pure Rust) and `python -m pytest benches/micro` "
        "(pytest-benchmark, through the Python API), pinned to core 0.",
        "",
        "| benchmark | unit | Rust ns/unit | through Python ns/unit |",
        "|---|---|---|---|",
    ]
    for label, rust_name, py_name, unit in rows:
        key = f"ns_per_{unit}"
        r_ns = rust.get(rust_name, {}).get(key)
        p_ns = python.get(py_name, {}).get(key)
        lines.append(f"| {label} | {unit} | {_num(r_ns, 1)} | {_num(p_ns, 1)} |")
    for side in ("rust", "python"):
        if "error" in sc.get(side, {}):
            lines.append(f"\n{side} benchmarks failed: `{sc[side]['error'][-300:]}`")
    return [*lines, ""]


def _panels(r: dict[str, Any], names: tuple[str, ...]) -> list[tuple[str, dict[str, Any]]]:
    """(title, servers) for each sweep plotted: S1 and S2, or S6 per transport."""
    panels = []
    for name in names:
        sc = r["scenarios"].get(name)
        if sc is None:
            continue
        size = f"{sc['clients']:,} clients, {sc['rooms']} rooms"
        if "servers" in sc:
            panels.append((f"{name}: {sc['transport']}, {size}", sc["servers"]))
        for transport in ("long-polling", "websocket"):
            if sc.get(transport):
                panels.append((f"{name}: {transport} (Redis cluster), {size}", sc[transport]))
    return panels


def _plot(r: dict[str, Any], names: tuple[str, ...], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = _panels(r, names)
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.8), squeeze=False)
    for ax, (title, servers) in zip(axes[0], panels, strict=True):
        for server, case in servers.items():
            steps = [s for run in case["runs"] for s in run.get("steps", [])]
            points = sorted(
                (s["delivered_per_s"], s["latency"]["p99_ms"]) for s in steps if s["delivered"]
            )
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o", markersize=3, label=server)
        ax.axhline(200, color="grey", linestyle="--", linewidth=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("delivered messages/s")
        ax.set_ylabel("p99 latency (ms)")
        ax.set_title(title)
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"{r['machine']['cpu']}, one core per side ({r['date'][:10]})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(results: Path, out_dir: Path = HERE) -> None:
    r = json.loads(results.read_text())
    replays = [
        json.loads(path.read_text())
        for path in (out_dir / "replay.json", out_dir / "replay-redis.json")
        if path.exists()
    ]
    # A plot drawn before (where matplotlib was) stays linked when this run cannot draw it.
    plotted = _plot(r, ("S1", "S2"), out_dir / "latency.png") or (out_dir / "latency.png").exists()
    lines = [
        "# Benchmark results",
        "",
        f"Measured {r['date']} with `{r['command']}` ({r['mode']}, each figure the median of "
        f"{r['runs_per_figure']} run(s)); regenerate with that command. Setup and method: "
        "[README.md](README.md).",
        "",
        f"Machine of that latest run (a scenario measured on another says so): {_machine(r)}.",
        "",
    ]
    if r.get("skipped"):
        lines += [f"Skipped: {r['skipped']}", ""]
    lines += _targets(r, replays)
    for name in ("S1", "S2"):
        if name in r["scenarios"]:
            lines += _sweep_table(name, r["scenarios"][name])
    if plotted:
        lines += ["![p99 latency against delivered messages/s](latency.png)", ""]
    if "S3" in r["scenarios"]:
        lines += _burst_tables(r["scenarios"]["S3"])
    if "S4" in r["scenarios"]:
        lines += _idle_table(r["scenarios"]["S4"], r.get("s4_measured"))
    if "S5" in r["scenarios"]:
        lines += _micro_table(r["scenarios"]["S5"])
    if "S6" in r["scenarios"]:
        lines += _s6_tables(r["scenarios"]["S6"])
        if _plot(r, ("S6",), out_dir / "latency-s6.png"):
            lines += ["![S6: p99 latency against delivered messages/s](latency-s6.png)", ""]
    costs = out_dir / "cluster_cost.json"
    if costs.exists():
        lines += _cost_tables(json.loads(costs.read_text()))
    overhead = out_dir / "metrics-overhead.json"
    if overhead.exists():
        lines += _overhead_table(json.loads(overhead.read_text()))
    log_cost = out_dir / "log-cost.json"
    if log_cost.exists():
        lines += _log_cost_table(json.loads(log_cost.read_text()))
    gc_runs = [(label, out_dir / f"gc-tuning-{name}.json") for name, label in GC_RUNS.items()]
    gc_found = {label: json.loads(path.read_text()) for label, path in gc_runs if path.exists()}
    if gc_found:
        lines += _gc_table(gc_found)
    if "S7" in r["scenarios"] or replays:
        lines += _history_section(r["scenarios"].get("S7"), replays)
    lines += _notes(r)
    (out_dir / "RESULTS.md").write_text("\n".join(lines))


def _ab_run(o: dict[str, Any]) -> str:
    """When, how and where a run of benches/ab_cpu.py measured (its --out file's fields)."""
    m = o["machine"]
    return (
        f"{o['date']} with `{o['command']}` ({m['cpu']}, {m['cores']} cores, commit "
        f"{m['git_commit']}; load average {_load(o['load_average_at_start'])} at start, "
        f"{_load(o['load_average_at_end'])} at end)"
    )


def _overhead_table(o: dict[str, Any]) -> list[str]:
    """Issue 13: what serving metrics costs, the server's CPU per delivery with them on and
    off at a fixed load (benches/ab_cpu.py --out)."""
    lines = [
        "### Metrics on and off (issue 13)",
        "",
        f"Measured {_ab_run(o)}. The server's CPU per delivered message at "
        "a fixed load well below saturation (1,000 clients in 100 rooms; server on core 0, load "
        "generator on core 1), runs taking turns: a steadier measure than the sweeps' knee on "
        "this shared machine. One build: the core counts what the metrics read (its "
        "histograms included) whether they are served or not; on serves them at /metrics.",
        "",
        "| transport | publishes/s | off, µs per delivery | on, µs per delivery | on / off |",
        "|---|---|---|---|---|",
    ]
    for transport, builds in o["cpu_us_per_delivery"].items():
        off, on = builds.get("off"), builds.get("on")
        if off is None or on is None:
            continue
        lines.append(
            f"| {transport} | {o['rates'][transport]:,} | {off['median']:.1f} "
            f"| {on['median']:.1f} | {on['median'] / off['median']:.3f} |"
        )
    return [*lines, ""]


def _log_cost_table(o: dict[str, Any]) -> list[str]:
    """Issue 13: what the INFO lines of sessions made and ended cost, the server's CPU per
    session with --log-level info and warning (benches/ab_cpu.py --churn --out)."""
    builds = o["cpu_us_per_session"]["churn"]
    info, warning = builds["info"], builds["warning"]
    runs = ", ".join(f"{run:.1f}" for run in info["runs"])
    quiet = ", ".join(f"{run:.1f}" for run in warning["runs"])
    return [
        "### Session logs at INFO (issue 13)",
        "",
        f"Measured {_ab_run(o)}. 20 long-polling clients each make a "
        "session and end it (a handshake, then a disconnect: two requests, and at INFO two "
        "lines) as fast as the server answers; the server's CPU per session, its standard "
        "error written to a file. Loads that keep their sessions (S1 to S6) log nothing per "
        "message, so only a churn of sessions pays this.",
        "",
        "| --log-level | µs per session (median) | runs | info / warning |",
        "|---|---|---|---|",
        f"| warning | {warning['median']:.1f} | {quiet} | |",
        f"| info | {info['median']:.1f} | {runs} | {info['median'] / warning['median']:.2f} |",
        "",
    ]


# benches/gc-tuning-NAME.json, and how the garbage collector's table names each.
GC_RUNS = {"memory": "in-memory", "redis": "Redis", "redis-knee": "Redis, near its knee"}


def _gc_table(runs: dict[str, dict[str, Any]]) -> list[str]:
    """The garbage collector as the CLI tunes it (tune_gc) against Python's defaults
    (--default-gc): the server's CPU per delivery and the p99 at a fixed load, on each engine
    (benches/ab_cpu.py --out benches/gc-tuning-ENGINE.json)."""
    lines = [
        "### Garbage collector",
        "",
        "The server's CPU per delivered message and the p99 latency at a fixed load (1,000 "
        "clients in 100 rooms; server, and Redis, on core 0, load generator on core 1), with "
        "the CLI's `tune_gc()` and with Python's defaults (`--default-gc`), runs taking turns. "
        "Below saturation the CPU per delivery is what to read; near the knee the CPU is all "
        "taken either way, and the collector's pauses show in the p99.",
        "",
    ]
    lines += [f"- {engine}: measured {_ab_run(o)}" for engine, o in runs.items()]
    lines += [
        "",
        "| engine | transport | publishes/s | µs per delivery, default | tuned | tuned / default "
        "| p99 ms, default | tuned |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for engine, o in runs.items():
        for transport, builds in o["cpu_us_per_delivery"].items():
            cpu = {name: builds[name]["median"] for name in ("default", "tuned")}
            p99 = {name: o["p99_ms"][transport][name]["median"] for name in ("default", "tuned")}
            lines.append(
                f"| {engine} | {transport} | {o['rates'][transport]:,} | {cpu['default']:.1f} "
                f"| {cpu['tuned']:.1f} | {cpu['tuned'] / cpu['default']:.2f} "
                f"| {p99['default']:.1f} | {p99['tuned']:.1f} |"
            )
    return [*lines, ""]


def _cost_tables(c: dict[str, Any]) -> list[str]:
    """What a delivery costs on the Redis engine at a fixed load (benches/cluster_cost.py)."""
    lines = [
        "### S6: what a delivery costs on the Redis engine (fixed load)",
        "",
        f"Measured {c['date']} with `{c['command']}`; load average at start "
        f"{c.get('load_average_at_start')}, at end {c.get('load_average_at_end')}. Server and "
        "Redis on core 0 (every worker shares it), the load generator on core 1; 1,000 clients in "
        "100 rooms; the steady state (the difference of a run and one twice as long). Redis "
        "commands count those its scripts run.",
        "",
    ]
    for transport in ("long-polling", "websocket"):
        runs = c.get(transport)
        if not runs:
            continue
        lines += [
            f"{transport}, {runs['publishes_per_s']} publishes/s:",
            "",
            "| engine | delivered/s | p99 ms | server CPU s per million deliveries "
            "| Redis CPU s per million | Redis commands per publish |",
            "|---|---|---|---|---|---|",
        ]
        for name, run in runs.items():
            if name in ("publishes_per_s", "idle"):
                continue
            lines.append(
                f"| {name} | {_num(run['delivered_per_s'])} | {run['p99_ms']:.1f} "
                f"| {run['server_cpu_s_per_million']:.0f} "
                f"| {_num(run.get('redis_cpu_s_per_million'))} "
                f"| {_num(run.get('redis_commands_per_publish'), 1)} |"
            )
        idle = runs.get("idle")
        if idle:
            lines += [
                "",
                f"Idle: {idle['sessions']:,} sessions holding a connect (or a socket) for "
                f"{idle['seconds']} s cost Redis {idle['redis_commands_per_s_held']} commands/s; "
                f"with no session at all, {idle['redis_commands_per_s_no_session']} (the log "
                "readers' blocking reads).",
            ]
        lines.append("")
    return lines


def _notes(r: dict[str, Any]) -> list[str]:
    start = r["machine"].get("load_average_at_start")
    end = r.get("load_average_at_end")
    return [
        "### Notes",
        "",
        "- Ratios are the server's figure over the project's, from the same script run "
        "(for S3 and S4 lower is better).",
        "- The ceiling answers one request with one fixed delivery; servers that batch "
        "several messages per reply or frame can deliver more messages/s than its request rate.",
        "- A load generator CPU near 1.0 means it, not the server, may have been the limit.",
        "- S4 counts resident memory: for the JVM that includes heap not yet collected.",
        '- S4 cases marked "no held connect" exist because the open-file hard limit here '
        "cannot hold one socket per session on each side.",
        f"- Load average (1, 5, 15 min) at start {start}, at end {end}; it counts the "
        "benchmark's own processes and threads as well as any other work on the machine.",
        *[f"- {note}" for note in r.get("notes", [])],
        "",
    ]


if __name__ == "__main__":
    write_report(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "results.json")
