"""The Grafana dashboard's picture (docs/grafana/dashboard.png), fed by a benchmark run.

Grafana itself cannot be used here: it is under the AGPL, which this project's machines may not
install. So a real Prometheus (Debian's) scrapes a real cluster (two CLI workers on a fresh
Redis, with a history) every second while the load generator runs benchmark loads, and this
script draws each panel of docs/grafana/starlette-cometd.json (its title, place on the grid,
queries, legends and unit) from what Prometheus answers to those very queries over the run.

    python benches/dashboard.py    # about 2 minutes

The loads, one after the other, with the server on core 0 and the clients on core 1:
long-polling at 200 and then 400 publishes/s, WebSocket at 800/s (1,000 clients in 100 rooms
each time, every client a new session), then 20 clients making and ending sessions as fast as
the server answers, with 20 refused publishes a second beside them. Needs prometheus,
redis-server and `cargo build --release -p loadgen`.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from runner.procs import RedisServer, _free_port, _stop, _wait_listening

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from support.prometheus import PrometheusServer  # noqa: E402  (the tests' own launcher)

DASHBOARD = ROOT / "docs" / "grafana" / "starlette-cometd.json"
PICTURE = ROOT / "docs" / "grafana" / "dashboard.png"
LOADGEN = ROOT / "target" / "release" / "loadgen"
STEP = 2.0  # seconds between the points of a panel's line


def load(url: str, *options: str) -> None:
    """One run of the load generator on core 1."""
    command = ["taskset", "-c", "1", str(LOADGEN), "--url", url, "--quiet", *options]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def refuse_publishes(url: str, stop: threading.Event) -> None:
    """Publishes of a session that does not exist, 20 a second, until ``stop``."""
    with httpx.Client(timeout=10) as http:
        while not stop.wait(0.05):
            http.post(url, json=[{"channel": "/room/0", "clientId": "0" * 40, "data": 0}])


def run_loads(url: str) -> None:
    rooms = ["--clients", "1000", "--rooms", "100", "--warmup", "2"]
    for transport, rate in (("long-polling", 200), ("long-polling", 400), ("websocket", 800)):
        load(url, "--transport", transport, *rooms, "--rate", str(rate), "--duration", "20")
    stop = threading.Event()
    refusing = threading.Thread(target=refuse_publishes, args=(url, stop))
    refusing.start()
    try:
        load(url, "--transport", "long-polling", "--rps", "--churn", "--clients", "20")
    finally:
        stop.set()
        refusing.join()


def legend(fmt: str, labels: dict[str, str]) -> str:
    """Grafana's ``legendFormat``: ``{{label}}`` replaced by the series' label."""
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)


def unit_text(value: float, unit: str) -> str:
    """A value on an axis as Grafana writes it for the panel's unit."""
    if unit == "s":
        for scale, suffix in ((1, "s"), (1e-3, "ms"), (1e-6, "µs")):
            if abs(value) >= scale or scale == 1e-6:
                return f"{value / scale:g} {suffix}"
    suffix = " ops/s" if unit == "ops" else ""
    for scale, letter in ((1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:g}{letter}{suffix}"
    return f"{value:g}{suffix}"


def draw(prometheus: PrometheusServer, start: float, end: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    plt.style.use("dark_background")
    figure = plt.figure(figsize=(16, rows * 0.32), facecolor="#111217")
    grid = figure.add_gridspec(rows, 24, hspace=0.6, wspace=0.2, top=0.97, bottom=0.03)
    for panel in panels:
        place = panel["gridPos"]
        rows_of = slice(place["y"] + 1, place["y"] + place["h"])  # the first: its title
        # Two columns of each panel's place are left for its axis's labels.
        columns = slice(place["x"] + 2, place["x"] + place["w"])
        axes = figure.add_subplot(grid[rows_of, columns])
        axes.set_facecolor("#181b1f")
        axes.set_title(panel["title"], loc="left", fontsize=10, color="#ccccdc")
        unit = panel["fieldConfig"]["defaults"].get("unit", "short")
        for target in panel["targets"]:
            for series in prometheus.query_range(target["expr"], start, end, STEP):
                points = [(float(t) - start, float(v)) for t, v in series["values"]]
                points = [(t, v) for t, v in points if not math.isnan(v)]
                if points:
                    xs, ys = zip(*points, strict=True)
                    name = legend(target.get("legendFormat", ""), series["metric"])
                    axes.plot(xs, ys, linewidth=1.2, label=name or target["expr"])
        axes.set_xlim(0, end - start)
        axes.set_ylim(bottom=0)
        axes.yaxis.set_major_formatter(FuncFormatter(lambda v, _, u=unit: unit_text(v, u)))
        axes.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0f} s"))
        axes.tick_params(labelsize=7, colors="#9fa7b3")
        axes.grid(color="#2c3235", linewidth=0.5)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=7, loc="upper left", frameon=False)
    figure.savefig(PICTURE, dpi=80, facecolor=figure.get_facecolor(), bbox_inches="tight")


def main() -> None:
    redis = RedisServer()
    port = _free_port()
    url = f"http://127.0.0.1:{port}/cometd"
    server = subprocess.Popen(
        [
            *("taskset", "-c", "0", sys.executable, "-m", "starlette_cometd"),
            *("--port", str(port), "--workers", "2", "--redis", redis.url),
            *("--metrics", "/metrics", "--history", "/room/**:1000"),
            *("--max-sessions-per-address", "0", "--log-level", "warning"),
        ],
        cwd="/tmp",
        start_new_session=True,
    )
    try:
        _wait_listening(port, server)
        with (
            tempfile.TemporaryDirectory(prefix="bench-prometheus-") as directory,
            PrometheusServer(Path(directory), [f"http://127.0.0.1:{port}/metrics"]) as prometheus,
        ):
            start = time.time()
            run_loads(url)
            time.sleep(10)  # every node's last report, scraped
            draw(prometheus, start, time.time())
    finally:
        _stop(server)
        redis.stop()
    print(f"wrote {PICTURE.relative_to(ROOT)} (load average {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
