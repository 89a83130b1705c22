"""The native WebSocket byte by byte, on a mock transport (tests/support/harness.py): the
upgrade, frames in pieces, 16- and 64-bit lengths, fragments, control frames, protocol errors,
and the pending queue under flow control with a peer that stops reading. No socket, no sleep.
"""

from __future__ import annotations

import json
import logging
import re

import pytest

from starlette_cometd import LongPollingServiceContextBuilder
from starlette_cometd.transports.native_websocket import NativeWebSocket
from support.harness import (
    BINARY,
    CLOSE,
    CONTINUATION,
    HANDSHAKE,
    PING,
    PONG,
    TEXT,
    WS_ACCEPT,
    Connection,
    Harness,
    Message,
    batches,
    client_frame,
    native,
    server_frames,
    text,
    turns,
    upgrade_request,
)


def ws_connect(client_id: str, id: str = "c") -> Message:
    return {
        "channel": "/meta/connect",
        "clientId": client_id,
        "connectionType": "websocket",
        "id": id,
    }


def socket(harness: Harness, protocols: str | None = None, cookie: str | None = None) -> Connection:
    """A connection upgraded to the native WebSocket (with a ``BAYEUX_BROWSER`` cookie)."""
    connection = harness.connect()
    connection.feed(upgrade_request(protocols=protocols, cookie=cookie))
    assert isinstance(connection.protocol, NativeWebSocket)
    head = connection.transport.take()
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    return connection


def exchange(connection: Connection, *messages: Message) -> list[Message]:
    """One batch in, the one reply frame out (written at once)."""
    connection.feed(text(*messages))
    [batch] = batches(connection.transport.take())
    return batch


def session(connection: Connection, *channels: str) -> str:
    """Handshakes, subscribes and connects once (answered at once) over the socket."""
    [hs] = exchange(connection, {**HANDSHAKE, "supportedConnectionTypes": ["websocket"]})
    client_id: str = hs["clientId"]
    replies = exchange(connection, ws_connect(client_id, "first"))
    assert replies[-1]["successful"] is True
    if channels:
        subscribe = {"channel": "/meta/subscribe", "clientId": client_id}
        [reply] = exchange(connection, {**subscribe, "subscription": list(channels)})
        assert reply["successful"] is True
    return client_id


# A browser's BAYEUX_BROWSER cookie.
BROWSER = "b" * 40

CLOSE_1002 = b"\x88\x02\x03\xea"
CLOSE_1009 = b"\x88\x02\x03\xf1"


async def test_upgrade_reply_exactly_and_the_protocol_switches() -> None:
    async with native() as harness:
        connection = harness.connect()
        connection.feed(upgrade_request(protocols="cometd, other", cookie=BROWSER))
        assert connection.transport.take() == (
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
            b"sec-websocket-accept: " + WS_ACCEPT.encode() + b"\r\n"
            b"sec-websocket-protocol: cometd\r\n\r\n"
        )
        assert isinstance(connection.protocol, NativeWebSocket)
        # The socket is a connection uvicorn waits for, no longer the HTTP protocol.
        connections: set[object] = set(harness.state.connections)
        assert connections == {connection.protocol}


@pytest.mark.parametrize("cookie", [None, "not-an-id", "ABCDEF" + "0" * 34])
async def test_an_upgrade_without_a_valid_cookie_is_given_one(cookie: str | None) -> None:
    async with native() as harness:
        connection = harness.connect()
        connection.feed(upgrade_request(cookie=cookie))
        head = connection.transport.take().decode()
        [line] = [line for line in head.split("\r\n") if line.startswith("set-cookie: ")]
        assert re.fullmatch(
            r"set-cookie: BAYEUX_BROWSER=[0-9a-f]{40}; Path=/; HttpOnly; SameSite=Lax", line
        )


async def test_a_frame_in_the_same_read_as_the_upgrade_is_served() -> None:
    async with native() as harness:
        connection = harness.connect()
        connection.feed(upgrade_request() + text(HANDSHAKE))
        data = connection.transport.take()
        head, _, frames = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 ")
        [[reply]] = batches(frames)
        assert reply["channel"] == "/meta/handshake" and reply["successful"] is True


@pytest.mark.parametrize("piece", [1, 2, 3, 5])
async def test_frames_fed_in_pieces(piece: int) -> None:
    async with native() as harness:
        connection = socket(harness)
        frame = text(HANDSHAKE)
        body, last = frame[:-1], frame[-1:]
        for start in range(0, len(body), piece):
            connection.feed(body[start : start + piece])
            assert connection.transport.pending == 0, f"written after {start + piece} bytes"
        connection.feed(last)
        written = connection.transport.take()
        # Whatever the split, exactly one reply once the last byte is in.
        [[reply]] = batches(written)
        assert reply["successful"] is True


@pytest.mark.parametrize(
    "size", [126, 65535, 65536, 200_000], ids=["16-126", "16-max", "64", "64-big"]
)
async def test_extended_lengths_in_and_out(size: int) -> None:
    async with native() as harness:
        connection = socket(harness)
        client_id = session(connection, "/big")
        # A publish whose frame needs a 16- or 64-bit length, its header fed a byte at a time.
        envelope = {"channel": "/big", "clientId": client_id, "id": "p", "data": ""}
        overhead = len(json.dumps([envelope]))
        publish = {**envelope, "data": "x" * (size - overhead)}
        frame = text(publish)
        expected_header = 4 if size < 65536 else 10
        assert len(frame) == expected_header + 4 + size  # header, mask, payload
        connection.feed(frame[:expected_header], piece=1)
        connection.feed(frame[expected_header:], piece=4096)
        await turns()
        writes = connection.transport.writes[-connection.transport.pending :]
        connection.transport.take()
        messages = [m for write in writes for m in batches(write)[0]]
        assert {"channel": "/big", "successful": True, "id": "p"} in messages
        assert [m for m in messages if m.get("data") == publish["data"]] != []
        # Every frame written (one per write) has the shortest length encoding.
        for write in writes:
            payload = len(write) - 2
            if payload < 126:
                assert write[1] == payload
            elif payload - 2 < 65536:
                assert write[1] == 126 and int.from_bytes(write[2:4], "big") == payload - 2
            else:
                assert write[1] == 127 and int.from_bytes(write[2:10], "big") == payload - 8


async def test_fragments_are_one_batch_and_pings_between_them_answered() -> None:
    async with native() as harness:
        connection = socket(harness)
        batch = json.dumps([HANDSHAKE]).encode()
        connection.feed(client_frame(TEXT, batch[:10], final=False))
        connection.feed(client_frame(PING, b"still there?"))
        # The pong goes at once, mid-message, with the ping's payload.
        assert connection.transport.take() == b"\x8a\x0cstill there?"
        connection.feed(client_frame(CONTINUATION, batch[10:20], final=False))
        assert connection.transport.pending == 0
        connection.feed(client_frame(CONTINUATION, batch[20:]))
        [[reply]] = batches(connection.transport.take())
        assert reply["channel"] == "/meta/handshake" and reply["successful"] is True


async def test_pong_and_binary_frames() -> None:
    async with native() as harness:
        connection = socket(harness)
        connection.feed(client_frame(PONG, b"unasked"))  # ignored
        assert connection.transport.pending == 0
        # A binary message is read as a batch like a text one.
        connection.feed(client_frame(BINARY, json.dumps([HANDSHAKE]).encode()))
        [[reply]] = batches(connection.transport.take())
        assert reply["successful"] is True


async def test_close_is_echoed_then_the_connection_closes() -> None:
    async with native() as harness:
        connection = socket(harness)
        connection.feed(client_frame(CLOSE, (1000).to_bytes(2, "big") + b"bye"))
        assert connection.transport.take() == b"\x88\x02\x03\xe8"  # the code, echoed
        assert connection.transport.finished
        await turns()
        assert connection.transport.lost
        assert harness.state.connections == set()


@pytest.mark.parametrize(
    "frame",
    [
        client_frame(TEXT, b"[]", masked=False),
        client_frame(TEXT, b"[]", rsv=0x40),  # compressed, though nothing was negotiated
        client_frame(PING, b"x" * 126),  # a control frame over 125 bytes
        client_frame(PING, b"x", final=False),  # a fragmented control frame
        client_frame(CONTINUATION, b"[]"),  # a continuation of nothing
        client_frame(0x3, b"[]"),  # a reserved opcode
        client_frame(TEXT, b"[", final=False) + client_frame(TEXT, b"]"),  # a new message
    ],
    ids=[
        "unmasked",
        "rsv1",
        "long-ping",
        "fragmented-ping",
        "lone-continuation",
        "opcode-3",
        "text-inside-text",
    ],
)
async def test_protocol_errors_close_with_1002(frame: bytes) -> None:
    async with native() as harness:
        connection = socket(harness)
        connection.feed(frame)
        assert connection.transport.take() == CLOSE_1002
        assert connection.transport.finished


async def test_nothing_is_written_after_a_protocol_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A protocol error shuts the write side after its close frame: a push scheduled before it
    and a held connect ended after it write nothing (a write after the shutdown raised in a
    loop callback), and the session's message stays queued for its next connection."""
    async with native() as harness:
        connection = socket(harness)
        client_id = session(connection, "/news")
        connection.feed(text(ws_connect(client_id, "held")))
        publish = {"channel": "/news", "clientId": client_id, "data": "kept", "id": "p"}
        # In one read: a publish to itself (its push is flushed at the end of the loop turn),
        # then a text frame that is not UTF-8.
        connection.feed(text(publish) + client_frame(TEXT, b'["\xff"]'))
        written = server_frames(connection.transport.take())
        assert written[-1] == (CLOSE, (1007).to_bytes(2, "big"))
        assert connection.transport.eof
        await turns()
        info = harness.context.session_info(client_id)
        assert info is not None and info["queued"] == 1
        await harness.context.remove_session(client_id)  # ends the held connect
        await turns()
        assert connection.transport.take() == b""
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert not errors, errors


async def test_oversize_closes_with_1009_before_the_payload() -> None:
    async with native(LongPollingServiceContextBuilder().max_body_size(1000)) as harness:
        connection = socket(harness)
        whole = client_frame(TEXT, b"x" * 1001)
        connection.feed(whole[:8])  # header and mask only: refused from the declared length
        assert connection.transport.take() == CLOSE_1009
        assert connection.transport.finished


async def test_fragments_adding_up_to_oversize_close_with_1009() -> None:
    async with native(LongPollingServiceContextBuilder().max_body_size(1000)) as harness:
        connection = socket(harness)
        connection.feed(client_frame(TEXT, b"x" * 600, final=False))
        assert connection.transport.pending == 0
        connection.feed(client_frame(CONTINUATION, b"x" * 401)[:8])
        assert connection.transport.take() == CLOSE_1009


async def test_replies_wait_in_order_while_writing_is_paused() -> None:
    budget = 1000
    async with native(LongPollingServiceContextBuilder().max_websocket_backlog(budget)) as harness:
        connection = socket(harness)
        client_id = session(connection)
        connection.protocol.pause_writing()
        count = 0
        # Replies wait, in order, until their bytes pass the socket's budget; then reading
        # pauses, not before.
        while connection.transport.reading:
            assert count < 100, "reading never paused"
            message = {"channel": "/queued", "clientId": client_id, "data": count, "id": str(count)}
            connection.feed(text(message))
            count += 1
        assert connection.transport.pending == 0
        assert count > 5
        connection.protocol.resume_writing()
        await turns()
        ids = [batch[0]["id"] for batch in batches(connection.transport.take())]
        assert ids == [str(n) for n in range(count)]
        assert connection.transport.reading
        assert connection.transport.reading_changes == [False, True]


async def test_a_peer_that_stops_reading_costs_a_bounded_queue() -> None:
    builder = LongPollingServiceContextBuilder().timeout(5).client_channel_capacity(100)
    async with native(builder) as harness:
        connection = socket(harness)
        client_id = session(connection, "/firehose")
        connection.protocol.pause_writing()  # the client's TCP window is full
        for n in range(300):
            await harness.context.send("/firehose", n)
        await turns()
        # Nothing is written or buffered for it: its session's queue holds the newest 100.
        assert connection.transport.pending == 0
        info = harness.context.session_info(client_id)
        assert info is not None and info["queued"] == 100 and info["dropped"] == 200
        connection.protocol.resume_writing()
        await turns()
        delivered = [m["data"] for batch in batches(connection.transport.take()) for m in batch]
        assert delivered == list(range(200, 300))
        # Once written, later messages flow again at once.
        await harness.context.send("/firehose", "after")
        await turns()
        assert batches(connection.transport.take()) == [[{"channel": "/firehose", "data": "after"}]]


async def test_a_push_leaves_a_held_connect_held() -> None:
    async with native() as harness:
        connection = socket(harness)
        client_id = session(connection, "/news")
        connection.feed(text(ws_connect(client_id, "held")))
        assert connection.transport.pending == 0
        assert harness.context.stats()["held"] == 1
        # A push does not answer it: the message goes on its own.
        await harness.context.send("/news", "pushed")
        await turns()
        assert batches(connection.transport.take()) == [[{"channel": "/news", "data": "pushed"}]]
        assert harness.context.stats()["held"] == 1


async def test_a_lost_socket_ends_its_held_connect_and_keeps_the_session() -> None:
    async with native() as harness:
        connection = socket(harness, cookie=BROWSER)
        client_id = session(connection, "/news")
        connection.feed(text(ws_connect(client_id, "held")))
        connection.transport.reset()
        assert harness.context.stats()["held"] == 0
        await harness.context.send("/news", "kept")
        # A new socket without the cookie may not use the session.
        [refused] = exchange(socket(harness), ws_connect(client_id, "stranger"))
        assert refused["error"] == "402::session_unknown"
        # The browser's new socket gets, on its connect, what was queued meanwhile.
        other = socket(harness, cookie=BROWSER)
        replies = exchange(other, ws_connect(client_id, "again"))
        assert replies[0] == {"channel": "/news", "data": "kept"}
        assert replies[1]["id"] == "again"


async def test_shutdown_sends_1001_after_what_is_pending() -> None:
    async with native() as harness:
        connection = socket(harness)
        client_id = session(connection)
        connection.protocol.pause_writing()
        connection.feed(text({"channel": "/x", "clientId": client_id, "data": 1, "id": "last"}))
        harness.context.begin_shutdown()
        assert connection.transport.pending == 0
        connection.protocol.resume_writing()
        frames = server_frames(connection.transport.take())
        assert [opcode for opcode, _ in frames] == [TEXT, CLOSE]
        assert json.loads(frames[0][1])[0]["id"] == "last"
        assert frames[1][1] == (1001).to_bytes(2, "big")


async def test_a_burst_that_wakes_a_held_connect_goes_in_its_reply_together() -> None:
    # Deliveries only in connect replies, as with the ack extension.
    builder = LongPollingServiceContextBuilder().timeout(5).meta_connect_deliver_only()
    async with native(builder) as harness:
        connection = socket(harness)
        client_id = session(connection, "/burst")
        connection.feed(text(ws_connect(client_id, "held")))
        assert harness.context.stats()["held"] == 1
        for n in range(3):  # one loop turn
            await harness.context.send("/burst", n)
        await turns()
        [reply] = batches(connection.transport.take())
        assert [m.get("data") for m in reply[:-1]] == [0, 1, 2]
        assert reply[-1]["id"] == "held"
