"""Drive real CometD clients from pytest through small driver programs.

Every driver speaks the same JSON-lines protocol (documented at the top of
tests/js/driver.mjs): commands on its stdin, events on its stdout.
``DriverClient`` sends commands and waits for events, buffering the ones a test
is not waiting for yet so that a later ``expect()`` can still find them; each
subclass says how to start its driver and what it needs installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import pytest

# The drivers live beside this folder, in tests/js and tests/java.
TESTS_DIR = Path(__file__).resolve().parent.parent
JS_DIR = TESTS_DIR / "js"
DRIVER = JS_DIR / "driver.mjs"
FAYE_DRIVER = JS_DIR / "faye_driver.mjs"
REQUIRE_CLIENTS_ENV = "STARLETTE_COMETD_REQUIRE_CLIENTS"

Event = dict[str, Any]


def _node_missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not (JS_DIR / "node_modules").is_dir():
        return f"{JS_DIR / 'node_modules'} is missing (run: npm ci --prefix tests/js)"
    return None


def require(name: str, reason: str | None) -> None:
    """Skip the test when a client is unavailable, or fail it when clients are required (CI)."""
    if reason is None:
        return
    if os.environ.get(REQUIRE_CLIENTS_ENV) == "1":
        pytest.fail(f"{name} unavailable: {reason} ({REQUIRE_CLIENTS_ENV}=1)")
    pytest.skip(f"{name} unavailable: {reason}")


def node_available() -> bool:
    """True when node and the driver's npm dependencies are installed."""
    return _node_missing() is None


def require_node() -> None:
    """Skip the test without node, or fail it when clients are required (CI)."""
    require("CometD JS client", _node_missing())


def _matches(event: Event, name: str, match: dict[str, Any]) -> bool:
    if event.get("event") != name:
        return False
    return all(key in event and event[key] == value for key, value in match.items())


class DriverClient:
    """One real client running in a driver subprocess."""

    name = "client"

    def command(self) -> list[str]:
        """The driver's command line."""
        raise NotImplementedError

    cwd: Path = JS_DIR

    def missing(self) -> str | None:
        """Why the driver cannot run here, or ``None``."""
        return None

    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self._buffer: list[Event] = []
        self._seen: list[Event] = []

    @property
    def events(self) -> list[Event]:
        """Every event received so far, in arrival order (for diagnostics)."""
        return list(self._seen)

    async def start(self, url: str, append_message_type: bool = True, **settings: Any) -> None:
        """Spawn the driver and configure the client for the Bayeux ``url``; ``settings`` are
        :meth:`configure`'s."""
        require(self.name, self.missing())
        self._proc = await asyncio.create_subprocess_exec(
            *self.command(),
            cwd=str(self.cwd),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            # Client logs stay visible in pytest's captured stderr.
            stderr=None,
            # Large message batches exceed asyncio's default 64 KiB line limit.
            limit=16 * 1024 * 1024,
        )
        await self.configure(url, append_message_type, **settings)

    async def configure(
        self,
        url: str,
        append_message_type: bool = True,
        *,
        transports: list[str] | None = None,
        log_level: str = "warn",
        options: dict[str, Any] | None = None,
        extensions: list[str] | None = None,
        instance: str | None = None,
        timeout: float = 10,
    ) -> None:
        """(Re)configure the client. ``options`` are extra CometD configuration keys passed
        through as-is (for example ``{"maxNetworkDelay": 5000, "backoffIncrement": 100}``);
        ``extensions`` names client extensions to register (``"ack"``, and in the JS driver
        ``"timesync"``). ``instance`` (JS driver only) names another CometD instance in the
        same driver, sharing the first one's cookie jar; its commands and events carry that
        name in their ``instance`` field."""
        cmd: dict[str, Any] = {
            "cmd": "configure",
            "url": url,
            "appendMessageTypeToURL": append_message_type,
            "logLevel": log_level,
            "transports": transports or ["long-polling"],
            "options": options or {},
        }
        if extensions:
            cmd["extensions"] = extensions
        match: dict[str, Any] = {}
        if instance is not None:
            cmd["instance"] = match["instance"] = instance
        await self.send(cmd)
        await self.expect("configured", timeout=timeout, **match)

    async def send(self, cmd: dict[str, Any]) -> None:
        """Write one command to the driver."""
        proc = self._require_proc()
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(cmd).encode() + b"\n")
        await proc.stdin.drain()

    async def expect(self, event: str, timeout: float = 10, **match: Any) -> Event:
        """Return the first event named ``event`` whose fields equal ``match``.

        Buffered events are searched first; newer non-matching events are kept
        for later calls. Raises AssertionError on timeout or driver exit.
        """
        return await self.expect_where(
            event, lambda candidate: _matches(candidate, event, match), timeout, repr(match)
        )

    async def expect_where(
        self,
        event: str,
        where: Callable[[Event], bool],
        timeout: float = 10,
        what: str = "(a predicate)",
    ) -> Event:
        """Like :meth:`expect`, for the first event named ``event`` for which ``where`` is true
        (for conditions on nested fields, such as a reply's advice)."""

        def wanted(candidate: Event) -> bool:
            return candidate.get("event") == event and where(candidate)

        for index, candidate in enumerate(self._buffer):
            if wanted(candidate):
                return self._buffer.pop(index)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._fail(f"timed out after {timeout}s waiting for {event!r} {what}")
            try:
                received = await asyncio.wait_for(self._read_event(), remaining)
            except TimeoutError:
                self._fail(f"timed out after {timeout}s waiting for {event!r} {what}")
            if received is None:
                self._fail(f"driver exited while waiting for {event!r} {what}")
            if wanted(received):
                return received
            self._buffer.append(received)

    async def messages(self, n: int, timeout: float = 10, **match: Any) -> list[Event]:
        """Collect ``n`` "message" events (optionally matching fields) in arrival order."""
        deadline = time.monotonic() + timeout
        collected: list[Event] = []
        while len(collected) < n:
            remaining = max(deadline - time.monotonic(), 0.0)
            try:
                collected.append(await self.expect("message", timeout=remaining, **match))
            except AssertionError as exc:
                raise AssertionError(f"got {len(collected)} of {n} messages: {exc}") from None
        return collected

    async def next_event(self, timeout: float = 10) -> Event:
        """The next event, whatever it is (those buffered by :meth:`expect` first): for a test
        that follows every event as it comes, without the buffer growing."""
        if self._buffer:
            return self._buffer.pop(0)
        try:
            received = await asyncio.wait_for(self._read_event(), timeout)
        except TimeoutError:
            self._fail(f"no event in {timeout}s")
        if received is None:
            self._fail("the driver exited")
        return received

    async def close(self) -> None:
        """Ask the driver to disconnect and exit; kill it if it takes over 5 s."""
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        if proc.returncode is None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                assert proc.stdin is not None
                proc.stdin.write(b'{"cmd": "exit"}\n')
                await proc.stdin.drain()
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()

    async def __aenter__(self) -> DriverClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _require_proc(self) -> asyncio.subprocess.Process:
        if self._proc is None:
            raise RuntimeError(f"{self.name} driver is not started")
        return self._proc

    async def _read_event(self) -> Event | None:
        proc = self._require_proc()
        assert proc.stdout is not None
        line = await proc.stdout.readline()
        if not line:
            return None
        received: Event = json.loads(line)
        self._seen.append(received)
        return received

    def _fail(self, what: str) -> NoReturn:
        seen = "\n".join(json.dumps(e) for e in self._seen[-200:])
        raise AssertionError(f"{what}; last events seen:\n{seen}")


class JsClient(DriverClient):
    """The CometD JavaScript client (npm ``cometd`` 9 with ``cometd-nodejs-client``) in Node.js."""

    name = "CometD JS client"

    def command(self) -> list[str]:
        return ["node", str(DRIVER)]

    def missing(self) -> str | None:
        return _node_missing()


class FayeClient(DriverClient):
    """Faye's Node.js client (npm ``faye`` 1.4) through tests/js/faye_driver.mjs.

    ``transports`` picks Faye's connection types (``["long-polling"]`` disables its
    websocket); ``options`` are Faye.Client options (``timeout``, ``retry``, ``interval``, in
    seconds). The driver notes its own differences from the CometD JS driver at its top.
    """

    name = "Faye client"

    def command(self) -> list[str]:
        return ["node", str(FAYE_DRIVER)]

    def missing(self) -> str | None:
        reason = _node_missing()
        if reason is None and not (JS_DIR / "node_modules" / "faye").is_dir():
            reason = "the faye npm package is missing (run: npm ci --prefix tests/js)"
        return reason


class JsforceClient(FayeClient):
    """jsforce 3's client of Salesforce's Streaming API (npm ``jsforce``, pinned 3.10.16, the
    last for Node.js 20): the Faye client it builds for ``<instance_url>/cometd/50.0``, with its
    replay extension asking to replay ``channel`` from ``replay_id``. Through
    tests/js/faye_driver.mjs; its ``status`` reports the id the extension would replay from."""

    name = "jsforce client"

    def __init__(self, instance_url: str, channel: str, replay_id: int) -> None:
        super().__init__()
        self.jsforce = {"instanceUrl": instance_url, "channel": channel, "replayId": replay_id}

    async def send(self, cmd: dict[str, Any]) -> None:
        if cmd.get("cmd") == "configure":
            cmd = {**cmd, "jsforce": self.jsforce}
        await super().send(cmd)

    def missing(self) -> str | None:
        reason = super().missing()
        if reason is None and not (JS_DIR / "node_modules" / "jsforce").is_dir():
            reason = "the jsforce npm package is missing (run: npm ci --prefix tests/js)"
        return reason


JAVA_DIR = TESTS_DIR / "java"
JAVA_JAR = JAVA_DIR / "target" / "cometd-driver.jar"
JAVA_BUILD = "mvn -q -f tests/java package"


def _java_missing() -> str | None:
    if shutil.which("java") is None:
        return "java is not installed"
    if not JAVA_JAR.is_file():
        return f"{JAVA_JAR} is missing (run: {JAVA_BUILD})"
    sources = [JAVA_DIR / "pom.xml", *(JAVA_DIR / "src").rglob("*.java")]
    built = JAVA_JAR.stat().st_mtime
    if any(source.stat().st_mtime > built for source in sources):
        return f"{JAVA_JAR} is older than its sources (run: {JAVA_BUILD})"
    return None


class JavaClient(DriverClient):
    """The CometD Java client (``org.cometd.java`` 8.0, on Jetty 12) through tests/java's
    Driver, built into one jar by ``mvn -q -f tests/java package``.

    ``transports`` picks the client's transports in order of preference (``"long-polling"``:
    Jetty's HttpClient; ``"websocket"``: the Jakarta WebSocket transport on Jetty's client);
    ``options`` are set on the client and its transports as they are (for example
    ``{"maxMessageSize": 2097152, "maxNetworkDelay": 5000}``). ``append_message_type`` is
    ignored: the Java client always appends the type of a lone meta message to the URL. The
    driver notes its other differences from the CometD JS driver at the top of Driver.java.
    """

    name = "CometD Java client"
    cwd = JAVA_DIR

    def command(self) -> list[str]:
        # A short-lived client: favour start-up time over peak throughput.
        return ["java", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-jar", str(JAVA_JAR)]

    def missing(self) -> str | None:
        return _java_missing()


class JavaReplayClient(JavaClient):
    """The CometD Java client with Salesforce's replay extension as its Java connector
    (EMP-Connector) has it (tests/java's ReplayExtension): it tracks the channels of
    ``replay_from`` (channel: the id to replay from), sends the whole map with every subscribe
    once the handshake reply says the server speaks replay, and keeps the last id it receives
    on each; ``status`` reports them (``replay``) and whether replay was agreed
    (``replaySupported``)."""

    name = "CometD Java client with the replay extension"

    def __init__(self, replay_from: dict[str, int]) -> None:
        super().__init__()
        self.replay_from = replay_from

    async def send(self, cmd: dict[str, Any]) -> None:
        if cmd.get("cmd") == "configure":
            extensions = [*cmd.get("extensions", []), "replay"]
            cmd = {**cmd, "extensions": extensions, "replay": self.replay_from}
        await super().send(cmd)
