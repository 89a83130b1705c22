"""The HTTP transports. ``long-polling``: a POST carries a JSON batch. ``callback-polling``
(JSONP): a GET carries the batch in its ``message`` parameter and the reply is a script calling
the ``jsonp`` callback. Either way, a lone ``/meta/connect`` is held until messages arrive or
its timeout passes."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qs

from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.types import Receive, Scope, Send

from ._core import Outcome
from .context import LongPollingServiceContext
from .cookies import cookie_value
from .dispatch import Reply, Request, handle
from .long_polling import Wakeup

Header = tuple[bytes, bytes]
NO_CACHE: Header = (b"cache-control", b"no-cache, no-store")
JSON_TYPE: Header = (b"content-type", b"application/json;charset=utf-8")
SCRIPT_TYPE: Header = (b"content-type", b"text/javascript;charset=utf-8")
NO_SNIFF: Header = (b"x-content-type-options", b"nosniff")

# JSONP callback names are echoed into a script, so only plain identifiers pass.
CALLBACK_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")

AdditionalData = Callable[[HTTPConnection], Any] | None


class BadRequest(Exception):
    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.body = error_body(error, detail)


def error_body(error: str, detail: str) -> bytes:
    # error and detail are literals of this package, never request data.
    return f'[{{"successful":false,"error":"{error}","detail":"{detail}"}}]'.encode()


async def send_response(
    send: Send, status: int, body: bytes, headers: Sequence[Header], extra: Sequence[Header] = ()
) -> None:
    all_headers = [*headers, *extra, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, body: bytes, extra: Sequence[Header] = ()) -> None:
    await send_response(send, status, body, [JSON_TYPE, NO_CACHE], extra)


def too_large(limit: int) -> BadRequest:
    return BadRequest(
        413, "413::request_too_large", f"the request body is larger than {limit} bytes"
    )


def scan_headers(headers: Sequence[Header], cookie_name: str) -> tuple[int | None, str | None]:
    """The declared body length and the browser cookie, in one pass over the raw headers
    (the hot path; Starlette's ``Headers`` decodes every header on each lookup)."""
    length: int | None = None
    cookie: str | None = None
    for name, value in headers:
        if name == b"content-length" and value.isdigit():
            length = int(value)
        elif name == b"cookie" and cookie is None:
            cookie = cookie_value(value.decode("latin-1"), cookie_name)
    return length, cookie


async def read_body(receive: Receive, declared: int | None, limit: int) -> bytes:
    """The request body, refusing (before reading it, where the length is declared) anything
    over ``limit`` bytes."""
    if declared is not None and declared > limit:
        raise too_large(limit)
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ConnectionError("client went away")
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False) and len(body) <= limit:
        return body  # the usual case: the whole body in one message
    chunks = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    if size > limit:
        raise too_large(limit)
    return b"".join(chunks)


def jsonp_request(scope: Scope, limit: int) -> tuple[str, bytes]:
    """The callback name and the batch of a callback-polling GET."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    callbacks = query.get("jsonp", [])
    if len(callbacks) != 1 or not CALLBACK_NAME.fullmatch(callbacks[0]):
        raise BadRequest(400, "400::jsonp_invalid", "jsonp must match [A-Za-z0-9._-]{1,64}")
    messages = query.get("message", [])
    if len(messages) != 1:
        raise BadRequest(400, "400::message_missing", "one message parameter is required")
    body = messages[0].encode()
    if len(body) > limit:
        raise BadRequest(413, "413::request_too_large", f"the batch is larger than {limit} bytes")
    return callbacks[0], body


async def resolve_data(scope: Scope, provider: AdditionalData, value: Any) -> Any:
    """The additional data attached to events: a fixed value, or computed from the request."""
    if provider is None:
        return value
    result = provider(HTTPConnection(scope))
    if inspect.isawaitable(result):
        result = await result
    return result


async def serve_http(
    context: LongPollingServiceContext,
    scope: Scope,
    receive: Receive,
    send: Send,
    data_provider: AdditionalData,
    data_value: Any,
) -> None:
    """Answers one long-polling POST or callback-polling GET."""
    headers = Headers(scope=scope)
    cors = context.cors.headers(headers) if context.cors.enabled else []
    jsonp = scope["method"] == "GET"
    transport = "callback-polling" if jsonp else "long-polling"
    if context.closed:
        body = error_body("503::server_stopping", "the server is stopping")
        await send_json(send, 503, body, cors)
        return
    context.start()
    declared, browser = scan_headers(scope["headers"], context.cookie.name)
    try:
        if jsonp:
            callback, body = jsonp_request(scope, context.max_body_size)
        else:
            body = await read_body(receive, declared, context.max_body_size)
    except BadRequest as bad:
        await send_json(send, bad.status, bad.body, cors)
        return
    except ConnectionError:
        return

    async def data() -> Any:
        return await resolve_data(scope, data_provider, data_value)

    multiplexed = scope.get("http_version", "1.1") not in ("1.0", "1.1")
    result: Reply | Outcome
    if context.hooks.active:
        request = Request(browser, transport, headers, data, multiplexed=multiplexed)
        result = await handle(context, request, body)
    else:
        # The fast path: one call into the core, effects applied, no per-message Python.
        result = context.engine.process(body, browser, transport, multiplexed)
        event_data = await data() if result.events and context.wants_events else None
        context.apply(result, headers, event_data)

    extra: Sequence[Header] = cors
    if result.new_browser is not None:
        extra = [*cors, (b"set-cookie", context.cookie.header(result.new_browser).encode())]
    status, reply = result.status, result.body
    held = result.hold
    if held is not None:
        reason = await context.parking.hold(held, receive)
        reply = await context.finish_connect(held, reason in (Wakeup.MESSAGES, Wakeup.TIMEOUT))
        if reason is Wakeup.CLIENT_GONE:
            return
    if jsonp:
        script = b"%s(%s);" % (callback.encode(), reply)
        await send_response(send, status, script, [SCRIPT_TYPE, NO_SNIFF, NO_CACHE], extra)
    else:
        await send_json(send, status, reply, extra)
