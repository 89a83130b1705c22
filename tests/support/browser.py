"""The ``--demo`` chat page in a real browser: headless Chromium (Debian's ``chromium``) driven
by Playwright. A user is a browser context of their own on the page; helpers type lines and
wait, bounded, until every page lists the conversation. The page loads the npm CometD library
the server serves from tests/js/node_modules (``--cometd-js``); nothing off-site is fetched."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from .drivers import JS_DIR, require

# ``expect`` is re-exported for the tests; without Playwright, chromium() skips (or fails in
# CI) before anything uses it.
try:
    from playwright.async_api import Browser, Page, Route, async_playwright
    from playwright.async_api import expect as expect
except ImportError:
    PLAYWRIGHT_MISSING: str | None = "playwright is not installed (pip install playwright)"
else:
    PLAYWRIGHT_MISSING = None

COMETD_JS = JS_DIR / "node_modules" / "cometd"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# The transports the page can be told to use (?transport=...).
TRANSPORTS = ["websocket", "long-polling", "callback-polling"]

# Every wait is bounded (milliseconds, as Playwright counts).
CONNECT_MS = 20_000
DELIVERY_MS = 10_000

# Keeps the page's WebSockets, and the channel and client id of every message it sends over
# them, for the test to look at.
RECORD_SOCKETS = """
window.recordedSockets = [];
window.recordedChannels = [];
window.recordedClientIds = [];
window.WebSocket = class extends window.WebSocket {
  constructor(...args) {
    super(...args);
    window.recordedSockets.push(this);
  }
  send(data) {
    for (const message of JSON.parse(data)) {
      window.recordedChannels.push(message.channel);
      if (message.clientId) window.recordedClientIds.push(message.clientId);
    }
    super.send(data);
  }
};
"""


def require_cometd_js() -> None:
    """Skips (or fails, in CI) without the npm CometD library the page loads."""
    if not (COMETD_JS / "cometd.js").is_file():
        require("CometD JS library", f"{COMETD_JS} is missing (run: npm ci --prefix tests/js)")


def _chromium_missing() -> str | None:
    if PLAYWRIGHT_MISSING is not None:
        return PLAYWRIGHT_MISSING
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    return None


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    require("Chromium with Playwright", _chromium_missing())
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class User:
    name: str
    page: Page
    errors: list[str] = field(default_factory=list)
    offsite: list[str] = field(default_factory=list)


async def open_chat(
    browser: Browser, url: str, query: str, name: str, init_script: str | None = None
) -> User:
    """A user in a browser context of their own, on the demo page at ``url`` (the server's
    origin, ``http://host:port``), connected and subscribed. ``init_script`` runs in the page
    before its own scripts."""
    context = await browser.new_context(viewport={"width": 760, "height": 560})
    if init_script is not None:
        await context.add_init_script(init_script)
    page = await context.new_page()
    user = User(name, page)
    page.on("pageerror", lambda error: user.errors.append(str(error)))

    async def local_only(route: Route) -> None:
        # The test must not touch the network: the library comes from --cometd-js.
        if route.request.url.startswith(url + "/"):
            await route.continue_()
        else:
            user.offsite.append(route.request.url)
            await route.abort()

    await context.route("**/*", local_only)
    await page.goto(f"{url}/{query}", timeout=CONNECT_MS)
    await expect(page.locator("#status")).to_have_text("Connected", timeout=CONNECT_MS)
    await page.get_by_role("textbox", name="Name", exact=True).fill(name)
    return user


async def say(user: User, text: str) -> None:
    await user.page.get_by_role("textbox", name="Message", exact=True).fill(text)
    await user.page.get_by_role("button", name="Send").click()


async def expect_chat(users: list[User], lines: list[tuple[str, str]]) -> None:
    """Every user's page lists exactly ``lines`` (user, text), in order."""
    for user in users:
        items = user.page.locator("#messages li")
        await expect(items.locator(".user")).to_have_text(
            [who for who, _ in lines], timeout=DELIVERY_MS
        )
        await expect(items.locator(".text")).to_have_text(
            [text for _, text in lines], timeout=DELIVERY_MS
        )


CONVERSATION = [
    "Hi Bob, can you read me?",
    "Loud and clear, Alice.",
    "Every line here was pushed by starlette-cometd.",
    "Schön \N{EM DASH} and not a single page reload.",
]


async def chat(
    alice: User, bob: User, said: list[tuple[str, str]] | None = None
) -> list[tuple[str, str]]:
    """A short conversation, Alice and Bob in turn; each line reaches both pages before the
    next is typed. ``said``: the lines both pages list already. Returns all the lines."""
    users = [alice, bob]
    lines = list(said or [])
    for turn, text in enumerate(CONVERSATION):
        speaker = users[turn % 2]
        await say(speaker, text)
        lines.append((speaker.name, text))
        await expect_chat(users, lines)
    # Each page marks its own user's lines.
    for user in users:
        mine = user.page.locator("#messages li.mine .user")
        expected = [who for who, _ in lines if who == user.name]
        await expect(mine).to_have_text(expected, timeout=DELIVERY_MS)
    for user in users:
        assert user.errors == [], f"{user.name}'s page threw: {user.errors}"
        assert user.offsite == [], f"{user.name}'s page fetched off-site URLs: {user.offsite}"
    return lines
