"""The examples in examples/ serve real clients as their docstrings say."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from support.bayeux import connect_message, handshake, post, subscribe
from support.servers import running

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_custom_base_paths_example() -> None:
    example = load("custom_base_paths")
    async with running(example.app) as port:
        base = f"http://127.0.0.1:{port}/cometd"
        async with httpx.AsyncClient() as http:
            [hs] = await post(http, base + "/node/0/handshake", {"channel": "/meta/handshake"})
            [connect] = await post(
                http, base + "/node/1/connect", connect_message(hs["clientId"], timeout=0)
            )
            assert connect["successful"] is True


async def test_events_example_prints_events(capsys: pytest.CaptureFixture[str]) -> None:
    example = load("events")
    async with running(example.app) as port:
        url = f"http://127.0.0.1:{port}/cometd"
        async with httpx.AsyncClient() as http:
            client_id = await handshake(http, url)
            await subscribe(http, url, client_id, "/demo")
            out = ""
            for _ in range(150):
                out += capsys.readouterr().out
                if "subscribed" in out and "custom data" in out:
                    break
                await asyncio.sleep(0.02)
        assert f"session added: {client_id}" in out
        assert "ContextData(server_name=" in out
        assert "custom data: CUSTOM_DATA" in out
        assert f"subscribed: {client_id} to ('/demo',)" in out


async def test_fastapi_example_publishes_from_an_endpoint() -> None:
    example = load("fastapi_app")
    async with running(example.app) as port:
        url = f"http://127.0.0.1:{port}/cometd"
        async with httpx.AsyncClient() as http:
            client_id = await handshake(http, url)
            await subscribe(http, url, client_id, "/announcements")
            response = await http.post(f"http://127.0.0.1:{port}/announce/hello")
            assert response.json() == {"sessions": 1}
            reply = await post(http, url, connect_message(client_id))
            assert reply[0] == {"channel": "/announcements", "data": {"text": "hello"}}


def teardown_module() -> None:
    for name in list(sys.modules):
        if name.startswith("example_"):
            del sys.modules[name]


async def test_chat_rooms_example() -> None:
    example = load("chat_rooms")
    async with running(example.app) as port:
        url = f"http://127.0.0.1:{port}/cometd"
        async with httpx.AsyncClient() as http:
            [denied] = await post(http, url, {"channel": "/meta/handshake"})
            assert denied["error"] == "403::handshake_denied"
            hs = {"channel": "/meta/handshake", "ext": {"token": "alice"}}
            [reply] = await post(http, url, hs)
            client_id = reply["clientId"]
            await subscribe(http, url, client_id, "/chat/lobby")
            replies = await post(
                http,
                url,
                {"channel": "/chat/lobby", "clientId": client_id, "data": {"text": "hi"}},
                {"channel": "/chat/lobby", "clientId": client_id, "data": {"text": " "}},
                {"channel": "/service/members/lobby", "clientId": client_id, "data": {}, "id": "m"},
                connect_message(client_id, timeout=0),
            )
            assert replies[0]["successful"] is True
            assert replies[1]["error"] == "400::empty_message"
            assert replies[2] == {
                "channel": "/service/members/lobby",
                "id": "m",
                "successful": True,
                "data": ["Alice"],
                "ext": {"server": "chat-1"},
            }
            assert replies[4]["ext"] == {"server": "chat-1"}  # the connect reply
            # A delivered message, not a reply: the extension leaves it alone.
            assert replies[3] == {
                "channel": "/chat/lobby",
                "data": {"text": "hi", "user": "Alice"},
            }
