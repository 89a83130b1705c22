"""callback-polling (JSONP over GET) and CORS, checked with raw HTTP requests."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
import pytest

from starlette_cometd import LongPollingServiceContextBuilder
from support.bayeux import connect_message
from support.client_steps import connects_held
from support.servers import ServeFactory, Server

SCRIPT = re.compile(r"^(?P<callback>[A-Za-z0-9._-]+)\((?P<json>.*)\);$", re.S)


async def jsonp(
    http: httpx.AsyncClient, url: str, callback: str, *messages: dict[str, Any]
) -> list[dict[str, Any]]:
    response = await http.get(url, params={"jsonp": callback, "message": json.dumps(messages)})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.headers["x-content-type-options"] == "nosniff"
    match = SCRIPT.match(response.text)
    assert match is not None and match["callback"] == callback, response.text
    reply: list[dict[str, Any]] = json.loads(match["json"])
    return reply


async def test_callback_polling_session(server: Server, http: httpx.AsyncClient) -> None:
    [hs] = await jsonp(
        http,
        server.url + "/handshake",
        "cometd._jsonp_1",
        {"channel": "/meta/handshake", "supportedConnectionTypes": ["callback-polling"]},
    )
    assert hs["successful"] is True
    client_id = hs["clientId"]
    assert "BAYEUX_BROWSER" in http.cookies
    connect = {**connect_message(client_id), "connectionType": "callback-polling"}
    [first] = await jsonp(http, server.url + "/connect", "cb_2", connect)
    assert first["successful"] is True
    subscribe = {"channel": "/meta/subscribe", "clientId": client_id, "subscription": "/j"}
    await jsonp(http, server.url, "cb-3", subscribe)
    held = asyncio.ensure_future(jsonp(http, server.url + "/connect", "cb4", connect))
    await connects_held(server)
    await server.context.send("/j", {"via": "jsonp"})
    reply = await asyncio.wait_for(held, 3)
    assert reply[0] == {"channel": "/j", "data": {"via": "jsonp"}}
    assert reply[1]["channel"] == "/meta/connect"


@pytest.mark.parametrize(
    "callback", ["", "alert(1)//", "a b", "x" * 65, "cb<script>", "é", "cb;evil"]
)
async def test_bad_callback_names_are_400_and_never_reflected(
    server: Server, http: httpx.AsyncClient, callback: str
) -> None:
    response = await http.get(
        server.url, params={"jsonp": callback, "message": '[{"channel":"/meta/handshake"}]'}
    )
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()[0]["error"] == "400::jsonp_invalid"
    if callback:
        assert callback not in response.text


async def test_jsonp_without_message_or_with_a_bad_one(
    server: Server, http: httpx.AsyncClient
) -> None:
    response = await http.get(server.url, params={"jsonp": "cb"})
    assert response.status_code == 400
    assert response.json()[0]["error"] == "400::message_missing"
    response = await http.get(server.url, params={"jsonp": "cb", "message": "{nope"})
    assert response.status_code == 400
    assert response.text.startswith("cb(")  # the script still calls back with the error


async def test_callback_polling_can_be_turned_off(
    serve: ServeFactory, http: httpx.AsyncClient
) -> None:
    builder = LongPollingServiceContextBuilder().connection_types("websocket", "long-polling")
    server = await serve(builder)
    # A Bayeux reply the client understands: this transport is refused, do not retry it.
    [reply] = await jsonp(http, server.url, "cb", {"channel": "/meta/handshake", "id": "1"})
    assert reply["successful"] is False
    assert reply["error"] == "400::connection_type_unsupported"
    assert reply["advice"]["reconnect"] == "none"
    assert reply["id"] == "1"
    assert server.context.stats()["sessions"] == 0


ORIGIN = "https://app.example"


async def test_cors_for_a_listed_origin(serve: ServeFactory, http: httpx.AsyncClient) -> None:
    server = await serve(LongPollingServiceContextBuilder().allowed_origins(ORIGIN))
    preflight = await http.options(
        server.url + "/handshake",
        headers={
            "origin": ORIGIN,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert preflight.headers["access-control-allow-credentials"] == "true"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-allow-headers"] == "content-type"
    response = await http.post(
        server.url, json=[{"channel": "/meta/handshake"}], headers={"origin": ORIGIN}
    )
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert response.headers["access-control-allow-credentials"] == "true"
    assert response.headers["vary"] == "Origin"


async def test_cors_refuses_other_origins(serve: ServeFactory, http: httpx.AsyncClient) -> None:
    server = await serve(LongPollingServiceContextBuilder().allowed_origins(ORIGIN))
    headers = {"origin": "https://evil.example", "access-control-request-method": "POST"}
    preflight = await http.options(server.url, headers=headers)
    assert preflight.status_code == 403
    assert "access-control-allow-origin" not in preflight.headers
    response = await http.post(server.url, json=[{"channel": "/meta/handshake"}], headers=headers)
    assert "access-control-allow-origin" not in response.headers


async def test_cors_wildcard_never_allows_credentials(
    serve: ServeFactory, http: httpx.AsyncClient
) -> None:
    server = await serve(LongPollingServiceContextBuilder().allowed_origins("*", ORIGIN))
    response = await http.post(
        server.url, json=[{"channel": "/meta/handshake"}], headers={"origin": "https://any.example"}
    )
    assert response.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in response.headers
    response = await http.post(
        server.url, json=[{"channel": "/meta/handshake"}], headers={"origin": ORIGIN}
    )
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert response.headers["access-control-allow-credentials"] == "true"


async def test_no_cors_headers_by_default(server: Server, http: httpx.AsyncClient) -> None:
    response = await http.post(
        server.url, json=[{"channel": "/meta/handshake"}], headers={"origin": ORIGIN}
    )
    assert "access-control-allow-origin" not in response.headers
    preflight = await http.options(server.url, headers={"origin": ORIGIN})
    assert preflight.status_code == 403
