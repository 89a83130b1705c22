"""Redis for the tests: Debian's ``redis-server`` on free loopback ports, one server or a
three-node Redis Cluster, each in a directory of its own and without persistence, so that a
server started again begins empty.

The methods block (a start takes some tens of milliseconds, a cluster about a second): call
them from async tests with ``await asyncio.to_thread(server.restart)`` when a server in the same
event loop must keep serving meanwhile."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

import redis

from support.servers import free_port

# How long a server may take to answer PING, and a cluster to say cluster_state:ok.
START_TIMEOUT = 10.0
# How long a server may take to exit after SIGTERM before it is killed.
STOP_TIMEOUT = 5.0


def redis_missing() -> str | None:
    """Why the tests cannot start Redis here, or None when they can."""
    for program in ("redis-server", "redis-cli"):
        if shutil.which(program) is None:
            return f"{program} is not installed (apt-get install redis-server)"
    return None


class RedisServer:
    """One ``redis-server`` on ``127.0.0.1:port`` (a free port unless given), its files and log
    in ``directory``. ``start`` and ``stop`` may be repeated; the port stays the same."""

    def __init__(self, directory: Path, port: int | None = None, *options: str) -> None:
        self.directory = directory
        self.port = port or free_port()
        self._options = options
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log(self) -> Path:
        return self.directory / "redis.log"

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The running process, or None while stopped."""
        return self._process

    def client(self) -> redis.Redis:
        """A new synchronous client of this server, which gives up quickly when it is down."""
        return redis.Redis(
            host="127.0.0.1", port=self.port, socket_connect_timeout=1, socket_timeout=5
        )

    def start(self) -> None:
        """Starts the server and returns once it answers (INFO, with its own process id)."""
        if self._process is not None:
            raise RuntimeError(f"Redis on port {self.port} is already running")
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            "redis-server",
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.directory),
            # No RDB snapshots and no append-only file: nothing survives a stop.
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--loglevel", "warning",
            *self._options,
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            self._wait_for_ping()
        except BaseException:
            self.stop()
            raise

    def _wait_for_ping(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT
        with self.client() as client:
            while True:
                if self._process.poll() is not None:
                    raise RuntimeError(
                        f"redis-server on port {self.port} exited with status "
                        f"{self._process.returncode}:\n{self.log.read_text(errors='replace')}"
                    )
                try:
                    # Another process may hold the port (a free port is only free when picked):
                    # the server that answers must be this one.
                    if client.info("server")["process_id"] == self._process.pid:
                        return
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} does not answer")
                time.sleep(0.02)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stops the server: SIGTERM, then SIGKILL if it has not exited after ``timeout``
        seconds. Does nothing when it is stopped already."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def freeze(self) -> None:
        """Freezes the server (SIGSTOP), as a paused VM or a partition without a reset: its
        connections stay open and it answers nothing until ``thaw``."""
        assert self._process is not None, "the server is not running"
        self._process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self._process is not None, "the server is not running"
        self._process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """Stops the server and starts a new, empty one on the same port."""
        self.stop()
        self.start()


def free_ports(count: int) -> list[int]:
    """``count`` different free loopback ports: each stays bound until all are picked, so that
    none is picked twice."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def _cluster_node_options(bus_port: int) -> list[str]:
    """A cluster node's options: its state file in its own directory, and its cluster bus on
    ``bus_port`` (the default, its port + 10000, may be taken or past 65535)."""
    return [
        "--cluster-enabled", "yes",
        "--cluster-config-file", "nodes.conf",
        "--cluster-port", str(bus_port),
        "--cluster-node-timeout", "5000",
    ]  # fmt: skip


class RedisCluster:
    """A Redis Cluster of ``size`` primaries and no replicas on loopback ports, each node in a
    directory of its own under ``directory``, with its cluster bus on another free port."""

    def __init__(self, directory: Path, size: int = 3) -> None:
        ports = free_ports(2 * size)
        self.nodes = [
            RedisServer(directory / f"node{i}", ports[i], *_cluster_node_options(ports[size + i]))
            for i in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        return [f"redis://127.0.0.1:{node.port}" for node in self.nodes]

    def start(self) -> None:
        """Starts every node, joins them into one cluster with the slots split between them,
        and returns once every node says ``cluster_state:ok`` and knows all the others."""
        try:
            for node in self.nodes:
                node.start()
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            create = ["--cluster", "create", *addresses, "--cluster-replicas", "0"]
            created = subprocess.run(
                ["redis-cli", *create, "--cluster-yes"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            if created.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed:\n{created.stdout}")
            self._wait_until_ok()
        except BaseException:
            self.stop()
            raise

    def _wait_until_ok(self) -> None:
        expected = {"cluster_state": "ok", "cluster_known_nodes": str(len(self.nodes))}
        deadline = time.monotonic() + START_TIMEOUT
        for node in self.nodes:
            with node.client() as client:
                while True:
                    info = client.cluster("INFO")
                    if all(str(info.get(key)) == value for key, value in expected.items()):
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the cluster is not ok on port {node.port}: {info}")
                    time.sleep(0.05)

    def flush(self) -> None:
        """Empties every node (FLUSHALL on each primary)."""
        for node in self.nodes:
            with node.client() as client:
                client.flushall()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
