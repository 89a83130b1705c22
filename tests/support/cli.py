"""Running the standalone server (``python -m starlette_cometd``) as its own process."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import httpx


async def start_cli(port: int, *args: str, **options: Any) -> asyncio.subprocess.Process:
    """``python -m starlette_cometd --port PORT ARGS...``; ``options`` go to
    :func:`asyncio.create_subprocess_exec` (``stdout=``, ``stderr=``)."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "starlette_cometd", "--port", str(port), *args, **options
    )


async def wait_listening(url: str, process: asyncio.subprocess.Process) -> None:
    """Returns once ``url`` answers a Bayeux POST (a connect of no session: it makes none, and
    the tests count the sessions there are); fails if the process exits first."""
    async with httpx.AsyncClient() as http:
        for _ in range(200):
            assert process.returncode is None, "the server exited"
            try:
                await http.post(url, json=[{"channel": "/meta/connect", "clientId": "0"}])
                return
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    raise AssertionError("the server did not start listening")


async def stop_cli(process: asyncio.subprocess.Process) -> None:
    """Terminates the process and waits for it; kills it if it does not end in 10 s."""
    if process.returncode is not None:
        return
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), 10)
    except TimeoutError:
        process.kill()
        await process.wait()
