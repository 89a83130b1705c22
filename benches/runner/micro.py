"""S5: the micro benchmarks, run by run.py after the end-to-end scenarios. The pure-Rust ones
(divan, ``cargo bench --bench core``) and the same four through the Python API
(pytest-benchmark, ``benches/micro``), each reported as nanoseconds per unit of work."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

# divan benchmark -> (units of work per iteration, unit)
RUST_UNITS = {
    "fan_out_to_10000_subscribers": (10_000, "delivery"),
    "wildcard_matching_with_10000_patterns": (1, "publish"),
    "parse_a_100_message_request": (100, "message"),
    "build_a_100_message_response": (100, "message"),
}
_SCALE = {"ns": 1.0, "µs": 1e3, "us": 1e3, "ms": 1e6, "s": 1e9}
# "├─ name   fastest │ slowest │ median │ mean │ samples │ iters"
_ROW = re.compile(r"[├╰]─ (\w+)\s+([\d.]+) (\S+)\s+│\s+([\d.]+) (\S+)\s+│\s+([\d.]+) (\S+)")


def _rust() -> dict[str, Any]:
    cmd = ["cargo", "bench", "-q", "--bench", "core"]
    # The benchmark runs on the server's core, like the servers.
    out = subprocess.run(["taskset", "-c", "0", *cmd], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": out.stderr[-2000:]}
    results: dict[str, Any] = {}
    for line in out.stdout.splitlines():
        match = _ROW.search(line)
        if match is None or match.group(1) not in RUST_UNITS:
            continue
        units, unit = RUST_UNITS[match.group(1)]
        median_ns = float(match.group(6)) * _SCALE[match.group(7)]
        results[match.group(1)] = {"median_ns": median_ns, f"ns_per_{unit}": median_ns / units}
    return {"command": " ".join(cmd), "results": results, "output": out.stdout}


def _python() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "micro.json"
        cmd = [sys.executable, "-m", "pytest", "benches/micro", "-q", "-p", "no:cacheprovider"]
        cmd.append(f"--benchmark-json={report}")
        out = subprocess.run(["taskset", "-c", "0", *cmd], cwd=ROOT, capture_output=True, text=True)
        if out.returncode != 0 or not report.exists():
            return {"error": (out.stdout + out.stderr)[-2000:]}
        data = json.loads(report.read_text())
    results = {
        bench["name"]: {"median_ns": bench["stats"]["median"] * 1e9, **bench["extra_info"]}
        for bench in data["benchmarks"]
    }
    return {"command": "python -m pytest benches/micro", "results": results}


def run_micro() -> dict[str, Any]:
    return {"rust": _rust(), "python": _python()}
