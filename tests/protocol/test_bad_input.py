"""Bad input of every kind gets a 4xx or an unsuccessful reply naming the problem, never a 500,
and leaves other sessions alone."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from starlette_cometd import LongPollingServiceContextBuilder
from support.bayeux import connect_message, handshake, post, subscribe
from support.client_steps import connects_held
from support.servers import ServeFactory, Server

# Whole bodies that are not a Bayeux batch at all: HTTP 400 naming the problem.
BAD_BODIES = [
    (b"", "400::json_malformed"),
    (b"{", "400::json_malformed"),
    (b"[{]", "400::json_malformed"),
    (b"nul", "400::json_malformed"),
    (b"\xff\xfe[]", "400::json_malformed"),
    (b'[{"channel":"/meta/handshake"}] trailing', "400::json_malformed"),
]

# Messages that are read but wrong: an unsuccessful reply with the error named.
BAD_MESSAGES: list[tuple[Any, str]] = [
    (1, "400::message_not_an_object"),
    ("text", "400::message_not_an_object"),
    ([{"channel": "/meta/handshake"}], "400::message_not_an_object"),
    ({}, "400::channel_missing"),
    ({"channel": 5}, "400:channel:invalid_type"),
    ({"channel": "/meta/handshake", "bogus": 1}, "400:bogus:unknown_field"),
    ({"channel": "/meta/handshake", "id": {"x": 1}}, "400:id:invalid_type"),
    (
        {"channel": "/meta/handshake", "supportedConnectionTypes": "x"},
        "400::connection_type_unsupported",
    ),
    (
        {"channel": "/meta/handshake", "supportedConnectionTypes": [1]},
        "400:supportedConnectionTypes:invalid_type",
    ),
    ({"channel": "/meta/connect", "clientId": 12}, "400:clientId:invalid_type"),
    ({"channel": "/meta/connect", "clientId": "é" * 20}, "402::session_unknown"),
    ({"channel": "/meta/connect"}, "402::client_id_missing"),
    ({"channel": "no-slash", "clientId": "0" * 40, "data": 1}, "405::channel_invalid"),
    ({"channel": "/a//b", "data": 1}, "405::channel_invalid"),
    ({"channel": "/a/<script>", "data": 1}, "405::channel_invalid"),
]


@pytest.mark.parametrize(("body", "error"), BAD_BODIES)
async def test_bad_bodies_get_400(
    server: Server, http: httpx.AsyncClient, body: bytes | str, error: str
) -> None:
    response = await http.post(
        server.url, content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    [reply] = response.json()
    assert reply["successful"] is False
    assert reply["error"] == error
    assert reply["detail"]


@pytest.mark.parametrize(("message", "error"), BAD_MESSAGES)
async def test_bad_messages_get_unsuccessful_replies(
    server: Server, http: httpx.AsyncClient, message: Any, error: str
) -> None:
    [reply] = await post(http, server.url, message)
    assert reply["successful"] is False
    assert reply["error"] == error


async def test_bad_field_types_on_a_live_session(server: Server, http: httpx.AsyncClient) -> None:
    client_id = await handshake(http, server.url)
    cases: list[tuple[dict[str, Any], str]] = [
        (
            {"channel": "/meta/connect", "clientId": client_id, "advice": "x"},
            "400:advice:invalid_type",
        ),
        (
            {"channel": "/meta/connect", "clientId": client_id, "advice": {"timeout": -1}},
            "400:advice:invalid_type",
        ),
        (
            {"channel": "/meta/connect", "clientId": client_id, "connectionType": "carrier-pigeon"},
            "400::connection_type_unsupported",
        ),
        (
            {"channel": "/meta/subscribe", "clientId": client_id, "subscription": 3},
            "403::subscription_invalid",
        ),
        (
            {"channel": "/meta/subscribe", "clientId": client_id, "subscription": []},
            "403::subscription_invalid",
        ),
        (
            {"channel": "/meta/subscribe", "clientId": client_id, "subscription": ["/ok", "bad"]},
            "403::subscription_invalid",
        ),
    ]
    for message, error in cases:
        [reply] = await post(http, server.url, message)
        assert reply["successful"] is False, message
        assert reply["error"] == error, message
    # The all-or-nothing subscribe left nothing behind.
    info = server.context.session_info(client_id)
    assert info is not None and info["subscriptions"] == []


async def test_empty_batch_gets_an_empty_reply(server: Server, http: httpx.AsyncClient) -> None:
    # Faye posts [] before a large publish; nothing asked, nothing answered.
    response = await http.post(server.url, content=b"[]")
    assert response.status_code == 200
    assert response.json() == []


async def test_deep_nesting_is_read_without_recursion(
    server: Server, http: httpx.AsyncClient
) -> None:
    # Payloads are kept raw, so a 200,000-deep value costs no stack and is simply not a message.
    depth = 200_000
    response = await http.post(server.url, content="[" * depth + "]" * depth)
    assert response.status_code == 200
    assert response.json() == [{"successful": False, "error": "400::message_not_an_object"}]


async def test_one_bad_message_does_not_spoil_its_batch(
    server: Server, http: httpx.AsyncClient
) -> None:
    replies = await post(
        http, server.url, {"channel": 1}, {"channel": "/meta/handshake", "id": "ok"}, {"nope": 1}
    )
    assert [r["successful"] for r in replies] == [False, True, False]
    assert replies[1]["id"] == "ok"


async def test_oversized_body_gets_413(serve: ServeFactory, http: httpx.AsyncClient) -> None:
    server = await serve(LongPollingServiceContextBuilder().max_body_size(1000))
    big = json.dumps([{"channel": "/meta/handshake", "ext": {"pad": "x" * 2000}}])
    response = await http.post(server.url, content=big)
    assert response.status_code == 413
    assert response.json()[0]["error"] == "413::request_too_large"

    async def chunks() -> AsyncIterator[bytes]:
        # No content-length: the limit is enforced while reading.
        for _ in range(10):
            yield b" " * 200

    response = await http.post(server.url, content=chunks())
    assert response.status_code == 413


async def test_bad_input_leaves_other_sessions_untouched(
    server: Server, http: httpx.AsyncClient
) -> None:
    victim = await handshake(http, server.url)
    await subscribe(http, server.url, victim, "/news")
    held = asyncio.ensure_future(post(http, server.url, connect_message(victim, id="v")))
    await connects_held(server)
    async with httpx.AsyncClient() as attacker:
        for body, _ in BAD_BODIES:
            response = await attacker.post(server.url, content=body)
            assert response.status_code == 400
        for message, _ in BAD_MESSAGES:
            response = await attacker.post(server.url, json=[message])
            assert response.status_code == 200
        # Someone else's client id without its cookie changes nothing.
        for message in (
            {"channel": "/meta/disconnect", "clientId": victim},
            {"channel": "/meta/unsubscribe", "clientId": victim, "subscription": "/news"},
            connect_message(victim, timeout=0),
        ):
            [reply] = (await attacker.post(server.url, json=[message])).json()
            assert reply["error"] == "402::session_unknown"
    assert not held.done()
    await server.context.send("/news", "still here")
    reply = await asyncio.wait_for(held, 3)
    assert reply[0] == {"channel": "/news", "data": "still here"}
    assert server.context.stats()["sessions"] == 1
