"""Steps shared by the tests that drive real clients (``support.drivers``): starting and
closing clients, the Bayeux commands every driver understands, and waits on the server's side
(``until`` serves every test that waits on server state).

Every step asserts what it must (a successful reply, unless it returns the reply) and waits a
bounded time. Where the drivers report the same thing differently (the transport in use), the
step says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import string
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from starlette_cometd import (
    ClientId,
    CometdEventReceiver,
    Event,
    SessionAdded,
    SessionRemoved,
    Subscribe,
    Unsubscribe,
)
from support.drivers import DriverClient, FayeClient, JavaClient, JsClient, require
from support.drivers import Event as DriverEvent
from support.servers import Server

CLIENT_ID = re.compile(r"[0-9a-f]{40}")

# A JVM and Jetty start in about a second; leave room for a loaded machine.
JAVA_START_TIMEOUT = 30.0
START_TIMEOUT = 10.0

C = TypeVar("C", bound=DriverClient)
E = TypeVar("E", SessionAdded, SessionRemoved, Subscribe, Unsubscribe)


# --- Starting clients -----------------------------------------------------------------------


class ClientPool:
    """Starts driver clients and closes them all at the end. A fixture that uses one should
    depend on ``serve``, so that its clients are closed (and disconnect) before servers stop."""

    def __init__(self) -> None:
        self._started: list[DriverClient] = []
        self._offered: dict[str, list[str]] = {}

    async def start(
        self,
        client: C,
        url: str,
        append_message_type: bool = True,
        *,
        transports: list[str] | None = None,
        options: dict[str, Any] | None = None,
        extensions: list[str] | None = None,
    ) -> C:
        """Starts ``client`` configured for ``url``; see :meth:`DriverClient.start`."""
        self._started.append(client)
        # The JVM starts slower than Node.
        timeout = JAVA_START_TIMEOUT if isinstance(client, JavaClient) else START_TIMEOUT
        await client.start(
            url,
            append_message_type,
            transports=transports,
            options=options,
            extensions=extensions,
            timeout=timeout,
        )
        return client

    async def start_in_mode(
        self, mode: Mode, url: str, options: dict[str, Any] | None = None
    ) -> DriverClient:
        """Starts a client of ``mode``'s kind on its transports, for the server at ``url``;
        over WebSocket, only if the server offers it (see :meth:`require_offered`)."""
        client = mode.client()
        require(client.name, client.missing())
        if mode.websocket:
            await self.require_offered(url, client.name, mode.transport)
        if mode.kind == "faye":
            # Faye retries a failed request after 1 s, not its default 5 s.
            options = {"retry": 1, **(options or {})}
        return await self.start(
            client, url, mode.append, transports=mode.transports(), options=options
        )

    async def require_offered(self, url: str, who: str, transport: str) -> None:
        """Skips (or fails, under STARLETTE_COMETD_REQUIRE_CLIENTS=1) unless the handshake of
        the server at ``url`` offers ``transport``; asks each server once."""
        if url not in self._offered:
            self._offered[url] = await offered_connection_types(url)
        types = self._offered[url]
        if transport not in types:
            require(
                f"{who} over {transport}",
                f"the server's handshake does not offer {transport!r} (it offers {types})",
            )

    async def close(self) -> None:
        """Closes every client started, in order."""
        for client in self._started:
            await client.close()


@contextlib.asynccontextmanager
async def client_pool() -> AsyncIterator[ClientPool]:
    """A :class:`ClientPool` whose clients are closed on exit."""
    pool = ClientPool()
    try:
        yield pool
    finally:
        await pool.close()


async def offered_connection_types(url: str) -> list[str]:
    """The connection types the handshake reply of the server at ``url`` offers. The probe's
    session is disconnected at once, so it does not linger in the server's counters."""
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(
            url,
            json=[
                {
                    "channel": "/meta/handshake",
                    "version": "1.0",
                    "supportedConnectionTypes": ["websocket", "long-polling"],
                }
            ],
        )
        [reply] = response.json()
        assert reply["successful"], reply
        types: list[str] = reply["supportedConnectionTypes"]
        response = await http.post(
            url, json=[{"channel": "/meta/disconnect", "clientId": reply["clientId"]}]
        )
        [bye] = response.json()
        assert bye["successful"], bye
    return types


# --- Bayeux commands ------------------------------------------------------------------------


def instance_of(instance: str | None) -> dict[str, Any]:
    """The ``instance`` field that names a JS driver's CometD instance, if any."""
    return {} if instance is None else {"instance": instance}


async def handshake_reply(client: DriverClient, ext: dict[str, Any] | None = None) -> DriverEvent:
    """Handshakes (with ``ext``, if given) and returns the successful ``handshake`` event."""
    cmd: dict[str, Any] = {"cmd": "handshake"}
    if ext is not None:
        cmd["ext"] = ext
    await client.send(cmd)
    reply = await client.expect("handshake")
    assert reply["successful"], reply
    assert CLIENT_ID.fullmatch(reply["clientId"]), reply
    # Consume the listener's copy too, so that a later expect() finds only re-handshakes.
    await client.expect("meta", listener="/meta/handshake", clientId=reply["clientId"])
    return reply


async def handshake(client: DriverClient, ext: dict[str, Any] | None = None) -> str:
    """Handshakes (with ``ext``, if given) and returns the client id."""
    client_id: str = (await handshake_reply(client, ext))["clientId"]
    return client_id


async def subscribe(client: DriverClient, channel: str, instance: str | None = None) -> None:
    """Subscribes to ``channel``, successfully."""
    await client.send({"cmd": "subscribe", "channel": channel, **instance_of(instance)})
    reply = await client.expect("subscribed", channel=channel, **instance_of(instance))
    assert reply["successful"], reply


async def unsubscribe(client: DriverClient, channel: str) -> None:
    """Unsubscribes from ``channel``, successfully."""
    await client.send({"cmd": "unsubscribe", "channel": channel})
    reply = await client.expect("unsubscribed", channel=channel)
    assert reply["successful"], reply


async def publish_reply(
    client: DriverClient, channel: str, data: Any, timeout: float = 10
) -> DriverEvent:
    """Publishes and returns the ``published`` event, successful or not."""
    await client.send({"cmd": "publish", "channel": channel, "data": data})
    return await client.expect("published", channel=channel, timeout=timeout)


async def publish(client: DriverClient, channel: str, data: Any, timeout: float = 10) -> None:
    """Publishes, successfully."""
    reply = await publish_reply(client, channel, data, timeout)
    assert reply["successful"], reply


async def status(client: DriverClient, instance: str | None = None) -> DriverEvent:
    """The driver's ``status`` event."""
    await client.send({"cmd": "status", **instance_of(instance)})
    return await client.expect("status", **instance_of(instance))


def transport_key(client: DriverClient) -> str:
    """The field of a ``status`` event naming the transport in use: each driver uses its own
    client's term."""
    if isinstance(client, JavaClient):
        return "transport"
    if isinstance(client, FayeClient):
        return "connectionType"
    return "transportType"


async def check_transport(client: DriverClient, transport: str) -> None:
    """The client uses ``transport`` now."""
    state = await status(client)
    assert state[transport_key(client)] == transport, state


async def settled_status(
    client: DriverClient, key: str, wanted: Any, timeout: float = 10
) -> DriverEvent:
    """The client's status once its ``key`` is ``wanted``, for a state a client reaches on its
    own a little later (Faye upgrading to WebSocket after its handshake, say)."""
    deadline = time.monotonic() + timeout
    while True:
        state = await status(client)
        if state[key] == wanted:
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"{key} still {state[key]!r} after {timeout}s, not {wanted!r}")
        await asyncio.sleep(0.02)


def received(client: DriverClient, channel: str) -> list[DriverEvent]:
    """Every message event the client has read so far on ``channel``."""
    return [e for e in client.events if e["event"] == "message" and e["channel"] == channel]


def received_data(client: DriverClient, channel: str) -> list[Any]:
    """The data of every message the client has read so far on ``channel``."""
    return [e["data"] for e in received(client, channel)]


# --- Clients by kind and transport ------------------------------------------------------


@dataclass(frozen=True)
class Mode:
    """One client over one transport."""

    kind: str  # "js", "java" or "faye"
    transport: str  # "long-polling" or "websocket"
    # appendMessageTypeToURL (meta requests to /cometd/handshake, ...): the JS client's choice.
    # The Java client always appends over HTTP; Faye never does (both ignore the option).
    append: bool = True

    @property
    def id(self) -> str:
        suffix = "-append" if self.kind == "js" and self.append and not self.websocket else ""
        return f"{self.kind}-{self.transport}{suffix}"

    @property
    def websocket(self) -> bool:
        return self.transport == "websocket"

    def transports(self) -> list[str]:
        """The client's transports, in order of preference."""
        if self.websocket and self.kind in ("js", "faye"):
            # JS: WebSocket with its long-polling fallback, the client's default preference.
            # Faye: always handshakes over HTTP, then upgrades.
            return ["websocket", "long-polling"]
        return [self.transport]

    def client(self) -> DriverClient:
        return {"js": JsClient, "java": JavaClient, "faye": FayeClient}[self.kind]()


MODES = [
    Mode("js", "long-polling", append=True),
    Mode("js", "long-polling", append=False),
    Mode("js", "websocket"),
    Mode("java", "long-polling"),
    Mode("java", "websocket"),
    Mode("faye", "long-polling"),
    Mode("faye", "websocket"),
]


async def check_mode_transport(client: DriverClient, mode: Mode) -> None:
    """The client uses the mode's transport."""
    if mode.kind == "faye":
        # Faye opens its websocket after each handshake and switches to it once it is up.
        await settled_status(client, transport_key(client), mode.transport)
    else:
        await check_transport(client, mode.transport)


async def handshake_in_mode(client: DriverClient, mode: Mode) -> str:
    """Handshakes, checks that the client uses the mode's transport, and returns its id."""
    client_id = await handshake(client)
    await check_mode_transport(client, mode)
    return client_id


# --- The server's side ----------------------------------------------------------------------


async def next_event(
    rx: CometdEventReceiver, kind: type[E], client_id: str | None = None, timeout: float = 10
) -> E:
    """The next server event of type ``kind`` (for ``client_id``, if given), skipping others."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no {kind.__name__} event within {timeout}s")
        try:
            event: Event | None = await asyncio.wait_for(rx.recv(), remaining)
        except TimeoutError:
            raise AssertionError(f"no {kind.__name__} event within {timeout}s") from None
        assert event is not None, "the context closed"
        if isinstance(event, kind) and (
            client_id is None or event.client_id == ClientId(client_id)
        ):
            return event


async def until(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    """Polls a server-side condition that has no event (e.g. a connect being held)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting until {what}")
        await asyncio.sleep(0.02)


def varied_ascii(size: int) -> str:
    """``size`` characters of varied ASCII, so that a truncated or reordered chunk of a large
    message cannot go unnoticed."""
    alphabet = string.ascii_letters + string.digits
    return "".join(alphabet[(i * 7 + i // 61) % len(alphabet)] for i in range(size))


async def connects_held(server: Server, count: int = 1, timeout: float = 10) -> None:
    """Waits until the server holds ``count`` connects (a connect sent a moment ago has
    arrived and is parked), rather than sleeping and hoping it has."""
    await until(
        lambda: server.context.stats()["held"] == count, f"{count} connect(s) held", timeout
    )
