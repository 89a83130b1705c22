"""Logs (issue 13): the CLI logs one line per session made or ended at INFO, nothing per
message, as text or as one JSON object per line (--log-format json); each unsuccessful reply is
a line naming the session, the channel and the Bayeux error, a bounded number a second."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time

import httpx
import pytest

from starlette_cometd import LongPollingServiceContextBuilder, SecurityPolicy, ServerSession
from starlette_cometd.hooks import Message
from starlette_cometd.logs import REFUSALS_PER_SECOND
from support.bayeux import handshake, post
from support.cli import start_cli, stop_cli, wait_listening
from support.logs import refusal_records, refusals_logged
from support.servers import ServeFactory, free_port
from support.ws_client import exchange, socket, ws_session


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
    # (The readiness probe's connect is refused: a line of the errors' log.)
    ours = [line for line in lines if "session " in line and " refused: " not in line]
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


class NoSecrets(SecurityPolicy):
    async def can_publish(self, session: ServerSession, channel: str, message: Message) -> bool:
        return not channel.startswith("/secret")


async def test_unsuccessful_replies_name_the_session_channel_and_error(
    serve: ServeFactory, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="starlette_cometd.errors")
    # The core's refusals (no hooks: the fast path), then the application's (a policy).
    server = await serve(LongPollingServiceContextBuilder())
    client_id = await handshake(http, server.url)
    await post(http, server.url, {"channel": "/a\nforged line", "clientId": client_id})
    await post(http, server.url, {"channel": "/a", "clientId": "f" * 40, "data": 1})
    await post(http, server.url, {"channel": "/a", "clientId": "junk\n", "data": 1})
    assert (await http.post(server.url, content=b"[{")).status_code == 400
    async with socket(server) as ws:  # over a WebSocket too, on its own session
        on_socket = await ws_session(ws)
        await exchange(ws, {"channel": "/a/*", "clientId": on_socket, "data": 1})
        server.context.security_policy = NoSecrets()
        await exchange(ws, {"channel": "/secret/y", "clientId": on_socket, "data": 1})
    await post(http, server.url, {"channel": "/secret/x", "clientId": client_id, "data": 1})
    assert (await http.post(server.url, content=b"[{")).status_code == 400  # with hooks now
    got = refusals_logged(caplog)
    assert got == [
        (client_id, "/a\\nforged line", "405::channel_invalid"),
        ("f" * 40, "/a", "402::session_unknown"),
        (None, "/a", "402::session_unknown"),  # not a client id: not named as one
        (None, None, "400::json_malformed"),
        (on_socket, "/a/*", "405::channel_invalid"),
        (on_socket, "/secret/y", "403:denied_by_security_policy:publish_denied"),
        (client_id, "/secret/x", "403:denied_by_security_policy:publish_denied"),
        (None, None, "400::json_malformed"),
    ]
    lines = [r.getMessage() for r in refusal_records(caplog)]
    assert lines[0] == f"session {client_id}: /a\\nforged line refused: 405::channel_invalid"
    assert lines[3] == "session -: a message refused: 400::json_malformed"
    assert all(r.levelno == logging.INFO for r in refusal_records(caplog))


async def test_a_flood_of_bad_requests_is_logged_a_few_lines_a_second(
    serve: ServeFactory, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="starlette_cometd.errors")
    server = await serve(LongPollingServiceContextBuilder())
    # 40 bad messages in each request, and 25 requests: 1,000 unsuccessful replies.
    bad = [{"channel": "/a", "clientId": "0" * 40, "data": n} for n in range(40)]
    started = time.monotonic()
    for _ in range(25):
        await post(http, server.url, *bad)
    spanned = math.ceil(time.monotonic() - started) + 1  # the seconds the flood touched
    # No refusal follows: the sweeper, each second, logs how many were left out.
    await asyncio.sleep(2.1)
    lines = [r.getMessage() for r in refusal_records(caplog)]
    left_out = [line for line in lines if line.endswith("unsuccessful replies were not logged")]
    assert left_out, lines
    logged = len(lines) - len(left_out)
    assert logged <= REFUSALS_PER_SECOND * spanned, "a few seconds' lines, not one per reply"
    # None is lost from the account: every reply is either a line or counted in one.
    assert logged + sum(int(line.split()[0]) for line in left_out) == 1000
    assert server.context.engine.error_counts()["402:session_unknown"] == 1000


async def test_json_lines_carry_the_session_channel_and_error() -> None:
    port = free_port()
    pipe = asyncio.subprocess.PIPE
    process = await start_cli(port, "--log-format", "json", stdout=pipe, stderr=pipe)
    url = f"http://127.0.0.1:{port}/cometd"
    try:
        await wait_listening(url, process)
        async with httpx.AsyncClient(timeout=10) as http:
            await post(http, url, {"channel": "/chat", "clientId": "a" * 40, "data": 1})
    finally:
        await stop_cli(process)
    assert process.stderr is not None
    records = [json.loads(line) for line in (await process.stderr.read()).splitlines()]
    errors = [r for r in records if r["logger"] == "starlette_cometd.errors"]
    [refused] = [r for r in errors if r.get("channel") == "/chat"]
    assert refused["client_id"] == "a" * 40 and refused["level"] == "info"
    assert (refused["channel"], refused["error"]) == ("/chat", "402::session_unknown")
