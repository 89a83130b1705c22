"""Where a node's sessions stand, recorded by gates (see ``cluster/gates.py``): a node whose
sessions keep up writes nothing per session and message, and those behind are marked a few
hundred to a call; a session taken over is let go by the node serving it, or that node is
fenced, and either way nothing is lost or sent twice."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

import pytest
import redis.asyncio
from redis.exceptions import ResponseError

from starlette_cometd import LongPollingServiceContextBuilder
from starlette_cometd.cluster import node as node_module
from starlette_cometd.cluster.connection import connect
from starlette_cometd.cluster.gates import MARKS_PER_CALL, GatedPush, Gates
from starlette_cometd.cluster.keys import PUBLISH, Cursor, Keys
from starlette_cometd.cluster.turns import Turns
from support.cluster import Client, asgi_cluster, gather_until


async def _calls(redis_url: str, command: str) -> int:
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        stats: Any = await client.info("commandstats")
    finally:
        await client.aclose()
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def test_sessions_that_keep_up_cost_no_write_per_session_and_message(redis_url: str) -> None:
    """Ten long-polls held on one node, each message published answers all of them: what the
    node records before the replies go out is one gate, not a record per session."""
    async with asgi_cluster(redis_url, 2) as cluster:
        subscribers = [Client(cluster.node_url(0)) for _ in range(10)]
        publisher = Client(cluster.node_url(1))
        for client in [*subscribers, publisher]:
            await client.handshake()
        for client in subscribers:
            await client.subscribe("/a")
            await client.connect()  # the first connect, answered at once
        polls = [asyncio.create_task(client.connect()) for client in subscribers]
        await asyncio.sleep(0.5)  # every connect held
        before = await _calls(redis_url, "hset")
        messages = 20
        for n in range(messages):
            assert (await publisher.publish("/a", n))["successful"] is True
            replies = await asyncio.gather(*polls)
            assert all([m["data"] for m in got] == [n] for _, got in replies), replies
            polls = [asyncio.create_task(client.connect()) for client in subscribers]
        written = await _calls(redis_url, "hset") - before
        # A gate per message (each answered every connect) and a few besides; a record per
        # session and message would be 200.
        assert written <= 2 * messages, written
        for poll in polls:
            poll.cancel()


async def test_a_node_that_does_not_let_go_is_fenced_and_sends_nothing_more(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node that does not answer a take-over (here: deaf to it; a node that died does not
    listen at all) is fenced: the other node catches the session up from where that node's
    last gate left it, and that node's next gate fails, so the messages it queued for the
    session never go out from it, and it lets its sessions go."""
    monkeypatch.setattr(node_module, "RELEASE_WAIT", 0.5)
    async with asgi_cluster(redis_url, 2) as cluster:
        deaf = cluster.contexts[0]
        node = deaf.cluster
        assert node is not None
        obey = node._obey

        async def ignore_releases(note: str) -> None:
            if not note.startswith("release:"):
                await obey(note)

        node._obey = ignore_releases  # type: ignore[method-assign]
        subscriber, publisher = Client(cluster.node_url(0)), Client(cluster.node_url(1))
        for client in (subscriber, publisher):
            await client.handshake()
        await subscriber.subscribe("/a")
        await subscriber.connect()
        assert (await publisher.publish("/a", "one"))["successful"] is True
        received = [m["data"] for m in await gather_until(subscriber, 1)]
        # Queued on node 0, not delivered there: the session moves to node 1 now.
        assert (await publisher.publish("/a", "two"))["successful"] is True

        async def queued() -> bool:
            info = deaf.session_info(subscriber.client_id)
            return info is not None and info["queued"] == 1

        while not await queued():
            await asyncio.sleep(0.05)
        subscriber.url = cluster.node_url(1)
        received += [m["data"] for m in await gather_until(subscriber, 1)]
        assert received == ["one", "two"]
        # Node 0's next gate (its own publish's reply waits for one) finds it fenced.
        other = Client(cluster.node_url(0))
        await other.handshake()
        await other.subscribe("/b")
        fenced_id = node.id
        reply, _ = await other.connect()
        assert deaf.session_info(subscriber.client_id) is None
        assert node.id != fenced_id  # it goes on under a new id
        assert (await publisher.publish("/a", "three"))["successful"] is True
        assert [m["data"] for m in await gather_until(subscriber, 1)] == ["three"]
        assert reply["successful"] is True, reply


async def test_a_node_that_leaves_takes_no_gate_after(redis_url: str) -> None:
    """A gate asked for as the node leaves the cluster is not taken after: it would use the
    node's closed connections (a Redis Cluster client opens new ones, left unclosed). What
    waited for it goes out as it is."""
    context = LongPollingServiceContextBuilder().redis(redis_url).build()
    await context.open()
    node = context.cluster
    assert node is not None and node._gates is not None
    gates = node._gates
    waiting = [gates.wait()]
    await asyncio.sleep(0)  # under way: asked for, not yet taken
    waiting.append(gates.wait())
    await context.close()
    await asyncio.sleep(0.1)
    assert all(future.done() for future in waiting)
    assert not gates.tasks
    after = gates.wait()
    assert after.done() and after.result() == frozenset()
    await asyncio.sleep(0.1)
    assert not gates.tasks


async def test_a_gate_marks_many_sessions_in_few_calls_each_session_its_own_result(
    redis_url: str,
) -> None:
    """On one Redis server a gate marks the sessions behind it a few hundred to a script call;
    a session's record of another type, or served by another node now, is that session's
    result alone."""
    connection = await connect(redis_url)
    redis_client = connection.redis
    keys = Keys("t", 1)
    turns = Turns(redis_client, connection.script(PUBLISH))
    gates = Gates(
        connection, turns, keys, "me", cast(Any, None), lambda: (0,), lambda _: "P", 60_000
    )
    try:
        sessions = [f"{n:040x}" for n in range(2 * MARKS_PER_CALL + 1)]
        pipe = redis_client.pipeline(transaction=False)
        for client_id in sessions:
            pipe.hset(keys.session(client_id), mapping={"n": "me", "c": "old"})
        await pipe.execute()
        bad, moved = sessions[3], sessions[MARKS_PER_CALL + 7]
        await redis_client.delete(keys.session(bad))
        await redis_client.set(keys.session(bad), "not a hash")
        await redis_client.hset(keys.session(moved), "n", "other")
        await redis_client.config_resetstat()
        writes = [(client_id, f"before-{n}", f"after-{n}") for n, client_id in enumerate(sessions)]
        marked, passed = await gates._write_gate("1", "P", writes)
        assert passed
        stats: Any = await redis_client.info("commandstats")
        assert stats["cmdstat_eval"]["calls"] == 3 + 1  # three calls of marks, then the gate
        results = dict(zip(sessions, marked, strict=True))
        assert isinstance(results.pop(bad), ResponseError)
        assert results.pop(moved) == 0
        assert set(results.values()) == {1}
        record = await redis_client.hgetall(keys.session(sessions[MARKS_PER_CALL]))
        n = MARKS_PER_CALL
        assert record == {
            b"n": b"me",
            b"c": f"before-{n}".encode(),
            b"g": b"me:1",
            b"h": f"after-{n}".encode(),
        }
        assert await redis_client.hgetall(keys.session(moved)) == {b"n": b"other", b"c": b"old"}
    finally:
        await connection.aclose()


@pytest.mark.parametrize(
    "cursor",
    [
        Cursor((None,), (0,)),
        Cursor(("9f0c2a1b7e3d4c5a",), (12_345_678_901,)),
        Cursor(("a", None, 'quote"d'), (1, 0, 7)),
    ],
)
def test_a_cursor_is_written_as_json_writes_it_and_read_back(cursor: Cursor) -> None:
    """Cursors are compared as written (the gate's marks, a record's ``c``): the fast encoding
    writes exactly what ``json.dumps`` did, whatever the epochs hold."""
    text = cursor.encode()
    assert text == json.dumps([list(cursor.epochs), list(cursor.offsets)], separators=(",", ":"))
    assert Cursor.decode(text, len(cursor.offsets)) == cursor


def test_a_cursor_with_offsets_that_are_no_numbers_is_refused() -> None:
    with pytest.raises(ValueError, match="not a cursor"):
        Cursor.decode('[["e"],[true]]', 1)


async def test_a_gated_push_is_resolved_in_the_gates_own_step() -> None:
    """A push waiting for its gate: the socket's callback runs within the resolution (no loop
    turn between), an awaiting writer gets the messages (or None when they must not go), and
    a cancelled gate cancels the wait."""
    passed: list[bytes | None] = []
    push = GatedPush("c", b"[1]")
    push.on_passed = lambda item: passed.append(item.body)
    push.resolve(True)
    assert passed == [b"[1]"]
    assert await push == b"[1]"

    held = GatedPush("c", b"[2]")
    awaited = asyncio.ensure_future(_await(held))
    await asyncio.sleep(0)
    held.resolve(False)
    assert await awaited is None

    cancelled = GatedPush("c", b"[3]")
    awaited = asyncio.ensure_future(_await(cancelled))
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await awaited
    with pytest.raises(asyncio.CancelledError):
        await cancelled


async def _await(push: GatedPush) -> bytes | None:
    return await push
