"""The installed package serves a real client: run by .ci/wheel_smoke.sh with the Python of a
virtual environment holding only the package (from the wheel or the sdist) and aiocometd.

It starts the ``starlette-cometd`` CLI on a free port, checks that a raw handshake is answered,
then has aiocometd handshake, subscribe, publish and receive its own message, over long-polling
and over WebSocket. Any failure exits non-zero with a line saying which step failed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, NoReturn

from aiocometd_noloop import Client, ConnectionType  # type: ignore[import-untyped]

WAIT = 15.0


def fail(step: str, detail: object = "") -> NoReturn:
    print(f"wheel smoke: FAILED: {step}{': ' if detail else ''}{detail}", file=sys.stderr)
    sys.exit(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def handshake(url: str) -> list[dict[str, Any]]:
    body = json.dumps(
        [
            {
                "channel": "/meta/handshake",
                "version": "1.0",
                "supportedConnectionTypes": ["long-polling"],
            }
        ]
    ).encode()
    request = urllib.request.Request(
        url, body, headers={"content-type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=WAIT) as response:
        reply: list[dict[str, Any]] = json.loads(response.read())
        return reply


def wait_for_handshake(url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + WAIT
    while True:
        if server.poll() is not None:
            fail("the CLI exited before answering", f"status {server.returncode}")
        try:
            reply = handshake(url)
            break
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                fail(f"the CLI did not answer a handshake at {url} within {WAIT} s")
            time.sleep(0.1)
    if not (reply and reply[0].get("successful") and len(reply[0].get("clientId", "")) == 40):
        fail("the CLI's handshake reply is not a success with a client id", reply)
    print(f"wheel smoke: the CLI answered a handshake: clientId {reply[0]['clientId']}")


def quiet_client_teardown(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    # aiocometd's done-callbacks re-raise the cancellation of its own tasks as it closes, which
    # asyncio prints as errors: noise that would only mislead a reader of the CI log.
    if not isinstance(context.get("exception"), asyncio.CancelledError):
        loop.default_exception_handler(context)


async def exchange(url: str, types: list[Any], expected: Any) -> None:
    """aiocometd subscribes, publishes and receives its own message."""
    asyncio.get_running_loop().set_exception_handler(quiet_client_teardown)
    name = expected.value
    async with Client(url, types, connection_timeout=WAIT) as client:
        if client.connection_type is not expected:
            fail(f"aiocometd did not settle on {name}", client.connection_type)
        await client.subscribe("/smoke")
        sent = {"text": f"hello over {name}"}
        await client.publish("/smoke", sent)
        message = await asyncio.wait_for(client.receive(), WAIT)
        if message.get("channel") != "/smoke" or message.get("data") != sent:
            fail(f"aiocometd over {name} received something else", message)
    print(f"wheel smoke: aiocometd exchanged a message over {name}")


def main() -> None:
    cli = Path(sys.executable).parent / "starlette-cometd"
    if not cli.exists():
        fail(f"the package installed no {cli}")
    port = free_port()
    server = subprocess.Popen([str(cli), "--host", "127.0.0.1", "--port", str(port)])
    try:
        wait_for_handshake(f"http://127.0.0.1:{port}/cometd", server)
        # localhost, not 127.0.0.1: aiohttp's cookie jar drops cookies set by an IP-address
        # host, and the server needs its browser cookie back.
        url = f"http://localhost:{port}/cometd"
        for types, expected in (
            ([ConnectionType.LONG_POLLING], ConnectionType.LONG_POLLING),
            ([ConnectionType.WEBSOCKET, ConnectionType.LONG_POLLING], ConnectionType.WEBSOCKET),
        ):
            try:
                asyncio.run(asyncio.wait_for(exchange(url, types, expected), 2 * WAIT))
            except Exception as error:  # any client failure fails the smoke test, named
                fail(f"aiocometd over {expected.value}", repr(error))
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(WAIT)
        except subprocess.TimeoutExpired:
            server.kill()
            fail(f"the CLI did not stop within {WAIT} s of SIGTERM")
    print(f"wheel smoke: passed with {os.path.dirname(cli)}")


if __name__ == "__main__":
    main()
