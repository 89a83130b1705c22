"""Logs (issue 13): the CLI logs one line per session made or ended at INFO, nothing per
message, as text or as one JSON object per line (--log-format json)."""

from __future__ import annotations

import asyncio
import json

import httpx

from support.bayeux import handshake, post
from support.cli import start_cli, stop_cli, wait_listening
from support.servers import free_port


async def run_and_read_log(*options: str) -> list[str]:
    """Starts the CLI with ``options``, makes one session, publishes, disconnects it, stops
    the server and returns what it logged."""
    port = free_port()
    pipe = asyncio.subprocess.PIPE
    process = await start_cli(port, *options, stdout=pipe, stderr=pipe)
    url = f"http://127.0.0.1:{port}/cometd"
    try:
        await wait_listening(url, process)
        async with httpx.AsyncClient(timeout=10) as http:
            client_id = await handshake(http, url)
            for n in range(3):
                await post(http, url, {"channel": "/a", "clientId": client_id, "data": n})
            await post(http, url, {"channel": "/meta/disconnect", "clientId": client_id})
    finally:
        await stop_cli(process)
    assert process.stdout is not None and process.stderr is not None
    # uvicorn writes its access log to standard output, and the rest to standard error.
    out, err = await process.stdout.read(), await process.stderr.read()
    return (err + out).decode().splitlines()


async def test_each_session_made_and_ended_is_one_line() -> None:
    lines = await run_and_read_log("--log-level", "info")
    ours = [line for line in lines if "session " in line]
    assert len(ours) == 2, lines
    assert ours[0].endswith(": handshake") and "INFO" in ours[0]
    assert ours[1].endswith(": ended (disconnected)")


async def test_json_lines_for_a_log_collector() -> None:
    lines = await run_and_read_log("--log-level", "info", "--log-format", "json")
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert {"time", "level", "logger", "message"} <= records[0].keys()
    sessions = [r for r in records if r["logger"] == "starlette_cometd.sessions"]
    assert [r["message"].rsplit(": ", 1)[1] for r in sessions] == [
        "handshake",
        "ended (disconnected)",
    ]
    assert all(r["level"] == "info" and r["time"].endswith("Z") for r in sessions)


async def test_the_access_log_is_one_line_per_request_when_asked() -> None:
    quiet = await run_and_read_log("--log-level", "info")
    assert not [line for line in quiet if "POST /cometd" in line], "off by default"
    lines = await run_and_read_log("--log-level", "info", "--access-log")
    served = [line for line in lines if '"POST /cometd HTTP/1.1" 200' in line]
    # The handshake, three publishes and the disconnect (the readiness probe's too).
    assert len(served) >= 5, lines
    assert served[-1].split(" - ")[0].split()[-1].startswith("127.0.0.1:"), served[-1]
