"""The hooked path answers any JSON the core accepts exactly as the fast path does (issue 10,
item 8): values Python's json module does not give back as they came (numbers beyond a
float's range, integers too long for ``int()``, ``-0``, ``1E5``, lone surrogates, ``\\u0000``,
duplicate keys, deep nesting) and bodies it reads where the core does not (``NaN``, a BOM,
UTF-16, encoded surrogates). Each is sent to one server before and after hooks are registered,
on both stacks, over long-polling, callback-polling and WebSocket, and the replies and the
messages delivered are compared."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any
from urllib.parse import quote_from_bytes

import httpx
import pytest
import websockets

from starlette_cometd import (
    Message,
    SecurityPolicy,
)
from starlette_cometd._core import read_batch
from starlette_cometd.transports.message_json import ExactNumber, TrackedMessage
from support.app_hooks import Marking, Passing, register_hooks, unmarked
from support.fuzz import strict_loads
from support.servers import ServeFactory, Server

DEEP = 128  # levels a field (`ext`, `data`) may nest: max_data_depth by default


def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


# (name, body): ``CID`` stands for a live session of the client sending it, subscribed to
# /fuzz/**. Bodies are bytes, since some are not UTF-8.
CASES: list[tuple[str, bytes]] = [
    ("id-1e999", b'[{"channel":"/meta/handshake","id":1e999}]'),
    ("id-minus-1e400", b'[{"channel":"/meta/handshake","id":-1e400}]'),
    ("id-minus-zero", b'[{"channel":"/meta/handshake","id":-0}]'),
    ("id-exponent", b'[{"channel":"/meta/handshake","id":1E5}]'),
    ("id-fraction", b'[{"channel":"/meta/handshake","id":1.50}]'),
    ("id-5000-digits", b'[{"channel":"/meta/handshake","id":' + b"9" * 5000 + b"}]"),
    ("id-big-int", b'[{"channel":"/meta/handshake","id":-123456789012345678901234567890}]'),
    ("id-lone-surrogate", b'[{"channel":"/meta/handshake","id":"\\ud800"}]'),
    ("id-nul", b'[{"channel":"/meta/handshake","id":"a\\u0000b"}]'),
    ("id-null", b'[{"channel":"/meta/handshake","id":null}]'),
    ("id-duplicate", b'[{"channel":"/meta/handshake","id":"a","id":"b"}]'),
    ("ext-surrogates", b'[{"channel":"/meta/handshake","ext":{"\\udfff":"\\ud800x"}}]'),
    (
        "ext-big-numbers",
        b'[{"channel":"/meta/handshake","ext":{"a":1e999,"b":' + b"1" * 4400 + b"}}]",
    ),
    ("ext-at-depth-limit", b'[{"channel":"/meta/handshake","ext":' + nested(DEEP).encode() + b"}]"),
    ("ext-too-deep", b'[{"channel":"/meta/handshake","ext":' + nested(DEEP + 1).encode() + b"}]"),
    ("ext-far-too-deep", b'[{"channel":"/meta/handshake","ext":' + nested(5000).encode() + b"}]"),
    ("batch-too-deep", nested(5000).encode()),
    ("advice-timeout-1e999", b'[{"channel":"/meta/handshake","advice":{"timeout":1e999}}]'),
    ("channel-lone-surrogate", b'[{"channel":"/fuzz/\\ud800","clientId":"CID","data":1}]'),
    ("channel-nul", b'[{"channel":"/fuzz/\\u0000","clientId":"CID","data":1}]'),
    ("client-id-lone-surrogate", b'[{"channel":"/fuzz/a","clientId":"\\ud800","data":1}]'),
    ("client-id-surrogates", b'[{"channel":"/meta/connect","clientId":"\\ud800\\udfff\\ud800"}]'),
    (
        "data-numbers",
        b'[{"channel":"/fuzz/a","clientId":"CID","id":1e999,'
        b'"data":{"big":1e999,"small":-1e999,"zero":-0,"e":1E5,"f":0.1e1,"i":'
        + b"7" * 4400
        + b"}}]",
    ),
    (
        "data-strings",
        b'[{"channel":"/fuzz/a","clientId":"CID","data":{"\\ud800":"\\udc00\\u0000\\ud83d\\ude00"}}]',
    ),
    ("data-duplicate-keys", b'[{"channel":"/fuzz/a","clientId":"CID","data":{"k":1,"k":2}}]'),
    (
        "data-deep",
        b'[{"channel":"/fuzz/a","clientId":"CID","data":' + nested(DEEP).encode() + b"}]",
    ),
    (
        "subscription-surrogate",
        b'[{"channel":"/meta/subscribe","clientId":"CID","subscription":"/a\\ud800"}]',
    ),
    (
        "mixed-batch",
        b'[{"channel":"/fuzz/b","clientId":"CID","data":[1e999]},{"nope":1},'
        b'{"channel":"/meta/handshake","id":-0},' + nested(300).encode() + b"]",
    ),
    ("nan", b'[{"channel":"/meta/handshake","id":NaN}]'),
    ("infinity", b'[{"channel":"/meta/handshake","ext":{"a":-Infinity}}]'),
    ("bom", b'\xef\xbb\xbf[{"channel":"/meta/handshake"}]'),
    ("utf-16", '[{"channel":"/meta/handshake"}]'.encode("utf-16")),
    ("encoded-surrogate", b'[{"channel":"/meta/handshake","id":"\xed\xa0\x80"}]'),
    ("one-object", b' {"channel":"/meta/handshake","id":1e999} '),
    ("empty", b"[]"),
]

TRANSPORTS = ["long-polling", "callback-polling", "websocket"]
CLIENT_ID = re.compile(rb'"[0-9a-f]{40}"')


class Answer:
    """What a client saw for one case: each reply's HTTP status (200 over WebSocket) and the
    messages it received, as texts with session ids blanked."""

    def __init__(self, blank: bool = True) -> None:
        self.blank = blank
        self.statuses: list[int] = []
        self.messages: list[bytes] = []

    def add(self, status: int, body: bytes) -> None:
        self.statuses.append(status)
        batch = read_batch(body)
        for raw, _ in [(b"<not JSON> " + body, False)] if batch is None else batch:
            self.messages.append(CLIENT_ID.sub(b'"CID"', raw) if self.blank else raw)

    def values(self) -> list[Any]:
        """The messages as values, compared exactly (numbers as decimals); each must be JSON."""
        return [strict_loads(message) for message in self.messages]


class Client:
    """One client of one transport: a session (subscribed to /fuzz/**) that sends a case."""

    def __init__(self, server: Server, transport: str, http: httpx.AsyncClient) -> None:
        self.server = server
        self.transport = transport
        self.http = http
        self.ws: Any = None
        self.client_id = ""

    async def send(self, body: bytes, answer: Answer) -> None:
        if self.transport == "websocket":
            await self.ws.send(body.decode() if is_utf8(body) else body)
            answer.add(200, await asyncio.wait_for(self.ws.recv(decode=False), 10))
        elif self.transport == "long-polling":
            response = await self.http.post(self.server.url, content=body)
            answer.add(response.status_code, response.content)
        else:
            query = f"?jsonp=cb&message={quote_from_bytes(body, safe='')}"
            response = await self.http.get(self.server.url + query)
            script = response.content
            if script.startswith(b"cb(") and script.endswith(b");"):
                script = script[3:-2]
            answer.add(response.status_code, script)

    async def start(self) -> None:
        self.http.cookies.clear()  # a browser of its own (a browser's sessions are limited)
        if self.transport == "websocket":
            url = self.server.ip_url.replace("http://", "ws://")
            self.ws = await websockets.connect(url, open_timeout=5, max_size=None)
        handshake = message(channel="/meta/handshake", supportedConnectionTypes=[self.transport])
        replies = await self.exchange(handshake)
        self.client_id = replies[0]["clientId"]
        await self.exchange(self.connect())
        subscribe = message(
            channel="/meta/subscribe", clientId=self.client_id, subscription="/fuzz/**"
        )
        [subscribed] = await self.exchange(subscribe)
        assert subscribed["successful"] is True, subscribed

    async def exchange(self, body: bytes) -> list[Any]:
        """Sends a well-formed batch; its replies, as they came."""
        answer = Answer(blank=False)
        await self.send(body, answer)
        return [json.loads(text) for text in answer.messages]

    def connect(self) -> bytes:
        return message(
            channel="/meta/connect",
            clientId=self.client_id,
            connectionType=self.transport,
            advice={"timeout": 0},
        )

    async def case(self, body: bytes) -> Answer:
        """Sends the case, then collects what it delivered: over HTTP the next connect's reply,
        over WebSocket everything pushed until the reply to a later message."""
        answer = Answer()
        await self.send(body.replace(b"CID", self.client_id.encode()), answer)
        if self.transport != "websocket":
            await self.send(self.connect(), answer)
            return answer
        done = message(channel="/service/done", clientId=self.client_id, data=0, id="done")
        await self.ws.send(done.decode())
        while not any(b'"id":"done"' in text for text in answer.messages):
            answer.add(200, await asyncio.wait_for(self.ws.recv(decode=False), 10))
        answer.messages.sort()  # pushes and replies are separate frames over WebSocket
        return answer

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()


def message(**fields: Any) -> bytes:
    return json.dumps([fields]).encode()


def is_utf8(body: bytes) -> bool:
    try:
        body.decode()
    except UnicodeDecodeError:
        return False
    return True


@asynccontextmanager
async def client(server: Server, transport: str, http: httpx.AsyncClient) -> AsyncIterator[Client]:
    started = Client(server, transport, http)
    try:
        await started.start()
        yield started
    finally:
        await started.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("hooks", ["passing", "marking"])
async def test_the_hooked_path_answers_as_the_fast_path(
    serve: ServeFactory,
    http: httpx.AsyncClient,
    transport: str,
    hooks: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR)
    server = await serve()
    fast: dict[str, Answer] = {}
    for name, body in CASES:
        if transport == "websocket" and not is_utf8(body):
            continue  # not a text frame; sent as binary it is the same case again
        async with client(server, transport, http) as fast_client:
            fast[name] = await fast_client.case(body)
    register_hooks(server.context, Passing() if hooks == "passing" else Marking())
    differ: dict[str, tuple[Any, Any]] = {}
    for name, body in CASES:
        if name not in fast:
            continue
        async with client(server, transport, http) as hooked_client:
            hooked = await hooked_client.case(body)
        expected = fast[name]
        assert all(status < 500 for status in hooked.statuses), (name, hooked.statuses)
        if hooked.statuses != expected.statuses:
            differ[name] = (hooked.statuses, expected.statuses)
        elif hooks == "passing":
            # Nothing changed a message: the same bytes, as the client wrote its values.
            if hooked.messages != expected.messages:
                differ[name] = (hooked.messages, expected.messages)
        elif unmarked(hooked.values()) != expected.values():
            differ[name] = (hooked.messages, expected.messages)
    assert not differ, f"hooked, then fast: {differ}"
    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert not errors


class Refusing(SecurityPolicy):
    """Lets no one handshake."""

    def __init__(self) -> None:
        self.asked = 0

    async def can_handshake(
        self, attributes: dict[str, Any], message: Message, headers: Any
    ) -> bool:
        self.asked += 1
        return False


BIG = b"9" * 5000
DENIED = "403::handshake_denied"
DEEPER = "400:ext:too_deep"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_hooks_see_every_message_the_core_acts_on(
    serve: ServeFactory, http: httpx.AsyncClient, transport: str
) -> None:
    """A message Python's json module cannot read once went to the core without its hooks: a
    number of 5,000 digits or an `ext` nested 300 deep got a handshake past a security policy.
    Now the policy sees every message the core acts on, and its refusal keeps the id as sent."""
    server = await serve()
    policy = Refusing()
    server.context.security_policy = policy
    # (body, the id its refusal must carry as written, and the refusal).
    cases = [
        (b'[{"channel":"/meta/handshake","ext":{"n":' + BIG + b"}}]", None, DENIED),
        (b'[{"channel":"/meta/handshake","ext":' + nested(DEEP).encode() + b"}]", None, DENIED),
        (b'[{"channel":"/meta/handshake","id":1e999,"ext":[-1e400]}]', b"1e999", DENIED),
        (b'{"channel":"/meta/handshake","id":-' + BIG + b"}", b"-" + BIG, DENIED),
        (b'[{"channel":"/meta/handshake","id":null}]', None, DENIED),  # null is no id
        (
            b'[{"channel":"/meta/handshake","ext":' + nested(DEEP + 1).encode() + b"}]",
            None,
            DEEPER,
        ),
    ]
    sender = Client(server, transport, http)
    if transport == "websocket":
        url = server.ip_url.replace("http://", "ws://")
        sender.ws = await websockets.connect(url, open_timeout=5, max_size=None)
    try:
        for body, id, error in cases:
            answer = Answer()
            await sender.send(body, answer)
            assert answer.statuses == [200]
            [reply] = answer.values()
            assert reply["error"] == error, body[:80]
            if id is not None:
                assert b'"id":' + id in answer.messages[0]
            else:
                assert "id" not in reply, reply
    finally:
        await sender.close()
    assert policy.asked == 5
    assert server.context.stats()["sessions"] == 0


def test_messages_the_hooks_change_are_written_back_exactly() -> None:
    """What the hooks see of numbers Python cannot hold, and how they are written back."""
    raw = b'{"id":1E5,"data":{"big":1e999,"long":' + BIG + b',"list":[-1e400,-0,"\\ud800"]}}'
    message = TrackedMessage(raw)
    assert message.text() == raw  # untouched: the client's own text
    data = message.value["data"]
    assert data["big"] == math.inf and data["list"][0] == -math.inf
    assert isinstance(data["big"], ExactNumber) and data["long"] == math.inf
    message.value["ext"] = {"seen": True}
    written = strict_loads(message.text())
    assert written["data"]["big"] == Decimal("1e999") and written["data"]["long"] == Decimal(
        BIG.decode()
    )
    assert written["data"]["list"] == [Decimal("-1e400"), 0, "\ud800"]
    assert written["id"] == 100000 and written["ext"] == {"seen": True}
    # A non-finite number the hooks made themselves is theirs to fix: it is refused.
    message.value["data"]["big"] = math.inf
    with pytest.raises(ValueError):
        message.text()
