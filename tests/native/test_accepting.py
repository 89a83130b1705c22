"""The CLI's server takes a burst of new connections in a few loop turns, not one per turn as
uvloop's own server does (libuv accepts one connection per readiness): on a loop whose every
turn is busy, a burst would otherwise wait a turn per connection."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import pytest
import uvicorn
import uvloop

from starlette_cometd import LongPollingServiceContextBuilder, native_http_protocol
from starlette_cometd.cli import _Server, build_app

BURST = 200
HANDSHAKE = json.dumps([{"channel": "/meta/handshake", "version": "1.0"}]).encode()
REQUEST = (
    b"POST /cometd HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(HANDSHAKE), HANDSHAKE)
)


def _open_burst(port: int, replies: list[bytes]) -> None:
    """Opens BURST connections at once, each sending a handshake, then reads every reply;
    closes them only then, so that all are open together at the server."""
    connections = [socket.create_connection(("127.0.0.1", port)) for _ in range(BURST)]
    try:
        for connection in connections:
            connection.sendall(REQUEST)
        for connection in connections:
            connection.settimeout(30)
            replies.append(connection.recv(65536))
    finally:
        for connection in connections:
            connection.close()


async def _turns_to_accept_a_burst(batches: bool) -> tuple[int, list[bytes]]:
    """Serves the CLI's app on uvloop and opens a burst of connections while every loop turn
    takes 5 ms: the turns (at most BURST) it took to accept them all, and their replies."""
    context = LongPollingServiceContextBuilder().build()
    app, cometd = build_app(context, "/cometd")
    config = uvicorn.Config(app, http=native_http_protocol(cometd, "/cometd"), log_level="error")
    listener = config.bind_socket()
    port = listener.getsockname()[1]
    server = _Server(config, context)
    if not batches:
        server.startup = super(_Server, server).startup  # type: ignore[method-assign]
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    while not server.started:
        await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    replies: list[bytes] = []
    client = threading.Thread(target=_open_burst, args=(port, replies))
    accepted = loop.create_future()
    turns = 0

    def busy_turn() -> None:
        nonlocal turns
        turns += 1
        time.sleep(0.005)  # the work of a loaded server's turn
        if len(server.server_state.connections) >= BURST or turns >= BURST:
            accepted.set_result(None)
        else:
            loop.call_soon(busy_turn)

    loop.call_soon(busy_turn)
    client.start()  # while the loop is busy
    await accepted
    await asyncio.to_thread(client.join)
    server.should_exit = True
    await serving
    return turns, replies


@pytest.mark.parametrize("batches", [True, False], ids=["acceptor", "uvloop-alone"])
def test_a_burst_of_new_connections_is_accepted_in_a_few_busy_turns(batches: bool) -> None:
    turns, replies = uvloop.run(_turns_to_accept_a_burst(batches))
    # Every connection was served: a handshake reply each.
    assert len(replies) == BURST
    assert all(r.startswith(b"HTTP/1.1 200") and b'"successful":true' in r for r in replies)
    if batches:
        assert turns <= 10
    else:
        # What the acceptor is for: uvloop's server alone takes one connection per turn.
        assert turns >= BURST // 2
