"""The ``--demo`` chat page in a real browser: headless Chromium (Debian's ``chromium``)
driven by Playwright, against ``python -m starlette_cometd --demo`` serving the npm CometD
library from tests/js/node_modules. Two users in separate browser contexts chat over each
transport the page can be told to use.

With ``STARLETTE_COMETD_SCREENSHOT=1`` the default-transport test saves docs/demo.png.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from starlette_cometd.demo import CDN_URL, demo_routes
from support.browser import (
    COMETD_JS,
    CONNECT_MS,
    RECORD_SOCKETS,
    TRANSPORTS,
    chat,
    chromium,
    expect,
    open_chat,
    require_cometd_js,
)
from support.drivers import require
from support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT_ENV = "STARLETTE_COMETD_SCREENSHOT"
SCREENSHOT = ROOT / "docs" / "demo.png"


@dataclass
class DemoServer:
    url: str
    connection_types: list[str]
    log: Path


def _wait_for_demo(url: str, process: subprocess.Popen[bytes], timeout: float) -> list[str]:
    """Waits until the page is served; returns the handshake's ``supportedConnectionTypes``."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5) as http:
        while True:
            if process.poll() is not None:
                raise AssertionError(f"the demo server exited with {process.returncode}")
            try:
                http.get(f"{url}/").raise_for_status()
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the demo server did not listen in {timeout}s") from None
                time.sleep(0.05)
        [reply] = http.post(
            f"{url}/cometd",
            json=[
                {
                    "channel": "/meta/handshake",
                    "version": "1.0",
                    "supportedConnectionTypes": TRANSPORTS,
                }
            ],
        ).json()
    assert reply["successful"] is True, reply
    types: list[str] = reply["supportedConnectionTypes"]
    return types


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoServer]:
    """``python -m starlette_cometd --demo --cometd-js tests/js/node_modules/cometd``."""
    require_cometd_js()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("demo") / "server.log"
    command = [
        sys.executable,
        "-m",
        "starlette_cometd",
        "--demo",
        "--cometd-js",
        str(COMETD_JS),
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        types = _wait_for_demo(url, process, timeout=20)
        yield DemoServer(url, types, log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
    assert b"Traceback" not in log.read_bytes(), log.read_text(errors="replace")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_two_users_chat_over_each_transport(demo_server: DemoServer, transport: str) -> None:
    if transport not in demo_server.connection_types:
        require(
            f"the {transport} transport",
            f"the server's handshake offers only {demo_server.connection_types}",
        )
    async with chromium() as browser:
        alice = await open_chat(browser, demo_server.url, f"?transport={transport}", "Alice")
        bob = await open_chat(browser, demo_server.url, f"?transport={transport}", "Bob")
        for user in (alice, bob):
            await expect(user.page.locator("#transport")).to_have_text(transport)
        await chat(alice, bob)


async def test_default_transport_order(demo_server: DemoServer) -> None:
    """Without ``?transport``, the library prefers websocket and falls back to long-polling."""
    expected = "websocket" if "websocket" in demo_server.connection_types else "long-polling"
    async with chromium() as browser:
        alice = await open_chat(browser, demo_server.url, "", "Alice")
        bob = await open_chat(browser, demo_server.url, "", "Bob")
        for user in (alice, bob):
            await expect(user.page.locator("#transport")).to_have_text(expected)
        await chat(alice, bob)
        if os.environ.get(SCREENSHOT_ENV) == "1":
            SCREENSHOT.parent.mkdir(exist_ok=True)
            await alice.page.locator("#text").blur()
            await alice.page.screenshot(path=str(SCREENSHOT), full_page=True, timeout=10_000)


async def test_a_page_whose_socket_drops_keeps_its_session(demo_server: DemoServer) -> None:
    """The server sets the browser cookie on the upgrade's reply; the page's next socket
    carries it, which shows the session is the browser's own: the library's reconnect
    continues it rather than handshaking again."""
    if "websocket" not in demo_server.connection_types:
        require("the websocket transport", f"the server offers {demo_server.connection_types}")
    async with chromium() as browser:
        query = "?transport=websocket"
        alice = await open_chat(browser, demo_server.url, query, "Alice", RECORD_SOCKETS)
        bob = await open_chat(browser, demo_server.url, query, "Bob")
        cookies = await alice.page.context.cookies()
        assert [c["name"] for c in cookies] == ["BAYEUX_BROWSER"], cookies
        await alice.page.evaluate("window.recordedSockets[0].close()")
        await alice.page.wait_for_function(
            "window.recordedSockets.length === 2", timeout=CONNECT_MS
        )
        await expect(alice.page.locator("#status")).to_have_text("Connected", timeout=CONNECT_MS)
        await chat(alice, bob)
        channels = await alice.page.evaluate("window.recordedChannels")
        assert channels.count("/meta/handshake") == 1, channels


async def test_unknown_transport_is_reported(demo_server: DemoServer) -> None:
    async with chromium() as browser:
        context = await browser.new_context()
        page = await context.new_page()
        await page.goto(f"{demo_server.url}/?transport=carrier-pigeon", timeout=CONNECT_MS)
        await expect(page.locator("#status")).to_have_text("Not connected", timeout=CONNECT_MS)
        await expect(page.get_by_role("alert")).to_contain_text("carrier-pigeon")
        await expect(page.get_by_role("button", name="Send")).to_be_disabled()


def _in_process(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://demo")


async def test_page_loads_the_library_from_a_cdn_by_default() -> None:
    async with _in_process(Starlette(routes=demo_routes("/bayeux/"))) as http:
        page = await http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert f'"cometd": "{CDN_URL}"' in page.text
        assert '<meta name="cometd-path" content="/bayeux">' in page.text
        script = await http.get("/chat.js")
        assert script.headers["content-type"].startswith("text/javascript")
        style = await http.get("/style.css")
        assert style.headers["content-type"].startswith("text/css")
        assert (await http.get("/cometd-js/cometd.js")).status_code == 404
        assert (await http.get("/__init__.py")).status_code == 404


async def test_page_loads_a_local_library_with_cometd_js() -> None:
    require_cometd_js()
    async with _in_process(Starlette(routes=demo_routes("/cometd", COMETD_JS))) as http:
        page = await http.get("/")
        assert '"cometd": "/cometd-js/cometd.js"' in page.text
        assert CDN_URL not in page.text
        library = await http.get("/cometd-js/cometd.js")
        assert library.status_code == 200
        # Browsers refuse ES modules served without a JavaScript type.
        assert library.headers["content-type"].startswith("text/javascript")
        assert (await http.get("/cometd-js/Client.js")).status_code == 200


def test_cli_refuses_demo_options_it_cannot_serve() -> None:
    for argv in (
        ["--demo", "--path", "/"],
        ["--demo", "--path", "/cometd-js/x"],
        ["--cometd-js", str(COMETD_JS)],
        ["--demo", "--cometd-js", str(ROOT / "docs-that-do-not-exist")],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "starlette_cometd", *argv],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 2, (argv, result.stderr)
        assert "error:" in result.stderr, (argv, result.stderr)
