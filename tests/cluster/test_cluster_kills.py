"""``kill -9`` again and again of the process that serves a subscriber while messages stream
(issue 11): the real CometD JavaScript client carries on, on the other processes, with the
same client id. With its ``AckExtension`` every message arrives exactly once, in order, across
100 kills; without it, the messages of a reply lost with its process are lost, and nothing else
is: whatever arrives, arrives once and in order.

The subscriber reaches three processes through the round-robin proxy; a publisher streams
numbered messages through a fourth that is never killed (a publish lost with its process is
the publisher's to retry, and a retried one may be published twice: that is not what is
tested here). Each round waits until the subscriber received more messages (so it is served
again, on a process that holds its connect or is answering it), reads in Redis which process
serves its session, kills that one, and starts it again in the background. Waits are bounded
and end on state: messages received, the process listening.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from redis.asyncio import Redis

from support.cluster import Client, Cluster, cli_cluster, serving_node
from support.drivers import DriverClient, JsClient

# Each round waits this many seconds at most for the subscriber to get messages again.
WAIT = 30.0
# Messages the subscriber must receive between two kills: it is served again, by another
# process, and has acknowledged what it got before (the connect that carries the ack is the
# one that gets the next messages).
PROGRESS = 3
# The publisher stays at most this many messages ahead of the subscriber, so that a slow
# subscriber (on two busy cores) is never further behind than the history the cluster keeps.
AHEAD = 200
# The JS client retries soon after a failed connect (its default backoff starts at 1 s).
FAST_RETRY = {"backoffIncrement": 50, "maxBackoff": 500}
CHANNEL = "/stream"


@dataclass
class Stream:
    """What the subscriber received, and how far the publisher got."""

    received: list[int] = field(default_factory=list)
    published: int = 0
    handshakes: int = 0
    stopping: bool = False
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def wait_for(self, count: int, what: str) -> None:
        """Until ``count`` messages came."""
        await self._wait(lambda: len(self.received) >= count, f"{what}: {count} messages")

    async def wait_for_last(self) -> None:
        """Until the last message published came: a session gets a channel's messages in the
        order they were published, so every other one that will arrive has arrived then."""
        last = self.published - 1
        await self._wait(lambda: last in self.received[-1:], f"the last message ({last})")

    async def _wait(self, done: Callable[[], bool], what: str) -> None:
        async with self.changed:
            try:
                await asyncio.wait_for(self.changed.wait_for(done), WAIT)
            except TimeoutError:
                raise AssertionError(
                    f"{what} not in {WAIT} s (received {len(self.received)}, the last "
                    f"{self.received[-5:]}, of {self.published})"
                ) from None


async def follow(client: DriverClient, stream: Stream) -> None:
    """Takes in every event of the subscriber as it comes."""
    while True:
        event = await client.next_event(timeout=3600)
        if event.get("event") == "message":
            async with stream.changed:
                stream.received.append(event["data"])
                stream.changed.notify_all()
        elif event.get("event") == "meta" and event.get("listener") == "/meta/handshake":
            stream.handshakes += 1


async def publish(url: str, stream: Stream) -> None:
    """Publishes 0, 1, 2... on one process, each once, staying at most AHEAD in front."""
    publisher = Client(url)
    reply = await publisher.handshake()
    assert reply["successful"], reply
    while True:
        async with stream.changed:
            await asyncio.wait_for(
                stream.changed.wait_for(
                    lambda: stream.stopping or stream.published - len(stream.received) < AHEAD
                ),
                WAIT,
            )
        if stream.stopping:
            return
        reply = await publisher.publish(CHANNEL, stream.published)
        if reply.get("error", "").startswith("402"):
            # Its session expired (it never connects): not published; again in a new one.
            reply = await publisher.handshake()
            assert reply["successful"], reply
            continue
        assert reply["successful"] is True, reply
        stream.published += 1


async def node_id(redis: Redis, cluster: Cluster, node: int) -> str:
    """The cluster's name for a node process, read in the record of a session made there."""
    client = Client(cluster.node_url(node))
    reply = await client.handshake()
    assert reply["successful"], reply
    return await serving_node(redis, client.client_id)


# 100 rounds take about 80 s on two busy cores (each waits for the client to be served again).
@pytest.mark.timeout(300)
@pytest.mark.parametrize(("ack", "kills"), [(True, 100), (False, 20)], ids=["ack", "no-ack"])
async def test_kill_9_of_the_serving_process_again_and_again(
    redis_url: str, redis: Redis, ack: bool, kills: int
) -> None:
    options = ("--ack-extension",) if ack else ()
    async with cli_cluster(redis_url, 4, *options) as cluster, JsClient() as subscriber:
        publisher_node, killable = 3, range(3)
        cluster.proxy.take_out(cluster.ports[publisher_node])
        names = {await node_id(redis, cluster, node): node for node in killable}
        await subscriber.start(cluster.url, options=FAST_RETRY, extensions=["ack"] if ack else None)
        await subscriber.send({"cmd": "handshake"})
        handshake = await subscriber.expect("handshake", timeout=WAIT)
        assert handshake["successful"], handshake
        client_id = handshake["clientId"]
        if ack:
            assert handshake["reply"]["ext"]["ack"] is True, "the server offers the extension"
        await subscriber.send({"cmd": "subscribe", "channel": CHANNEL})
        subscribed = await subscriber.expect("subscribed", timeout=WAIT)
        assert subscribed["successful"], subscribed

        stream = Stream()
        tasks: list[asyncio.Task[None]] = [
            asyncio.create_task(follow(subscriber, stream)),
            asyncio.create_task(publish(cluster.node_url(publisher_node), stream)),
        ]
        restarts: dict[int, asyncio.Task[str]] = {}

        async def restart(node: int) -> str:
            async with asyncio.timeout(WAIT):
                await cluster.restart(node)
                return await node_id(redis, cluster, node)

        served_by: set[int] = set()
        try:
            for kill in range(kills):
                await stream.wait_for(len(stream.received) + PROGRESS, f"before kill {kill}")
                # The processes killed before the last one are back, so that one is left when
                # this one goes (the last one comes back meanwhile).
                for node, restarting in list(restarts.items())[:-1]:
                    names[await restarting] = node
                    del restarts[node]
                serving = await serving_node(redis, client_id)
                if serving not in names:  # the last one killed, back and serving already
                    for node, restarting in restarts.items():
                        names[await restarting] = node
                    restarts.clear()
                node = names[serving]
                served_by.add(node)
                await asyncio.wait_for(cluster.kill(node), WAIT)
                restarts[node] = asyncio.create_task(restart(node))
            await asyncio.gather(*restarts.values())
            # The stream ends: everything published arrives.
            await stream.wait_for(len(stream.received) + PROGRESS, "after the last kill")
            async with stream.changed:
                stream.stopping = True
                stream.changed.notify_all()
            await asyncio.wait_for(tasks.pop(), WAIT * 2)
            await stream.wait_for_last()
        finally:
            for running in tasks:
                running.cancel()
            if tasks:
                # Bounded: Python 3.11's wait_for may swallow a cancel that meets its result.
                done, _ = await asyncio.wait(tasks, timeout=WAIT)
                for running in done:
                    if not running.cancelled():
                        with contextlib.suppress(Exception):
                            running.result()
            for restarting in restarts.values():
                restarting.cancel()
                with contextlib.suppress(asyncio.CancelledError, AssertionError, TimeoutError):
                    await restarting

        received, published = stream.received, stream.published
        assert stream.handshakes == 1, "the client kept its session (no handshake again)"
        assert served_by == set(killable), "each process served the subscriber and was killed"
        if ack:
            assert received == list(range(published)), "every message once, in order"
        else:
            assert received == sorted(set(received)), "each message once, in order"
            # Lost: at most the messages of one reply per kill (the one its process was
            # writing), each a run of consecutive numbers.
            bounds = [-1, *received]
            gaps = sum(1 for a, b in itertools.pairwise(bounds) if b != a + 1)
            assert gaps <= kills, f"{published - len(received)} messages lost in {gaps} gaps"
            assert received[-1] == published - 1
