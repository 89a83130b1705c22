"""Replay of a channel's history (issue 12): how long a fresh subscriber waits for every
retained message, over WebSocket and over long-polling, and what a retained message costs the
server in resident memory.

    python benches/replay.py                                  # 10,000 messages, 5 subscribers
    python benches/replay.py --repeats 2 --memory-messages 20000 --out /tmp/replay.json
    python benches/replay.py --redis                          # the Redis engine's history

The server is the CLI pinned to core 0 (`--history "/replay/**:10000"
--max-sessions-per-address 0`); this script pins itself to core 1 and is every client. A
publisher fills the history of /replay/bench first (object data of about --payload bytes),
then each repetition takes a fresh session per transport (alternating) and times:

- websocket: from sending the subscribe (with `ext.replay` = -2, the whole history) to
  receiving the frame that completes the last copy; a connect is held meanwhile, as a
  CometD client holds one;
- long-polling: from sending the subscribe's POST, through its reply, to reading the whole
  reply of the connect sent right after it, which carries the copies (the first connect of
  the session, answered at once, came before the clock started).

Copies are counted on the raw bytes while the clock runs; the replies are parsed and checked
(every copy there once, in order, with its `data.event.replayId`) after it stops. Memory is
measured on a fresh server with `--history "/mem/**:N"`: VmRSS before and after publishing N
messages to one channel (after a warm-up of the same publishes on a channel without history,
so buffers that any publishing needs are already there), divided by N.

With --redis the history is the Redis engine's: a fresh redis-server (also on core 0) and two
CLI processes with `--redis`; the publisher fills the history through one, and the
subscribers replay through the other, so every copy is read from Redis. No memory figure then.

Writes --out (by default benches/replay.json, or benches/replay-redis.json with --redis; then
RESULTS.md again through report.py: its S7 section and targets) and prints a summary. The
figures include the Python clients' own reading of some 2 MB of replies. Needs httpx and
websockets, as the project's tests do.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
from report import write_report
from runner.machine import describe_machine
from runner.procs import (
    LOADGEN_CORE,
    SERVER_CORE,
    RedisServer,
    _free_port,
    _rss_kib,
    _stop,
    _wait_listening,
)
from websockets.sync.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parent.parent
CHANNEL = "/replay/bench"
MEMORY_CHANNEL = "/mem/bench"
WARM_CHANNEL = "/warm/bench"  # no history: warms up publishing before memory is read
BATCH = 500  # publishes per request: ~60 KB, far under the 1 MiB body limit
Message = dict[str, Any]


def _encode(messages: list[Message]) -> bytes:
    return json.dumps(messages, separators=(",", ":")).encode()


def _marker(channel: str) -> bytes:
    """How a delivery on ``channel`` starts in the server's compact JSON: counted on the raw
    bytes while timing, so that parsing does not delay the next read."""
    return f'{{"channel":"{channel}"'.encode()


@contextmanager
def cli_server(history: str, redis_url: str | None = None) -> Iterator[tuple[int, int]]:
    """The CLI on a free port, pinned to the server's core, keeping a history under the
    rule ``history`` (with ``redis_url``, as a node of that Redis): yields (port, pid)."""
    port = _free_port()
    command = [sys.executable, "-m", "starlette_cometd", "--port", str(port)]
    command += ["--log-level", "warning", "--max-sessions-per-address", "0"]
    command += ["--history", history]
    if redis_url is not None:
        command += ["--redis", redis_url]
    server = subprocess.Popen(["taskset", "-c", SERVER_CORE, *command], cwd=ROOT)
    try:
        _wait_listening(port, server)
        time.sleep(1)  # the event loop settled before the first request
        yield port, server.pid
    finally:
        _stop(server)


class HttpClient:
    """A long-polling Bayeux client: one httpx connection, the session's cookie kept."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/cometd"
        self.http = httpx.Client(timeout=60)
        self.client_id = ""

    def post(self, messages: list[Message]) -> bytes:
        reply = self.http.post(
            self.url, content=_encode(messages), headers={"content-type": "application/json"}
        )
        reply.raise_for_status()
        return reply.content

    def handshake(self) -> None:
        message = _handshake("long-polling")
        self.client_id = json.loads(self.post([message]))[0]["clientId"]
        self.post([_connect(self.client_id, "long-polling", at_once=True)])

    def close(self) -> None:
        self.http.close()


def _handshake(transport: str) -> Message:
    return {
        "channel": "/meta/handshake",
        "version": "1.0",
        "supportedConnectionTypes": [transport],
        "ext": {"replay": True},
    }


def _connect(client_id: str, transport: str, at_once: bool = False) -> Message:
    message: Message = {"channel": "/meta/connect", "clientId": client_id}
    message["connectionType"] = transport
    if at_once:
        message["advice"] = {"timeout": 0}  # as CometD clients' first connect
    return message


def _subscribe_all(client_id: str, channel: str) -> Message:
    return {
        "channel": "/meta/subscribe",
        "clientId": client_id,
        "subscription": channel,
        "ext": {"replay": {channel: -2}},  # -2: everything the history keeps
    }


def _data(seq: int, payload: int) -> Message:
    """Object data of about ``payload`` bytes as compact JSON."""
    return {"seq": seq, "text": "x" * max(0, payload - 24)}


def publish(port: int, channel: str, count: int, payload: int) -> float:
    """Publishes ``count`` messages to ``channel`` in batches, checks that each was accepted,
    and returns the mean size of their data in bytes."""
    client = HttpClient(port)
    try:
        client.handshake()
        size = 0
        for first in range(0, count, BATCH):
            batch = []
            for seq in range(first, min(first + BATCH, count)):
                data = _data(seq, payload)
                size += len(_encode([data])) - 2  # without the brackets
                batch.append({"channel": channel, "clientId": client.client_id, "data": data})
            replies = json.loads(client.post(batch))
            if not all(reply.get("successful") for reply in replies):
                raise RuntimeError(f"a publish failed: {replies[:2]}")
        return size / count
    finally:
        client.close()


def check_copies(chunks: list[bytes], channel: str, expected: int) -> None:
    """Every retained message arrived once, in the order published, with its replay id."""
    copies = [
        message
        for chunk in chunks
        for message in json.loads(chunk)
        if message.get("channel") == channel
    ]
    seqs = [copy["data"]["seq"] for copy in copies]
    if seqs != list(range(expected)):
        raise RuntimeError(f"{len(copies)} copies, expected {expected} in order")
    ids = [copy["data"]["event"]["replayId"] for copy in copies]
    if any(later <= earlier for earlier, later in pairwise(ids)):
        raise RuntimeError("replay ids do not increase")


def replay_websocket(port: int, expected: int) -> dict[str, float]:
    """One fresh WebSocket subscriber: seconds from sending the subscribe to the last copy."""
    # One frame may carry the whole replay; the server offers no compression.
    url = f"ws://127.0.0.1:{port}/cometd"
    with connect(url, max_size=None, compression=None) as ws:
        client_id = _ws_session(ws)
        marker = _marker(CHANNEL)
        frames: list[bytes] = []
        copies = 0
        start = time.perf_counter()
        ws.send(_encode([_subscribe_all(client_id, CHANNEL)]))
        while copies < expected:
            frame = ws.recv(timeout=30, decode=False)
            assert isinstance(frame, bytes)
            frames.append(frame)
            copies += frame.count(marker)
        elapsed = time.perf_counter() - start
    check_copies(frames, CHANNEL, expected)
    return {"seconds": elapsed, "bytes": sum(len(frame) for frame in frames)}


def _ws_session(ws: ClientConnection) -> str:
    """Handshakes, has the first connect answered, then holds a connect, as a CometD
    client does before it subscribes."""
    ws.send(_encode([_handshake("websocket")]))
    client_id: str = json.loads(ws.recv(timeout=10))[0]["clientId"]
    ws.send(_encode([_connect(client_id, "websocket", at_once=True)]))
    ws.recv(timeout=10)
    ws.send(_encode([_connect(client_id, "websocket")]))
    return client_id


def replay_long_polling(port: int, expected: int) -> dict[str, float]:
    """One fresh long-polling subscriber: seconds from sending the subscribe to the end of
    the connect reply that completes the copies (connects follow until it does)."""
    client = HttpClient(port)
    try:
        client.handshake()
        marker = _marker(CHANNEL)
        start = time.perf_counter()
        bodies = [client.post([_subscribe_all(client.client_id, CHANNEL)])]
        subscribed = time.perf_counter() - start
        copies = 0
        while copies < expected:
            bodies.append(client.post([_connect(client.client_id, "long-polling")]))
            copies += bodies[-1].count(marker)
        elapsed = time.perf_counter() - start
        connects = len(bodies) - 1
    finally:
        client.close()
    check_copies(bodies, CHANNEL, expected)
    return {
        "seconds": elapsed,
        "subscribe_seconds": subscribed,
        "connects": connects,
        "bytes": sum(len(body) for body in bodies[1:]),
    }


def _summary(runs: list[dict[str, float]]) -> dict[str, Any]:
    ms = [run["seconds"] * 1000 for run in runs]
    summary: dict[str, Any] = {
        "median_ms": round(statistics.median(ms), 1),
        "max_ms": round(max(ms), 1),
        "runs_ms": [round(v, 1) for v in ms],
        "bytes_received": runs[-1]["bytes"],
    }
    if "subscribe_seconds" in runs[0]:
        sub = [run["subscribe_seconds"] * 1000 for run in runs]
        summary["subscribe_reply_median_ms"] = round(statistics.median(sub), 1)
        summary["connects"] = max(int(run["connects"]) for run in runs)
    return summary


def measure_replay(messages: int, payload: int, repeats: int) -> dict[str, Any]:
    """Fills one channel's history, then times ``repeats`` fresh subscribers per transport,
    alternating the transports so that other work on the machine hits both alike."""
    rule = f"/replay/**:{messages}"
    with cli_server(rule) as (port, _pid):
        return _replays(rule, port, port, messages, payload, repeats)


def measure_replay_on_redis(messages: int, payload: int, repeats: int) -> dict[str, Any]:
    """As ``measure_replay``, on the Redis engine: published through one process, replayed
    through another."""
    rule = f"/replay/**:{messages}"
    redis = RedisServer()
    try:
        with (
            cli_server(rule, redis.url) as (publisher, _),
            cli_server(rule, redis.url) as (subscriber, _),
        ):
            figures = _replays(rule, publisher, subscriber, messages, payload, repeats)
        return {"engine": "redis", **figures}
    finally:
        redis.stop()


def _replays(
    rule: str, publisher: int, subscriber: int, messages: int, payload: int, repeats: int
) -> dict[str, Any]:
    data_bytes = publish(publisher, CHANNEL, messages, payload)
    runs: dict[str, list[dict[str, float]]] = {"websocket": [], "long-polling": []}
    for _ in range(repeats):
        runs["websocket"].append(replay_websocket(subscriber, messages))
        runs["long-polling"].append(replay_long_polling(subscriber, messages))
    return {
        "history": rule,
        "messages": messages,
        "data_bytes": round(data_bytes, 1),
        "subscribers": repeats,
        **{transport: _summary(found) for transport, found in runs.items()},
    }


def measure_memory(messages: int, payload: int) -> dict[str, Any]:
    """Server RSS growth per retained message, on a server of its own."""
    rule = f"/mem/**:{messages}"
    warm_up = min(messages, 10 * BATCH)
    with cli_server(rule) as (port, pid):
        publish(port, WARM_CHANNEL, warm_up, payload)
        time.sleep(1)
        before = _rss_kib(pid)
        data_bytes = publish(port, MEMORY_CHANNEL, messages, payload)
        time.sleep(2)  # counts what stays resident
        after = _rss_kib(pid)
        kept = _count_retained(port, messages)
    if kept != messages:
        raise RuntimeError(f"the history kept {kept} of {messages} messages")
    return {
        "history": rule,
        "messages": messages,
        "data_bytes": round(data_bytes, 1),
        "warm_up_publishes": warm_up,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "bytes_per_message": round((after - before) * 1024 / messages),
    }


def _count_retained(port: int, expected: int) -> int:
    """How many messages a replay of MEMORY_CHANNEL brings: that nothing was pushed out."""
    client = HttpClient(port)
    try:
        client.handshake()
        client.post([_subscribe_all(client.client_id, MEMORY_CHANNEL)])
        kept = 0
        while kept < expected:
            # Answered at once, with what is queued: an empty reply means nothing more came.
            body = client.post([_connect(client.client_id, "long-polling", at_once=True)])
            found = body.count(_marker(MEMORY_CHANNEL))
            if not found:
                break
            kept += found
        return kept
    finally:
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--messages", type=int, default=10_000, help="messages retained, then replayed (10,000)"
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="fresh subscribers per transport (5)"
    )
    parser.add_argument(
        "--payload", type=int, default=100, help="bytes of object data per message (100)"
    )
    parser.add_argument(
        "--memory-messages",
        type=int,
        default=100_000,
        help="messages retained for the memory figure (100,000; 0 skips it)",
    )
    parser.add_argument(
        "--redis", action="store_true", help="the Redis engine's history (no memory figure)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="where the figures go (benches/replay.json, or replay-redis.json with --redis; "
        "RESULTS.md is rewritten only for one in benches/)",
    )
    args = parser.parse_args()
    if args.out is None:
        args.out = ROOT / "benches" / ("replay-redis.json" if args.redis else "replay.json")
    # The clients' core: the server has core 0 (taskset), as in the other benchmarks.
    os.sched_setaffinity(0, {int(LOADGEN_CORE)})
    out: dict[str, Any] = {
        "command": " ".join(["python", "benches/replay.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": describe_machine(),
        "pinning": {"server": f"taskset -c {SERVER_CORE}", "clients": f"core {LOADGEN_CORE}"},
    }
    print("replay ...", file=sys.stderr, flush=True)
    measure = measure_replay_on_redis if args.redis else measure_replay
    out["replay"] = measure(args.messages, args.payload, args.repeats)
    if args.memory_messages and not args.redis:
        print("memory ...", file=sys.stderr, flush=True)
        out["memory"] = measure_memory(args.memory_messages, args.payload)
    out["load_average_at_end"] = os.getloadavg()
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    _print(out)
    if args.out.parent == ROOT / "benches":
        write_report(ROOT / "benches" / "results.json")
        print("wrote benches/RESULTS.md", file=sys.stderr)
    return 0


def _print(out: dict[str, Any]) -> None:
    replay = out["replay"]
    print(
        f"replay of {replay['messages']:,} messages ({replay['data_bytes']:.0f} bytes of data), "
        f"{replay['subscribers']} subscribers each; load average at start "
        f"{out['machine']['load_average_at_start']}"
    )
    for transport in ("websocket", "long-polling"):
        case = replay[transport]
        print(
            f"  {transport:12} median {case['median_ms']} ms, max {case['max_ms']} ms "
            f"({case['runs_ms']})"
        )
    memory = out.get("memory")
    if memory:
        print(
            f"memory: {memory['bytes_per_message']} bytes per retained message "
            f"({memory['messages']:,} messages, RSS {memory['rss_before_kib']} -> "
            f"{memory['rss_after_kib']} KiB)"
        )


if __name__ == "__main__":
    sys.exit(main())
