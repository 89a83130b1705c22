"""Building the tools, starting a server on core 0 and the load generator on core 1."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .scenarios import COMETD_JAR, PEERS, ROOT, Server

LOADGEN = ROOT / "target" / "release" / "loadgen"
SERVER_CORE, LOADGEN_CORE = "0", "1"


class BuildFailed(RuntimeError):
    """A tool did not build: the runner stops rather than measure an older binary left in
    ``target/`` (or an incomplete ``node_modules``) from an earlier build."""


def _build(what: str, cmd: list[str], cwd: Path | None = None) -> None:
    try:
        done = subprocess.run(cmd, cwd=cwd, check=False)
    except FileNotFoundError as exc:
        raise BuildFailed(f"cannot build {what}: {cmd[0]} is not installed") from exc
    if done.returncode != 0:
        raise BuildFailed(
            f"building {what} failed (exit status {done.returncode}): {' '.join(cmd)}"
        )


def build_tools(servers: list[str]) -> None:
    """Builds the load generator and every wanted peer whose toolchain is here; raises
    BuildFailed if a build fails."""
    crates = ["-p", "loadgen"] + (["-p", "axum-cometd-peer"] if "axum_cometd" in servers else [])
    what = "the load generator" + (" and axum_cometd" if "axum_cometd" in servers else "")
    _build(what, ["cargo", "build", "--release", "-q", *crates], cwd=ROOT)
    for peer, what in (("faye", "the Faye peer"), ("faye-redis", "the faye-redis peer")):
        faye = PEERS / peer
        if peer in servers and shutil.which("npm") and not (faye / "node_modules").exists():
            try:
                _build(what, ["npm", "ci", "--no-audit", "--no-fund", "--prefix", str(faye)])
            except BuildFailed:
                shutil.rmtree(faye / "node_modules", ignore_errors=True)  # the next run retries
                raise
    if "cometd-java" in servers and shutil.which("mvn") and not COMETD_JAR.exists():
        pom = PEERS / "cometd-java" / "pom.xml"
        _build("the CometD Java peer", ["mvn", "-q", "-f", str(pom), "package"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"server not listening on {port} after {limit} s")


def _stat_fields(pid: int) -> list[str]:
    # After the ")" closing the command name: state, ppid, ... (proc(5), from field 3 on).
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _tree(pid: int) -> list[int]:
    """``pid`` and its live descendants: Granian serves from a worker process, its child."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                children.setdefault(int(_stat_fields(int(entry.name))[1]), []).append(
                    int(entry.name)
                )
            except (OSError, IndexError, ValueError):
                continue  # the process ended meanwhile
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def _rss_kib(pid: int) -> int:
    """Resident memory of the server: the process and its descendants."""
    total = 0
    for member in _tree(pid):
        for line in Path(f"/proc/{member}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def _cpu_seconds(pid: int) -> float:
    fields = [_stat_fields(member) for member in _tree(pid)]
    ticks = sum(int(f[11]) + int(f[12]) for f in fields)
    return ticks / os.sysconf("SC_CLK_TCK")


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class RedisServer:
    """A Redis server of a run's own (S6): a free loopback port, a temporary directory, no
    persistence, pinned to the server's core, since it is part of the server under test."""

    def __init__(self) -> None:
        self.port = _free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="bench-redis-")
        command = ["taskset", "-c", SERVER_CORE, "redis-server", "--bind", "127.0.0.1"]
        command += ["--port", str(self.port), "--dir", self._dir.name, "--save", ""]
        command += ["--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while self._cli("PING") != "PONG":
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _cli(self, *command: str) -> str:
        done = subprocess.run(
            ["redis-cli", "-p", str(self.port), *command],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return done.stdout.strip()

    def counters(self) -> dict[str, float]:
        """Calls per command (``INFO commandstats``) and ``cpu`` (user + system seconds)."""
        found: dict[str, float] = {}
        for line in self._cli("INFO", "all").splitlines():
            if line.startswith("cmdstat_"):
                name, fields = line.removeprefix("cmdstat_").split(":", 1)
                calls = dict(f.split("=", 1) for f in fields.split(","))["calls"]
                found[name] = float(calls)
            elif line.startswith(("used_cpu_user:", "used_cpu_sys:")):
                found["cpu"] = found.get("cpu", 0.0) + float(line.split(":", 1)[1])
        return found

    def stop(self) -> None:
        _stop(self.process)
        self._dir.cleanup()


def _redis_usage(before: dict[str, float], after: dict[str, float], wall: float) -> dict[str, Any]:
    """What Redis did while the load generator ran: calls per command, CPU."""
    calls = {
        name: int(after[name] - before.get(name, 0.0))
        for name in after
        if name != "cpu" and after[name] > before.get(name, 0.0)
    }
    # The runner's own INFO call is counted in `after`.
    calls["info"] = calls.get("info", 1) - 1
    cpu = after.get("cpu", 0.0) - before.get("cpu", 0.0)
    return {
        "calls": {k: v for k, v in sorted(calls.items(), key=lambda kv: -kv[1]) if v},
        "cpu_seconds": round(cpu, 3),
        "cpu_avg": round(cpu / wall, 3),
    }


def run_server(
    spec: Server,
    transport: str,
    loadgen_args: list[str],
    timeout: int,
    max_interval: int,
    measure_rss: bool = False,
) -> dict[str, Any]:
    """Starts a fresh server, runs the load generator once against it, stops the server.
    Returns the load generator's summary (plus server CPU and, for S4, memory) or an error.
    A run that fails is tried once more with a fresh server, after a pause (a shared machine
    can run short of ports or memory for a moment); the result records the first failure."""
    args = (spec, transport, loadgen_args, timeout, max_interval, measure_rss)
    result = _run_once(*args)
    if "error" in result:
        time.sleep(10)
        retry = _run_once(*args)
        retry["retried_after"] = result["error"]
        return retry
    return result


def _run_once(
    spec: Server,
    transport: str,
    loadgen_args: list[str],
    timeout: int,
    max_interval: int,
    measure_rss: bool,
) -> dict[str, Any]:
    port = _free_port()
    try:
        redis = RedisServer() if spec.redis else None
    except Exception as exc:
        print(f"  {spec.name} {transport}: {exc}", file=sys.stderr)
        return {"error": str(exc)}
    command = spec.command(port, timeout, max_interval)
    if redis is not None:
        command += ["--redis", redis.url]
    log = open(ROOT / "target" / f"bench-{spec.name}.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(
        ["taskset", "-c", SERVER_CORE, *command], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
    )
    cmd = ["taskset", "-c", LOADGEN_CORE, str(LOADGEN), "--url", f"http://127.0.0.1:{port}/cometd"]
    cmd += ["--transport", transport, "--dialect", spec.dialect, "--quiet"]
    cmd += ["--server-timeout", str(timeout), *loadgen_args]
    try:
        _wait_listening(port, server)
        time.sleep(1)  # let a JIT or event loop finish starting before the first request
        counters = redis.counters() if redis is not None else {}
        cpu0, t0 = _cpu_seconds(server.pid), time.monotonic()
        if measure_rss:
            result = _idle_run(cmd, server.pid)
        else:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
            if done.returncode != 0:
                raise RuntimeError(f"loadgen failed: {done.stderr.strip()[-500:]}")
            result = json.loads(done.stdout)
        wall = time.monotonic() - t0
        result["server_cpu_avg"] = round((_cpu_seconds(server.pid) - cpu0) / wall, 3)
        if redis is not None:
            result["redis"] = _redis_usage(counters, redis.counters(), wall)
        return result
    except Exception as exc:
        print(f"  {spec.name} {transport}: {exc}", file=sys.stderr)
        return {"error": str(exc)}
    finally:
        _stop(server)
        log.close()
        if redis is not None:
            redis.stop()


def _idle_run(cmd: list[str], server_pid: int) -> dict[str, Any]:
    """S4: server memory before the sessions and once they are all set up and held."""
    before = _rss_kib(server_pid)
    gen = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert gen.stdout is not None and gen.stdin is not None
        line = gen.stdout.readline()  # printed once every session is set up
        if not line:
            raise RuntimeError(f"loadgen exited with {gen.wait(60)} before its report")
        result: dict[str, Any] = json.loads(line)
        time.sleep(3)  # held connects and sockets settle; counts what stays resident
        after = _rss_kib(server_pid)
        gen.stdin.close()
        gen.wait(60)
    finally:
        if gen.poll() is None:
            gen.kill()
            gen.wait(10)
    ok = max(1, result["setup"]["ok"])
    result.update(
        rss_before_kib=before,
        rss_after_kib=after,
        bytes_per_session=round((after - before) * 1024 / ok),
    )
    return result
