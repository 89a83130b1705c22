"""The standalone server: ``python -m starlette_cometd`` and the ``starlette-cometd`` script."""

from __future__ import annotations

import asyncio
import shutil
import signal
import time

import httpx

from support.bayeux import connect_message, handshake, post
from support.cli import start_cli, wait_listening
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
    for option in ("--host", "--port", "--path", "--timeout", "--max-interval", "--log-level"):
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
