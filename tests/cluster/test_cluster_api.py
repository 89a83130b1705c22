"""The application's API in a cluster (issue 11): from any process, ``send`` reaches every
subscriber, ``send_to_client`` and ``remove_session`` reach a session wherever it is served, and a
session's end is one ``SessionRemoved`` in the whole cluster."""

from __future__ import annotations

import asyncio

import pytest

from starlette_cometd import (
    ClientNotFoundError,
    LongPollingServiceContextBuilder,
    RemovalReason,
    SessionRemoved,
)
from support.cluster import Client, asgi_cluster, gather_until, leave_without_ending


async def test_send_and_send_to_client_from_any_process(redis_url: str) -> None:
    async with asgi_cluster(redis_url) as cluster:
        client = Client(cluster.url)
        await client.handshake()
        await client.subscribe("/news")
        await client.connect()
        for n, context in enumerate(cluster.contexts):
            await context.send("/news", {"broadcast": n})
            await context.send_to_client("/private", client.client_id, {"direct": n})
        received = await gather_until(client, 6)
        assert [m["data"] for m in received] == [
            {"broadcast": 0},
            {"direct": 0},
            {"broadcast": 1},
            {"direct": 1},
            {"broadcast": 2},
            {"direct": 2},
        ]
        assert {m["channel"] for m in received} == {"/news", "/private"}
        with pytest.raises(ClientNotFoundError):
            await cluster.contexts[0].send_to_client("/private", "ab" * 20, "nobody")


async def test_remove_session_from_another_process_ends_it_once(redis_url: str) -> None:
    async with asgi_cluster(redis_url) as cluster:
        receivers = [context.rx() for context in cluster.contexts]
        client = Client(cluster.url)
        await client.handshake()
        await client.connect()
        # Whichever process serves it, one that does not (or does) can end it.
        for context in cluster.contexts:
            if context.session_info(client.client_id) is None:
                await context.remove_session(client.client_id)
                break
        reply, _ = await client.connect()
        assert reply["error"] == "402::session_unknown"
        removed = []
        for receiver in receivers:
            while (event := receiver.try_recv()) is not None:
                if isinstance(event, SessionRemoved):
                    removed.append(str(event.client_id))
        assert removed == [client.client_id]
        with pytest.raises(ClientNotFoundError):
            await cluster.contexts[0].remove_session(client.client_id)


async def test_a_session_whose_process_died_expires_once_in_the_cluster(redis_url: str) -> None:
    def short() -> LongPollingServiceContextBuilder:
        return LongPollingServiceContextBuilder().timeout(0.5).max_interval(0.5)

    async with asgi_cluster(redis_url, 3, short) as cluster:
        receivers = [context.rx() for context in cluster.contexts]
        client = Client(cluster.url)
        await client.handshake()
        await client.connect()
        [serving] = [c for c in cluster.contexts if c.session_info(client.client_id)]
        # Its process stops without ending it (as a process killed would): its record stays,
        # and one of the others announces its end once its deadline in Redis passed.
        await leave_without_ending(serving)
        others = [r for r, c in zip(receivers, cluster.contexts, strict=True) if c is not serving]
        removed: list[SessionRemoved] = []
        deadline = asyncio.get_running_loop().time() + 15
        while not removed and asyncio.get_running_loop().time() < deadline:
            for receiver in others:
                while (event := receiver.try_recv()) is not None:
                    if isinstance(event, SessionRemoved):
                        removed.append(event)
            await asyncio.sleep(0.1)
        await asyncio.sleep(2)  # time for a second announcement, which must not come
        for receiver in others:
            while (event := receiver.try_recv()) is not None:
                if isinstance(event, SessionRemoved):
                    removed.append(event)
        assert [(str(e.client_id), e.reason) for e in removed] == [
            (client.client_id, RemovalReason.EXPIRED)
        ]
        reply, _ = await client.connect()
        assert reply.get("error") == "402::session_unknown"
