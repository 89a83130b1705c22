"""The application's API: events, additional data, custom data, sending, errors, ClientId,
the builder, mounting in Starlette and FastAPI, and shutdown."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request

from starlette_cometd import (
    ClientId,
    ClientNotFoundError,
    ContextClosedError,
    CustomData,
    InvalidChannelError,
    LongPollingServiceContextBuilder,
    RemovalReason,
    RouterBuilder,
    SendError,
    SessionAdded,
    SessionRemoved,
    Subscribe,
    Unsubscribe,
    mount,
)
from support.bayeux import connect_message, handshake, post, subscribe
from support.client_steps import connects_held
from support.servers import ServeFactory, Server, running


async def next_event(receiver: Any) -> Any:
    return await asyncio.wait_for(receiver.recv(), 3)


async def test_events_carry_headers_and_additional_data(
    serve: ServeFactory, http: httpx.AsyncClient
) -> None:
    server = await serve(data={"server_name": "Skalica"})
    events = server.context.rx()
    client_id = await handshake(http, server.url)
    await post(
        http,
        server.url,
        {"channel": "/meta/subscribe", "clientId": client_id, "subscription": ["/a", "/b/*"]},
        {"channel": "/meta/unsubscribe", "clientId": client_id, "subscription": "/a"},
    )
    await post(http, server.url, {"channel": "/meta/disconnect", "clientId": client_id})
    added, subscribed, unsubscribed, removed = [await next_event(events) for _ in range(4)]
    assert added == SessionAdded(ClientId(client_id), added.headers, {"server_name": "Skalica"})
    assert added.headers["user-agent"].startswith("python-httpx")
    assert isinstance(subscribed, Subscribe) and subscribed.channels == ("/a", "/b/*")
    assert subscribed.data == {"server_name": "Skalica"}
    assert isinstance(unsubscribed, Unsubscribe) and unsubscribed.channels == ("/a",)
    assert removed == SessionRemoved(ClientId(client_id), RemovalReason.DISCONNECTED)


async def test_additional_data_from_the_request(
    serve: ServeFactory, http: httpx.AsyncClient
) -> None:
    async def tenant(request: Request) -> str:
        return request.headers.get("x-tenant", "none")

    server = await serve(data=tenant)
    events = server.context.rx()
    await http.post(server.url, json=[{"channel": "/meta/handshake"}], headers={"x-tenant": "t1"})
    event = await next_event(events)
    assert isinstance(event, SessionAdded) and event.data == "t1"


async def test_custom_data_reaches_every_receiver(server: Server) -> None:
    first, second = server.context.rx(), server.context.rx()
    await server.context.tx().send("CUSTOM_DATA")
    assert await next_event(first) == CustomData("CUSTOM_DATA")
    assert await next_event(second) == CustomData("CUSTOM_DATA")


async def test_slow_receiver_loses_oldest_events_and_counts_them(serve: ServeFactory) -> None:
    server = await serve(LongPollingServiceContextBuilder().events_channel_capacity(3))
    receiver = server.context.rx()
    sender = server.context.tx()
    for i in range(10):
        await sender.send(i)
    assert receiver.missed == 7
    assert [(await next_event(receiver)).data for _ in range(3)] == [7, 8, 9]


async def test_removed_session_event_and_402(server: Server, http: httpx.AsyncClient) -> None:
    events = server.context.rx()
    client_id = await handshake(http, server.url)
    held = asyncio.ensure_future(post(http, server.url, connect_message(client_id)))
    await connects_held(server)
    await server.context.remove_session(ClientId(client_id))
    [reply] = await asyncio.wait_for(held, 2)
    assert reply["error"] == "402::session_unknown"
    assert reply["advice"]["reconnect"] == "handshake"
    await next_event(events)  # SessionAdded
    assert await next_event(events) == SessionRemoved(ClientId(client_id), RemovalReason.REMOVED)


async def test_send_errors(server: Server, http: httpx.AsyncClient) -> None:
    client_id = await handshake(http, server.url)
    for channel in ("/meta/x", "/a/*", "/service/x", "nope", ""):
        with pytest.raises(InvalidChannelError):
            await server.context.send(channel, 1)
    with pytest.raises(InvalidChannelError):
        await server.context.send_to_client("/a/**", client_id, 1)
    with pytest.raises(ClientNotFoundError):
        await server.context.send_to_client("/a", "0" * 40, 1)
    with pytest.raises(ClientNotFoundError):
        await server.context.remove_session("0" * 40)
    with pytest.raises(ValueError, match="not a client id"):
        await server.context.send_to_client("/a", "xyz", 1)
    with pytest.raises(TypeError, match="not JSON"):
        await server.context.send("/a", {"x": object()})
    with pytest.raises(TypeError, match="not a JSON number"):
        await server.context.send("/a", float("nan"))
    assert issubclass(ClientNotFoundError, SendError)
    # send_to_client works on a service channel the client never subscribed to.
    await server.context.send_to_client("/service/reply", client_id, {"ok": True})
    reply = await post(http, server.url, connect_message(client_id))
    assert reply[0] == {"channel": "/service/reply", "data": {"ok": True}}


async def test_python_values_serialise_as_json(server: Server, http: httpx.AsyncClient) -> None:
    client_id = await handshake(http, server.url)
    await subscribe(http, server.url, client_id, "/v")
    value = {
        "s": 'é"\n\u2028',
        "i": -(2**63),
        "u": 2**64 - 1,
        "f": 1.5,
        "b": False,
        "n": None,
        "l": [1, (2, 3)],
        "d": {},
    }
    await server.context.send("/v", value)
    reply = await post(http, server.url, connect_message(client_id))
    assert reply[0]["data"] == {**value, "l": [1, [2, 3]]}


def test_client_id() -> None:
    text = "0123456789abcdef0123456789abcdef01234567"
    a, b = ClientId(text), ClientId(text)
    assert a == b and hash(a) == hash(b) and {a: 1}[b] == 1
    assert str(a) == text and repr(a) == f"ClientId('{text}')"
    assert a.timestamp_nanos == 0x0123456789ABCDEF
    for bad in ("", text.upper(), text[:-1], text + "0", "é" * 20, "g" * 40):
        with pytest.raises(ValueError):
            ClientId(bad)


def test_builder_validates_and_takes_timedelta() -> None:
    builder = LongPollingServiceContextBuilder().timeout(datetime.timedelta(seconds=5))
    assert builder.max_interval(2.5).interval(0) is builder
    with pytest.raises(ValueError):
        LongPollingServiceContextBuilder().timeout(-1)
    with pytest.raises(ValueError):
        LongPollingServiceContextBuilder().client_channel_capacity(0)
    context = builder.build()
    assert context.stats()["sessions"] == 0


async def test_advice_follows_the_builder(serve: ServeFactory, http: httpx.AsyncClient) -> None:
    server = await serve(LongPollingServiceContextBuilder().timeout(7).interval(0.25))
    [reply] = await post(http, server.url, {"channel": "/meta/handshake"})
    assert reply["advice"] == {"reconnect": "retry", "interval": 250, "timeout": 7000}


@pytest.mark.parametrize("framework", ["starlette", "fastapi"])
async def test_mount_serves_bare_path_and_sub_paths(framework: str) -> None:
    context = LongPollingServiceContextBuilder().build()
    app: Any = (
        FastAPI(lifespan=context.lifespan)
        if framework == "fastapi"
        else Starlette(lifespan=context.lifespan)
    )
    mount(app, "/cometd", RouterBuilder().build(context))
    async with (
        running(app) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http,
    ):
        for path in ("/cometd", "/cometd/", "/cometd/handshake"):
            response = await http.post(path, json=[{"channel": "/meta/handshake"}])
            assert response.status_code == 200, (path, response.status_code)
            assert response.json()[0]["successful"] is True
        assert (await http.post("/other", json=[])).status_code == 404


async def test_shutdown_releases_held_connects(serve: ServeFactory) -> None:
    server = await serve(LongPollingServiceContextBuilder().timeout(30))
    async with httpx.AsyncClient(timeout=10) as http:
        client_id = await handshake(http, server.url)
        held = asyncio.ensure_future(post(http, server.url, connect_message(client_id)))
        await connects_held(server)
        receiver = server.context.rx()
        await server.context.close()
        [reply] = await asyncio.wait_for(held, 2)
    assert reply["successful"] is True
    assert reply["advice"]["reconnect"] == "retry"
    assert await receiver.recv() is None
    with pytest.raises(ContextClosedError):
        await server.context.send("/a", 1)
    with pytest.raises(ContextClosedError):
        await server.context.tx().send(1)
