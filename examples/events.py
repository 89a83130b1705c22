"""Watches the server's events, with additional data attached to each request's events and a
task that sends custom data every second.

Run: SERVER_NAME=Skalica uvicorn examples.events:app --port 8000
"""

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.applications import Starlette

from starlette_cometd import (
    CometdEventReceiver,
    CometdRoute,
    CustomData,
    LongPollingServiceContextBuilder,
    RouterBuilder,
    SessionAdded,
    SessionRemoved,
    Subscribe,
    Unsubscribe,
)


@dataclass(frozen=True)
class ContextData:
    server_name: str


context = LongPollingServiceContextBuilder().build()
cometd = RouterBuilder().build_with_additional_data(
    context, ContextData(server_name=os.environ.get("SERVER_NAME", "Skalica"))
)


async def tick() -> None:
    sender = context.tx()
    while True:
        await sender.send("CUSTOM_DATA")
        await asyncio.sleep(1)


async def watch(events: CometdEventReceiver) -> None:
    async for event in events:
        match event:
            case SessionAdded(client_id, headers, data):
                print(f"session added: {client_id}, user agent {headers.get('user-agent')}, {data}")
            case Subscribe(client_id, _, channels, data):
                print(f"subscribed: {client_id} to {channels}, {data}")
            case Unsubscribe(client_id, _, channels, data):
                print(f"unsubscribed: {client_id} from {channels}, {data}")
            case SessionRemoved(client_id, reason):
                print(f"session removed: {client_id} ({reason})")
            case CustomData(data):
                print(f"custom data: {data}")


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    # The receiver exists before the first event is sent, so it sees every one.
    tasks = [asyncio.create_task(watch(context.rx())), asyncio.create_task(tick())]
    async with context.lifespan(app):
        yield
    for task in tasks:  # watch() ends by itself once the context closes
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


app = Starlette(routes=[CometdRoute("/cometd", cometd)], lifespan=lifespan)
