"""Python and core CPU per long-polling delivery on the native HTTP protocol, without sockets,
for two or more builds side by side.

ab_cpu.py measures a real server under a real load, which also counts the kernel's work and
moves by ±10% between rounds on a shared machine. This drives the protocol class the CLI runs
straight, as uvicorn would, on in-memory transports: 1,000 clients in 100 rooms, each round
every client's connect is held, one message is published to each room, and the held connects
are answered. What is timed is the process's CPU per delivery, which is the part a change of
ours can move; the kernel's part is the same for every build.

    python benches/ab_native_cycle.py --build new=/work/venv-main/bin/python \\
        --build old=/work/venv-old/bin/python --rounds 5

Each build is a Python interpreter with starlette-cometd installed (a venv); runs alternate
between the builds, each in a fresh process. With ``--instructions`` it counts instead the
instructions executed per delivery under valgrind (the difference between a short and a long
run, so that start-up cancels out): slow, but the same on a busy machine as on a quiet one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

CLIENTS = 1000
ROOMS = 100


class _Transport(asyncio.Transport):
    """One connection's transport in memory: keeps what was written until it is read."""

    def __init__(self) -> None:
        super().__init__()
        self.protocol: asyncio.BaseProtocol | None = None
        self.written: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def take(self) -> bytes:
        data = b"".join(self.written)
        self.written.clear()
        return data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None
        return self.protocol

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def can_write_eof(self) -> bool:
        return True


def _post(messages: list[dict[str, Any]], cookie: str | None) -> bytes:
    body = json.dumps(messages).encode()
    head = (
        b"POST /cometd HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n" % len(body)
    )
    if cookie is not None:
        head += b"cookie: BAYEUX_BROWSER=%s\r\n" % cookie.encode()
    return head + b"\r\n" + body


def _reply(transport: _Transport) -> tuple[list[dict[str, Any]], str | None]:
    """The Bayeux messages of the one response written, and the browser cookie it set."""
    raw = transport.take()
    head, _, body = raw.partition(b"\r\n\r\n")
    cookie = None
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"set-cookie: bayeux_browser="):
            cookie = line.split(b"=", 1)[1].split(b";", 1)[0].decode()
    return json.loads(body), cookie


def _protocol_class(app: Any) -> Any:
    try:
        from starlette_cometd import native_http_protocol as make
    except ImportError:  # builds before the re-layout
        from starlette_cometd import fast_http_protocol as make  # type: ignore[attr-defined,no-redef]
    return make(app, "/cometd")


async def _child(rounds: int) -> float:
    import uvicorn
    from uvicorn.server import ServerState

    from starlette_cometd import LongPollingServiceContextBuilder, RouterBuilder

    builder = LongPollingServiceContextBuilder()
    if hasattr(builder, "max_sessions_per_address"):  # 1,000 clients from one address
        builder = builder.max_sessions_per_address(None)
    context = builder.build()
    app = RouterBuilder().build(context)
    config = uvicorn.Config(app, lifespan="off", log_level="warning")
    config.load()
    state = ServerState()
    protocol_class = _protocol_class(app)

    def connection() -> tuple[Any, _Transport]:
        transport = _Transport()
        protocol = protocol_class(config, state, {})
        transport.protocol = protocol
        protocol.connection_made(transport)
        return protocol, transport

    handshake = {
        "channel": "/meta/handshake",
        "version": "1.0",
        "supportedConnectionTypes": ["long-polling"],
    }

    def session() -> tuple[Any, _Transport, str, str | None]:
        protocol, transport = connection()
        protocol.data_received(_post([handshake], None))
        [reply], cookie = _reply(transport)
        return protocol, transport, reply["clientId"], cookie

    clients = []
    for index in range(CLIENTS):
        protocol, transport, client_id, cookie = session()
        room = f"/room/{index % ROOMS}"
        subscribe = {"channel": "/meta/subscribe", "clientId": client_id, "subscription": room}
        protocol.data_received(_post([subscribe], cookie))
        _reply(transport)
        connect = {
            "channel": "/meta/connect",
            "clientId": client_id,
            "connectionType": "long-polling",
        }
        clients.append((protocol, transport, _post([connect], cookie)))
    publisher, publisher_transport, publisher_id, publisher_cookie = session()
    publishes = [
        _post(
            [{"channel": f"/room/{room}", "clientId": publisher_id, "data": {"text": "hello"}}],
            publisher_cookie,
        )
        for room in range(ROOMS)
    ]

    async def one_round() -> int:
        for protocol, _, connect in clients:
            protocol.data_received(connect)
        for publish in publishes:
            publisher.data_received(publish)
            publisher_transport.take()
        for _ in range(3):  # held replies are built on the next loop turn
            await asyncio.sleep(0)
        delivered = 0
        for _, transport, _ in clients:
            delivered += transport.take().count(b'"/room/')
        return delivered

    await one_round()  # the first connect of each client is answered at once
    for _ in range(3):
        await one_round()
    used = 0.0
    delivered = 0
    for _ in range(rounds):
        began = time.process_time()
        delivered += await one_round()
        used += time.process_time() - began
    if delivered != rounds * CLIENTS:
        raise SystemExit(f"delivered {delivered} of {rounds * CLIENTS}")
    return used / delivered * 1e6


def _instructions(python: str, cycles: int) -> int:
    """Instructions a child run of ``cycles`` timed rounds executes, counted by valgrind."""
    command = [
        *("valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"),
        *(python, __file__, "--child", "--cycles", str(cycles)),
    ]
    run = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=True,
        cwd="/tmp",
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    found = re.search(r"I\s+refs:\s+([\d,]+)", run.stderr)
    if found is None:
        raise SystemExit(f"no instruction count from valgrind:\n{run.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def _per_delivery(python: str, cycles: int, instructions: bool) -> float:
    if instructions:
        extra = _instructions(python, cycles + 2) - _instructions(python, 2)
        return extra / (cycles * CLIENTS)
    command = [python, __file__, "--child", "--cycles", str(cycles)]
    run = subprocess.run(command, capture_output=True, text=True, check=True, cwd="/tmp")
    return float(run.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", action="append", help="NAME=PYTHON")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cycles", type=int, default=60, help="timed rounds per run")
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions under valgrind"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        # The loop the CLI runs on (uvicorn picks uvloop when it is installed).
        factory: Callable[[], asyncio.AbstractEventLoop]
        try:
            import uvloop

            factory = uvloop.new_event_loop
        except ImportError:
            factory = asyncio.new_event_loop
        with asyncio.Runner(loop_factory=factory) as runner:
            print(runner.run(_child(args.cycles)))
        return
    builds = dict(build.split("=", 1) for build in args.build or [f"this={sys.executable}"])
    unit = "instructions" if args.instructions else "us"
    figures: dict[str, list[float]] = {name: [] for name in builds}
    for _ in range(args.rounds):
        for name, python in builds.items():
            figures[name].append(_per_delivery(python, args.cycles, args.instructions))
    for name, runs in figures.items():
        shown = " ".join(f"{run:.2f}" for run in runs)
        print(f"{name:10} median {statistics.median(runs):9.2f} {unit} per delivery ({shown})")


if __name__ == "__main__":
    main()
