"""The standalone server: ``python -m starlette_cometd`` and the ``starlette-cometd`` script."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import socket
import time
from urllib.parse import quote

import httpx
import pytest
import websockets

from support.bayeux import connect_message, handshake, post
from support.cli import start_cli, stop_cli, wait_listening
from support.servers import free_port


async def test_cli_serves_and_stops_promptly_releasing_held_connects() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/bayeux"
    process = await start_cli(
        port,
        "--path",
        "/bayeux",
        "--timeout",
        "30",
        "--max-interval",
        "5",
        "--log-level",
        "warning",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await wait_listening(url, process)
        async with httpx.AsyncClient(timeout=20) as http:
            client_id = await handshake(http, url)
            [hs] = await post(http, url, {"channel": "/meta/handshake"})
            assert hs["advice"]["timeout"] == 30000
            # Only the CometD path is served.
            elsewhere = await http.post(url.replace("/bayeux", "/elsewhere"), json=[])
            assert elsewhere.status_code == 404
            held = asyncio.ensure_future(post(http, url, connect_message(client_id)))
            # The server is another process, whose state this test cannot read: the one sleep
            # left that hopes, giving the connect time to arrive and be held before the signal.
            await asyncio.sleep(0.3)
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            [reply] = await asyncio.wait_for(held, 5)
            assert reply["successful"] is True
            assert reply["advice"]["reconnect"] == "retry"
        # uvicorn re-raises the signal it caught once it has shut down cleanly.
        assert await asyncio.wait_for(process.wait(), 10) in (0, -signal.SIGTERM)
        assert process.stderr is not None
        assert b"Traceback" not in await process.stderr.read()
        # Far sooner than the 30 s the connect would otherwise have been held.
        assert time.monotonic() - started < 5
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_console_script_help() -> None:
    script = shutil.which("starlette-cometd")
    assert script is not None, "the starlette-cometd script is installed with the package"
    process = await asyncio.create_subprocess_exec(script, "--help", stdout=asyncio.subprocess.PIPE)
    out, _ = await process.communicate()
    assert process.returncode == 0
    for option in (
        "--host",
        "--port",
        "--path",
        "--timeout",
        "--max-interval",
        "--log-level",
        "--workers",
    ):
        assert option in out.decode()


async def test_cli_session_limits() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/cometd"
    process = await start_cli(
        port,
        "--max-sessions-per-cookie",
        "2",
        "--max-sessions-per-address",
        "0",
        "--log-level",
        "warning",
    )
    try:
        await wait_listening(url, process)
        async with httpx.AsyncClient(timeout=20) as http:
            replies = await post(http, url, *[{"channel": "/meta/handshake"}] * 3)
        assert [reply.get("error") for reply in replies] == [
            None,
            None,
            "403:too_many_sessions_per_cookie:handshake_denied",
        ]
    finally:
        process.terminate()
        await process.wait()


async def exited(port: int, *args: str, seconds: float = 30) -> tuple[int | None, bytes, str]:
    """Runs the CLI until it exits on its own (it is killed, and the wait fails, past
    ``seconds``): its exit status, stdout and stderr."""
    process = await start_cli(
        port, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), seconds)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return process.returncode, out, err.decode()


async def refused(port: int, *args: str) -> str:
    """Runs the CLI, expecting it to refuse its arguments: exit status 2 at once, before any
    port is bound. Returns what it wrote on stderr."""
    status, out, stderr = await exited(port, *args)
    assert status == 2, stderr
    assert out == b""
    # uvicorn never started: it logs both lines at the default log level once it serves.
    assert "CometD endpoint at" not in stderr
    assert "Started server process" not in stderr
    assert "Uvicorn running" not in stderr
    assert "Traceback" not in stderr
    return stderr


async def test_cli_refuses_several_workers_without_a_shared_engine() -> None:
    port = free_port()
    for count in ("2", "8"):
        stderr = await refused(port, "--workers", count)
        assert f"error: --workers {count}: several worker processes need the Redis engine" in (
            stderr
        )
        assert "--redis URL" in stderr
        assert "402::session_unknown" in stderr
    # Nothing listens on the port: the server never started.
    async with httpx.AsyncClient() as http:
        try:
            await http.post(f"http://127.0.0.1:{port}/cometd", json=[])
        except httpx.ConnectError:
            pass
        else:
            raise AssertionError("something answered on the refused server's port")


async def test_cli_refuses_a_worker_count_below_one_or_not_a_number() -> None:
    port = free_port()
    for count, message in (
        ("0", "0: the server needs at least one worker process"),
        ("-3", "-3: the server needs at least one worker process"),
        ("two", "'two' is not a whole number"),
    ):
        stderr = await refused(port, "--workers", count)
        assert f"argument --workers: {message}" in stderr, stderr
        assert "Redis" not in stderr


@pytest.mark.parametrize("tuned", [True, False], ids=["tuned-workers", "default-gc"])
async def test_cli_tunes_the_garbage_collector_of_each_worker(tuned: bool, redis_url: str) -> None:
    """Tuned: two worker processes under a supervisor (they share the engine on Redis), each
    tuning its own collector; with ``--default-gc``, one process that keeps Python's."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/cometd"
    options = ("--workers", "2", "--redis", redis_url) if tuned else ("--default-gc",)
    process = await start_cli(
        port, "--log-level", "debug", *options, stderr=asyncio.subprocess.PIPE
    )
    lines: list[str] = []

    async def collect() -> None:
        assert process.stderr is not None
        async for line in process.stderr:
            lines.append(line.decode())

    reader = asyncio.create_task(collect())
    try:
        await wait_listening(url, process)
        async with httpx.AsyncClient(timeout=20) as http:
            client_id = await handshake(http, url)
            # handshake() made the first connect: this one would be held for the CLI's 20 s,
            # as long as the client's own timeout, unless it asks for none.
            [reply] = await post(http, url, connect_message(client_id, timeout=0))
        assert reply["successful"] is True
        # One worker may serve both requests while the other still starts: stopped then, it
        # would never log its tuning. Each is waited for (30 s at most).
        deadline = asyncio.get_running_loop().time() + 30
        started = 2 if tuned else 1
        while "".join(lines).count("Application startup complete.") < started:
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.05)
    finally:
        await stop_cli(process)
    await reader
    stderr = "".join(lines)
    assert "Traceback" not in stderr
    found = re.findall(
        r"garbage collector: (\d+) objects set aside, young generation collected every (\d+)",
        stderr,
    )
    if not tuned:
        assert found == [], stderr
        return
    # Once in each worker, before it served: the modules and the application, frozen.
    assert len(found) == 2, stderr
    for frozen, young in found:
        assert int(frozen) > 10_000
        assert int(young) == 50_000


async def test_cli_keeps_a_history_for_the_replay_extension() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/cometd"
    process = await start_cli(port, "--history", "/chat/**:2", "--log-level", "warning")
    try:
        await wait_listening(url, process)
        async with httpx.AsyncClient(timeout=20) as http:
            publisher = await handshake(http, url)
            batch = [
                {"channel": "/chat/a", "clientId": publisher, "data": {"n": n}} for n in range(3)
            ]
            await post(http, url, *batch)
            client_id = await handshake(http, url)
            subscribe = {
                "channel": "/meta/subscribe",
                "clientId": client_id,
                "subscription": "/chat/a",
                "ext": {"replay": {"/chat/a": -2}},
            }
            [reply] = await post(http, url, subscribe)
            assert reply["successful"] is True, reply
            replies = await post(http, url, connect_message(client_id, timeout=0))
        assert [r["data"]["n"] for r in replies if r["channel"] == "/chat/a"] == [1, 2]
    finally:
        process.terminate()
        await process.wait()


async def test_cli_refuses_a_bad_history_rule() -> None:
    port = free_port()
    for rule in ("/chat/**:0", "/chat/**:ten", "/chat/**:10:-1"):
        stderr = await refused(port, "--history", rule)
        assert "argument --history:" in stderr, stderr
    stderr = await refused(port, "--history", "/meta/**")
    assert "is not a broadcast channel or pattern" in stderr, stderr


async def test_cli_exits_at_once_when_its_port_is_taken(redis_url: str) -> None:
    """Bound before anything starts: with a cluster's Redis too, the process ends at once
    with uvicorn's startup failure status, rather than hanging in the engine's shutdown."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        for extra in ((), ("--redis", redis_url)):
            status, _, stderr = await exited(port, *extra, seconds=15)
            assert status == 3, stderr
            assert "Address already in use" in stderr


async def test_health_and_metrics_routes_sit_beside_the_endpoint_not_in_front() -> None:
    # The endpoint is matched first: callback-polling and WebSockets are served as without
    # the extra routes, which answer on their own paths; any other path is still 404.
    port = free_port()
    url = f"http://127.0.0.1:{port}/cometd"
    options = ("--health", "/health", "--metrics", "/metrics", "--log-level", "warning")
    process = await start_cli(port, *options)
    try:
        await wait_listening(url, process)
        async with httpx.AsyncClient(timeout=10) as http:
            message = quote(json.dumps([{"channel": "/meta/handshake"}]), safe="")
            polled = await http.get(f"{url}?jsonp=cb&message={message}")
            assert polled.status_code == 200 and polled.text.startswith("cb(")
            assert '"successful":true' in polled.text
            assert (await http.get(f"http://127.0.0.1:{port}/health")).status_code == 200
            metrics = await http.get(f"http://127.0.0.1:{port}/metrics")
            assert "bayeux_node_handshakes_total 1.0" in metrics.text
            assert (await http.get(f"http://127.0.0.1:{port}/elsewhere")).status_code == 404
        async with websockets.connect(url.replace("http://", "ws://")) as ws:
            await ws.send(json.dumps([{"channel": "/meta/handshake"}]))
            [reply] = json.loads(await ws.recv())
            assert reply["successful"] is True
    finally:
        await stop_cli(process)
