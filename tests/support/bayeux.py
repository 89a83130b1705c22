"""Small helpers for tests that speak Bayeux over raw HTTP with httpx."""

from __future__ import annotations

from typing import Any

import httpx

Message = dict[str, Any]


async def post(http: httpx.AsyncClient, url: str, *messages: Message) -> list[Message]:
    """POSTs a batch and returns the reply array, asserting HTTP 200 and JSON."""
    response = await http.post(url, json=list(messages))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    reply: list[Message] = response.json()
    return reply


async def handshake(http: httpx.AsyncClient, url: str) -> str:
    """Handshakes, connects once (the first connect is answered at once) and returns the id."""
    [reply] = await post(
        http,
        url,
        {
            "channel": "/meta/handshake",
            "version": "1.0",
            "supportedConnectionTypes": ["long-polling"],
        },
    )
    assert reply["successful"] is True, reply
    client_id: str = reply["clientId"]
    [connect] = await post(http, url, connect_message(client_id, timeout=0))
    assert connect["successful"] is True, connect
    return client_id


def connect_message(client_id: str, timeout: int | None = None, id: str = "c") -> Message:
    message: Message = {
        "channel": "/meta/connect",
        "clientId": client_id,
        "connectionType": "long-polling",
        "id": id,
    }
    if timeout is not None:
        message["advice"] = {"timeout": timeout}
    return message


async def subscribe(http: httpx.AsyncClient, url: str, client_id: str, *channels: str) -> None:
    [reply] = await post(
        http,
        url,
        {"channel": "/meta/subscribe", "clientId": client_id, "subscription": list(channels)},
    )
    assert reply["successful"] is True, reply
