"""The ceiling: a pure ASGI app on the project's server stack (uvicorn, as the
``starlette-cometd`` CLI configures it) that answers CometD-shaped requests with fixed bytes and
does no CometD work. Its closed-loop request rate (``loadgen --rps``) is the most any CometD
server on this stack could serve.

Run: python benches/peers/ceiling/app.py --port P
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn

_HANDSHAKE = (
    b'[{"channel":"/meta/handshake","successful":true,"version":"1.0","minimumVersion":"1.0",'
    b'"clientId":"00000000000000000000000000000000000000ff",'
    b'"supportedConnectionTypes":["websocket","long-polling"],'
    b'"advice":{"reconnect":"retry","interval":0,"timeout":20000}}]'
)
# A connect reply carrying one delivery the size of the load generator's messages.
_CONNECT = (
    b'[{"channel":"/room/0","data":{"p":0,"s":0,"t":0,"x":"' + b"x" * 64 + b'"}},'
    b'{"channel":"/meta/connect","successful":true}]'
)
_OTHER = b'[{"channel":"/meta/subscribe","successful":true}]'
_HEADERS = [(b"content-type", b"application/json")]


def _reply(body: bytes) -> bytes:
    # A substring test per request: the least work that still answers each message type.
    if b"/meta/connect" in body:
        return _CONNECT
    if b"/meta/handshake" in body:
        return _HANDSHAKE
    return _OTHER


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        out = _reply(body)
        headers = [*_HEADERS, (b"content-length", str(len(out)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": out})
    elif scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text") or (message.get("bytes") or b"").decode()
            await send({"type": "websocket.send", "text": _reply(text.encode()).decode()})
    elif scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    # The same uvicorn settings as starlette_cometd.cli (loop, HTTP and WebSocket on "auto").
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
