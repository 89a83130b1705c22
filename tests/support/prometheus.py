"""Prometheus for the tests and the dashboard's picture: Debian's ``prometheus`` on a free
loopback port, scraping the given targets every second, its data in a directory of its own, and
its HTTP API to query it (what Grafana asks it for a panel)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from support.servers import free_port

START_TIMEOUT = 20.0
SCRAPE_INTERVAL = "1s"


def prometheus_missing() -> str | None:
    """Why Prometheus cannot be started here, or None when it can."""
    if shutil.which("prometheus") is None:
        return "prometheus is not installed (apt-get install prometheus)"
    return None


class PrometheusServer:
    """One ``prometheus`` scraping ``targets`` (metrics URLs) every second, for a ``with``
    block, which begins once every target was scraped (Prometheus hands its first targets
    to the scrapers some seconds after it is ready)."""

    def __init__(self, directory: Path, targets: list[str]) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._targets = targets
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PrometheusServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "prometheus.yml"
        config.write_text(self._config())
        log = (self.directory / "prometheus.log").open("wb")
        self._process = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={self.directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log_text()[-2000:]}")
            try:
                if self.scraped() == len(self._targets):
                    return self
            except (httpx.HTTPError, RuntimeError, ValueError):
                pass  # not ready yet
            time.sleep(0.2)
        self.__exit__()
        raise RuntimeError(f"prometheus scraped none of {self._targets}: {self.log_text()}")

    def __exit__(self, *_: object) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    def _config(self) -> str:
        jobs = []
        for n, target in enumerate(self._targets):
            parts = urlsplit(target)
            jobs.append(
                f"  - job_name: cometd{n}\n"
                f"    metrics_path: {parts.path}\n"
                f"    static_configs:\n"
                f"      - targets: ['{parts.netloc}']\n"
            )
        return (
            "global:\n"
            f"  scrape_interval: {SCRAPE_INTERVAL}\n"
            f"  evaluation_interval: {SCRAPE_INTERVAL}\n"
            "scrape_configs:\n" + "".join(jobs)
        )

    def log_text(self) -> str:
        return (self.directory / "prometheus.log").read_text(errors="replace")

    def api(self, path: str, **params: Any) -> Any:
        """The ``data`` of an HTTP API answer; raises with Prometheus's error otherwise."""
        answer = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10).json()
        if answer.get("status") != "success":
            raise RuntimeError(f"{path} {params}: {answer.get('error')}")
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The series ``expr`` gives now (an instant query)."""
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[Any]:
        """The series ``expr`` gives over a time range, as a panel draws them."""
        data = self.api("query_range", query=expr, start=start, end=end, step=step)
        result: list[Any] = data["result"]
        return result

    def scraped(self) -> int:
        """How many targets the last scrape of each found up."""
        return sum(target["health"] == "up" for target in self.api("targets")["activeTargets"])
