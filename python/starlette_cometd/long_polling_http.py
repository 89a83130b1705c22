"""The HTTP long-polling transport: one POST carries a batch of Bayeux messages; a lone
``/meta/connect`` is held until messages arrive or its timeout passes."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from .context import LongPollingServiceContext
from .long_polling import Wakeup

JSON_HEADERS = [
    (b"content-type", b"application/json;charset=utf-8"),
    (b"cache-control", b"no-cache, no-store"),
]


class BodyTooLarge(Exception):
    pass


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The request body, refusing (before reading it, where the length is declared) anything
    over ``limit`` bytes."""
    declared = Headers(scope=scope).get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def browser_cookie(headers: Headers, name: str) -> str | None:
    """The value of the browser cookie, if the request carries one."""
    for header in headers.getlist("cookie"):
        for part in header.split(";"):
            key, _, value = part.strip().partition("=")
            if key == name:
                return value.strip().strip('"')
    return None


async def send_body(
    send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def error_body(error: str, detail: str) -> bytes:
    # Built with json-safe literals only: error and detail come from this module.
    return f'[{{"successful":false,"error":"{error}","detail":"{detail}"}}]'.encode()


AdditionalData = Callable[[Request], Any] | None


async def resolve_data(scope: Scope, provider: AdditionalData, value: Any) -> Any:
    """The additional data attached to events: a fixed value, or computed from the request."""
    if provider is None:
        return value
    result = provider(Request(scope))
    if inspect.isawaitable(result):
        result = await result
    return result


async def handle_post(
    context: LongPollingServiceContext,
    scope: Scope,
    receive: Receive,
    send: Send,
    data_provider: AdditionalData,
    data_value: Any,
) -> None:
    """Answers one long-polling POST."""
    if context.closed:
        await send_body(send, 503, error_body("503::server_stopping", "the server is stopping"))
        return
    context.start()
    try:
        body = await read_body(scope, receive, context.max_body_size)
    except BodyTooLarge:
        detail = f"the request body is larger than {context.max_body_size} bytes"
        await send_body(send, 413, error_body("413::request_too_large", detail))
        return
    except ConnectionError:
        return
    headers = Headers(scope=scope)
    outcome = context.engine.process(body, browser_cookie(headers, context.cookie.name))
    data = None
    if outcome.events and context.wants_events:
        data = await resolve_data(scope, data_provider, data_value)
    context.apply(outcome, headers, data)

    extra = []
    if outcome.new_browser is not None:
        extra.append((b"set-cookie", context.cookie.header(outcome.new_browser).encode()))
    held = outcome.hold
    if held is None:
        await send_body(send, outcome.status, outcome.body, extra)
        return
    reason = await context.parking.hold(held, receive)
    drain = reason in (Wakeup.MESSAGES, Wakeup.TIMEOUT)
    reply = context.engine.complete_connect(held, drain)
    if reason is not Wakeup.CLIENT_GONE:
        await send_body(send, 200, reply, extra)
