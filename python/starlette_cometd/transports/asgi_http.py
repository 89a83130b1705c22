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

from ..context import LongPollingServiceContext
from .batch import Request, submit
from .held_connects import DRAINING, Wakeup
from .http_wire import (
    JSON_TYPE,
    NO_CACHE,
    NO_SNIFF,
    SCRIPT_TYPE,
    SERVER_STOPPING,
    BadRequest,
    Header,
    client_address,
    scan_headers,
    too_large,
)

# JSONP callback names are echoed into a script, so only plain identifiers pass.
CALLBACK_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")

AdditionalData = Callable[[HTTPConnection], Any] | None


async def send_response(
    send: Send, status: int, body: bytes, headers: Sequence[Header], extra: Sequence[Header] = ()
) -> None:
    all_headers = [*headers, *extra, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, body: bytes, extra: Sequence[Header] = ()) -> None:
    await send_response(send, status, body, [JSON_TYPE, NO_CACHE], extra)


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
        await send_json(send, 503, SERVER_STOPPING, cors)
        return
    context.start()
    declared, browser, _ = scan_headers(scope["headers"], context.cookie.name)
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
    request = Request(
        browser,
        transport,
        scope["headers"],
        data=data_value,
        data_provider=data if data_provider is not None else None,
        multiplexed=multiplexed,
        address=client_address(scope),
    )
    result = submit(context, request, body)
    if inspect.isawaitable(result):
        result = await result

    extra: Sequence[Header] = cors
    if result.new_browser is not None:
        extra = [*cors, (b"set-cookie", context.cookie.header(result.new_browser).encode())]
    status, reply = result.status, result.body
    held = result.hold
    if held is not None:
        reason = await context.parking.hold(held, receive)
        if reason is Wakeup.CLIENT_GONE:
            context.engine.complete_connect(held, False)
            return
        finished = context.finish_connect(
            held, reason in DRAINING, reason is Wakeup.MULTIPLE_CLIENTS
        )
        reply = finished if isinstance(finished, bytes) else await finished
    if jsonp:
        script = b"%s(%s);" % (callback.encode(), reply)
        await send_response(send, status, script, [SCRIPT_TYPE, NO_SNIFF, NO_CACHE], extra)
    else:
        await send_json(send, status, reply, extra)
