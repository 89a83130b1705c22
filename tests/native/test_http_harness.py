"""The native long-polling protocol byte by byte, on a mock transport (tests/support/harness.py):
requests in pieces, pipelining behind a held connect, a reset mid-reply, keep-alive, refusals
before the body, the hand-over to uvicorn's own protocol, and shutdown. No socket, no sleep."""

from __future__ import annotations

import json

from starlette_cometd import LongPollingServiceContextBuilder
from starlette_cometd.transports.native_http import _MAX_PIPELINED
from support.bayeux import connect_message
from support.harness import (
    HANDSHAKE,
    Connection,
    Harness,
    native,
    post,
    request_bytes,
    turns,
    turns_until,
)


def subscribe(client_id: str, *channels: str) -> dict[str, object]:
    return {"channel": "/meta/subscribe", "clientId": client_id, "subscription": list(channels)}


async def held_connect(harness: Harness, *channels: str) -> tuple[Connection, str, str]:
    """A connection whose session subscribed to ``channels`` and whose connect is now held."""
    connection = harness.connect()
    client_id, cookie = await harness.session(connection)
    if channels:
        connection.feed(post(subscribe(client_id, *channels), cookie=cookie))
        assert connection.response().json()[0]["successful"] is True
    connection.feed(post(connect_message(client_id, id="held"), cookie=cookie))
    assert connection.transport.pending == 0
    assert harness.context.stats()["held"] == 1
    return connection, client_id, cookie


async def test_a_request_fed_byte_by_byte_is_answered_once_when_whole() -> None:
    async with native() as harness:
        connection = harness.connect()
        request = post(HANDSHAKE)
        for byte in range(len(request) - 1):
            connection.feed(request[byte : byte + 1])
            assert connection.transport.pending == 0, f"written after {byte + 1} bytes"
        connection.feed(request[-1:])
        assert connection.transport.pending == 1  # the whole response in one write
        response = connection.response()
        assert response.status == 200
        assert response.headers["content-type"] == "application/json;charset=utf-8"
        assert response.headers["content-length"] == str(len(response.body))
        assert response.headers["set-cookie"].startswith("BAYEUX_BROWSER=")
        assert response.json()[0]["successful"] is True
        assert not connection.transport.finished


async def test_a_body_in_pieces_is_read_whole() -> None:
    async with native() as harness:
        client_id, cookie = await harness.session()
        connection = harness.connect()
        publish = {"channel": "/pieces", "clientId": client_id, "data": "x" * 500, "id": "p"}
        request = post(publish, cookie=cookie)
        head_end = request.index(b"\r\n\r\n") + 4
        connection.feed(request[:head_end])
        connection.feed(request[head_end:], piece=7)
        [reply] = connection.response().json()
        assert reply == {"channel": "/pieces", "successful": True, "id": "p"}


async def test_pipelined_requests_are_answered_in_order_once_the_connect_is() -> None:
    async with native() as harness:
        connection, client_id, cookie = await held_connect(harness, "/news")
        # Three requests behind the held connect, in one read: none is answered yet.
        publishes = [
            post(
                {"channel": "/elsewhere", "clientId": client_id, "data": n, "id": f"p{n}"},
                cookie=cookie,
            )
            for n in range(3)
        ]
        connection.feed(b"".join(publishes))
        await turns()
        assert connection.transport.pending == 0
        # A message wakes the connect: its reply goes first, then the three, in order.
        await harness.context.send("/news", "first")
        assert connection.transport.pending == 0  # built on the next loop turn
        await turns()
        replies = [response.json() for response in connection.responses()]
        assert replies[0][0] == {"channel": "/news", "data": "first"}
        assert replies[0][1]["id"] == "held" and replies[0][1]["successful"] is True
        assert [r[0]["id"] for r in replies[1:]] == ["p0", "p1", "p2"]
        assert harness.context.stats()["held"] == 0


async def test_reading_pauses_behind_a_held_connect_after_a_bound() -> None:
    async with native() as harness:
        connection, client_id, cookie = await held_connect(harness, "/news")
        publish = post({"channel": "/elsewhere", "clientId": client_id, "data": 1}, cookie=cookie)
        connection.feed(publish * (_MAX_PIPELINED - 1))
        assert connection.transport.reading
        connection.feed(publish)
        assert not connection.transport.reading
        await harness.context.send("/news", "wake")
        await turns()
        assert len(connection.responses()) == 1 + _MAX_PIPELINED
        assert connection.transport.reading_changes == [False, True]


async def test_a_reset_while_held_drains_nothing() -> None:
    async with native() as harness:
        connection, client_id, cookie = await held_connect(harness, "/news")
        connection.transport.reset()
        assert harness.context.stats()["held"] == 0
        await harness.context.send("/news", "kept")
        await turns()
        assert connection.transport.pending == 0
        # The message waits for the session's next connect, on another connection.
        other = harness.connect()
        other.feed(post(connect_message(client_id, timeout=0), cookie=cookie))
        reply = other.response().json()
        assert reply[0] == {"channel": "/news", "data": "kept"}
        assert reply[1]["successful"] is True


async def test_a_reset_between_wake_up_and_reply_drains_nothing() -> None:
    async with native() as harness:
        connection, client_id, cookie = await held_connect(harness, "/news")
        await harness.context.send("/news", "kept")  # the reply is due on the next turn
        connection.transport.reset()
        await turns()
        assert connection.transport.pending == 0
        other = harness.connect()
        other.feed(post(connect_message(client_id, timeout=0), cookie=cookie))
        assert other.response().json()[0] == {"channel": "/news", "data": "kept"}


async def test_keep_alive_then_connection_close() -> None:
    async with native() as harness:
        connection = harness.connect()
        for _ in range(2):
            connection.feed(post(HANDSHAKE))
            response = connection.response()
            assert response.status == 200 and "connection" not in response.headers
            assert not connection.transport.finished
        close = request_bytes(
            "POST", "/cometd", json.dumps([HANDSHAKE]).encode(), headers={"connection": "close"}
        )
        connection.feed(close)
        response = connection.response()
        assert response.status == 200 and response.headers["connection"] == "close"
        assert connection.transport.finished


async def test_http_1_0_closes_after_the_reply() -> None:
    async with native() as harness:
        connection = harness.connect()
        body = json.dumps([HANDSHAKE]).encode()
        connection.feed(request_bytes("POST", "/cometd", body, version="1.0"))
        assert connection.response().headers["connection"] == "close"
        assert connection.transport.finished


async def test_too_large_is_refused_before_the_body() -> None:
    async with native(LongPollingServiceContextBuilder().max_body_size(1000)) as harness:
        connection = harness.connect()
        connection.feed(
            b"POST /cometd HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n"
            b"content-length: 5000\r\n\r\n"
        )
        body = (
            b'[{"successful":false,"error":"413::request_too_large",'
            b'"detail":"the request body is larger than 1000 bytes"}]'
        )
        assert connection.transport.take() == (
            b"HTTP/1.1 413 Request Entity Too Large\r\n"
            b"content-type: application/json;charset=utf-8\r\n"
            b"cache-control: no-cache, no-store\r\n"
            b"content-length: %d\r\n"
            b"connection: close\r\n"
            b"\r\n" % len(body) + body
        )
        assert connection.transport.finished


async def test_too_large_chunked_is_refused_once_read() -> None:
    async with native(LongPollingServiceContextBuilder().max_body_size(1000)) as harness:
        connection = harness.connect()
        connection.feed(
            b"POST /cometd HTTP/1.1\r\nhost: test\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        chunk = b"x" * 600
        connection.feed(b"%x\r\n%s\r\n" % (len(chunk), chunk) * 2)
        assert connection.transport.pending == 0  # counted, not answered, until the end
        connection.feed(b"0\r\n\r\n")
        response = connection.response()
        assert response.status == 413
        assert response.headers["connection"] == "close"
        assert connection.transport.finished


async def test_malformed_http_is_a_400_and_a_close() -> None:
    async with native() as harness:
        connection = harness.connect()
        connection.feed(b"NOT HTTP AT ALL\r\n\r\n")
        assert connection.transport.take() == (
            b"HTTP/1.1 400 Bad Request\r\n"
            b"content-type: text/plain; charset=utf-8\r\n"
            b"content-length: 20\r\n"
            b"connection: close\r\n"
            b"\r\n"
            b"invalid HTTP request"
        )
        assert connection.transport.finished


async def test_other_paths_are_handed_to_uvicorns_protocol_for_good() -> None:
    async with native() as harness:
        connection = harness.connect()
        connection.feed(post(HANDSHAKE))
        assert connection.response().status == 200
        connection.feed(request_bytes("GET", "/hello"))
        assert connection.protocol is not connection.http
        await turns_until(lambda: connection.transport.pending > 0, "uvicorn answers /hello")
        response = connection.response()
        assert (response.status, response.body) == (200, b"hello GET 0")
        # The next CometD request on this connection is uvicorn's too.
        connection.feed(post(HANDSHAKE))
        await turns_until(lambda: connection.transport.pending > 0, "uvicorn answers CometD")
        assert connection.response().json()[0]["successful"] is True


async def test_shutdown_answers_a_held_connect_then_closes() -> None:
    async with native() as harness:
        connection, _, _ = await held_connect(harness)
        idle = harness.connect()
        idle.http.shutdown()
        assert idle.transport.closing and idle.transport.pending == 0
        connection.http.shutdown()
        await turns()
        response = connection.response()
        assert response.headers["connection"] == "close"
        [reply] = response.json()
        assert reply["id"] == "held" and reply["successful"] is True
        assert reply["advice"]["reconnect"] == "retry"
        assert connection.transport.closing
