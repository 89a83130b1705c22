"""The application's hooks and session attributes in a cluster (issue 11): whichever process a
request reaches, the security policy, listeners, services and extensions run there with the
session's attributes, which live in the session's record in Redis; a change made on one
process is seen on the others; events carry them, ``SessionRemoved`` on expiry too; a value
that is not JSON is refused with an error naming it; ``find_session`` answers for a session
served anywhere."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from starlette.datastructures import Headers

from starlette_cometd import (
    Event,
    Extension,
    LongPollingServiceContext,
    LongPollingServiceContextBuilder,
    Message,
    RemovalReason,
    SecurityPolicy,
    ServerSession,
    SessionRemoved,
    Subscribe,
)
from support.cluster import Client, Cluster, asgi_cluster, leave_without_ending


class Policy(SecurityPolicy):
    """The user named in the handshake's ``ext``; nobody but an admin publishes to /admin."""

    async def can_handshake(
        self, attributes: dict[str, Any], message: Message, headers: Headers
    ) -> bool:
        ext = message.get("ext") or {}
        attributes["user"] = ext.get("user")
        if "extra" in ext:
            attributes["extra"] = object() if ext["extra"] == "object" else ext["extra"]
        return True

    async def can_publish(self, session: ServerSession, channel: str, message: Message) -> bool:
        return channel != "/admin" or session.attributes.get("role") == "admin"


class Promote(Extension):
    """Gives a session the role its message's ``ext.promote`` names."""

    async def incoming(self, session: ServerSession | None, message: Message) -> bool:
        role = (message.get("ext") or {}).get("promote")
        if session is not None and role is not None:
            session.attributes["role"] = role
        return True


def with_hooks(
    context: LongPollingServiceContext, node: int, seen: list[tuple[int, dict[str, Any]]]
) -> None:
    """The same hooks on every process, as a deployment has; ``seen`` records which process's
    listener saw which attributes."""
    context.security_policy = Policy()
    context.add_extension(Promote())

    @context.service("/service/whoami")
    async def whoami(session: ServerSession, message: Message) -> Any:
        return {"node": node, **session.attributes}

    @context.service("/service/set")
    async def set_attribute(session: ServerSession, message: Message) -> Any:
        name, value = message["data"]["name"], message["data"]["value"]
        unstorable = {"object": object(), "nan": float("nan")}
        session.attributes[name] = unstorable.get(value, value) if isinstance(value, str) else value
        return None

    @context.listener("/chat/**")
    async def listen(session: ServerSession, message: Message) -> bool:
        seen.append((node, dict(session.attributes)))
        message["data"]["by"] = session.attributes.get("user")
        return True


def at(client: Client, cluster: Cluster, node: int) -> Client:
    """The client, sending its next requests to one process."""
    client.url = cluster.node_url(node)
    return client


def drain(receivers: list[Any], kind: type[Event]) -> list[tuple[int, Any]]:
    """The events of one kind each process emitted so far, with the process's number."""
    found = []
    for node, receiver in enumerate(receivers):
        while (event := receiver.try_recv()) is not None:
            if isinstance(event, kind):
                found.append((node, event))
    return found


async def wait_for(condition: Callable[[], bool], seconds: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "not reached in time"
        await asyncio.sleep(0.05)


async def test_attributes_set_on_one_process_are_seen_and_changed_on_the_others(
    redis_url: str,
) -> None:
    seen: list[tuple[int, dict[str, Any]]] = []
    async with asgi_cluster(redis_url, 3) as cluster:
        for node, context in enumerate(cluster.contexts):
            with_hooks(context, node, seen)
        receivers = [context.rx() for context in cluster.contexts]
        client = Client(cluster.url)
        # A: the security policy sets the attribute at handshake; the session is served there.
        assert (await at(client, cluster, 0).handshake(ext={"user": "ann"}))["successful"]
        reply, _ = await client.connect()
        assert reply["successful"] is True, reply
        assert cluster.contexts[0].session_info(client.client_id) is not None
        # B: a service sees it; an extension changes it.
        [who] = await at(client, cluster, 1).send(
            {"channel": "/service/whoami", "clientId": client.client_id, "data": {}}
        )
        assert who["data"] == {"node": 1, "user": "ann"}, who
        [who] = await client.send(
            {
                "channel": "/service/whoami",
                "clientId": client.client_id,
                "data": {},
                "ext": {"promote": "admin"},
            }
        )
        assert who["data"] == {"node": 1, "user": "ann", "role": "admin"}, who
        # C: the security policy and a listener see the change, and so do the events there.
        [subscribed] = await at(client, cluster, 2).subscribe("/chat/room")
        assert subscribed["successful"] is True, subscribed
        assert (await client.publish("/admin", {"text": "hello"}))["successful"] is True
        assert (await client.publish("/chat/room", {"text": "hi"}))["successful"] is True
        assert seen == [(2, {"user": "ann", "role": "admin"})]
        [(node, event)] = drain(receivers, Subscribe)
        assert node == 2 and event.attributes == {"user": "ann", "role": "admin"}
        # A, which serves the session, is told of the change made on B.
        served = cluster.contexts[0].server_session(client.client_id)
        await wait_for(lambda: served.attributes.get("role") == "admin")
        assert (await at(client, cluster, 0).publish("/chat/room", {"text": "again"}))["successful"]
        assert seen[-1] == (0, {"user": "ann", "role": "admin"})
        reply, messages = await client.connect()
        assert [m["data"] for m in messages] == [
            {"text": "hi", "by": "ann"},
            {"text": "again", "by": "ann"},
        ]
        # Any process answers for it; only A holds its queue.
        found = await cluster.contexts[1].find_session(client.client_id)
        assert found == {
            "subscriptions": ["/chat/room"],
            "browser": found and found["browser"],
            "ack": False,
            "connected": True,
            "attributes": {"user": "ann", "role": "admin"},
            "here": False,
        }
        here = await cluster.contexts[0].find_session(client.client_id)
        assert here is not None and here["here"] is True and "queued" in here
        assert here["attributes"] == {"user": "ann", "role": "admin"}
        assert await cluster.contexts[2].find_session("ab" * 20) is None
        # Its end, on B, carries them, once in the cluster.
        [bye] = await at(client, cluster, 1).send(
            {"channel": "/meta/disconnect", "clientId": client.client_id}
        )
        assert bye["successful"] is True, bye
        await wait_for(lambda: cluster.contexts[0].session_info(client.client_id) is None)
        removed = drain(receivers, SessionRemoved)
        assert [(node, e.attributes) for node, e in removed] == [
            (1, {"user": "ann", "role": "admin"})
        ]


async def test_the_security_policy_runs_on_a_process_the_session_never_reached(
    redis_url: str,
) -> None:
    seen: list[tuple[int, dict[str, Any]]] = []
    async with asgi_cluster(redis_url, 2) as cluster:
        for node, context in enumerate(cluster.contexts):
            with_hooks(context, node, seen)
        client = Client(cluster.url)
        await at(client, cluster, 0).handshake(ext={"user": "bob"})
        await client.connect()
        refused = await at(client, cluster, 1).publish("/admin", {"text": "let me in"})
        assert refused["error"] == "403:denied_by_security_policy:publish_denied", refused
        assert (await client.publish("/chat/x", {"text": "hi"}))["successful"] is True
        assert seen == [(1, {"user": "bob"})]


async def test_an_attribute_that_is_not_json_is_refused_and_harms_nothing(
    redis_url: str,
) -> None:
    async with asgi_cluster(redis_url, 2) as cluster:
        for node, context in enumerate(cluster.contexts):
            with_hooks(context, node, [])
        # At handshake: refused, naming it, and no session is made.
        stranger = Client(cluster.url)
        denied = await at(stranger, cluster, 0).handshake(ext={"user": "eve", "extra": "object"})
        assert denied["successful"] is False
        assert denied["error"] == "500:extra:session_attribute_not_json", denied
        client, other = Client(cluster.url), Client(cluster.url)
        await at(client, cluster, 0).handshake(ext={"user": "ann"})
        await at(other, cluster, 0).handshake(ext={"user": "bob"})
        await client.connect()
        await client.send(
            {
                "channel": "/service/set",
                "clientId": client.client_id,
                "data": {"name": "mood", "value": "calm"},
            }
        )

        async def set_to(value: Any) -> Message:
            reply: Message
            [reply] = await at(client, cluster, 1).send(
                {
                    "channel": "/service/set",
                    "clientId": client.client_id,
                    "data": {"name": "mood", "value": value},
                }
            )
            return reply

        # By a service on another process: refused, and the session keeps what it had.
        for value, error in [
            ("object", "500:mood:session_attribute_not_json"),
            ("nan", "500:mood:session_attribute_not_json"),
            ("x" * 70_000, "500:mood:session_attributes_too_large"),
        ]:
            refused = await set_to(value)
            assert refused["successful"] is False and refused["error"] == error, refused
        for node in (0, 1):
            [who] = await at(client, cluster, node).send(
                {"channel": "/service/whoami", "clientId": client.client_id, "data": {}}
            )
            assert who["data"] == {"node": node, "user": "ann", "mood": "calm"}, who
        assert (await set_to(["glad", 1, None]))["successful"] is True
        # The process serving the session hears of the change by a note, shortly after.
        served = cluster.contexts[0].server_session(client.client_id)
        await wait_for(lambda: served.attributes.get("mood") == ["glad", 1, None])
        found = await cluster.contexts[0].find_session(client.client_id)
        assert found is not None and found["attributes"]["mood"] == ["glad", 1, None]
        # The session and the others work on.
        await at(other, cluster, 1).subscribe("/chat/room")
        await other.connect()
        assert (await at(client, cluster, 0).publish("/chat/room", {"text": "hi"}))["successful"]
        _, messages = await at(other, cluster, 1).connect()
        assert [m["data"] for m in messages] == [{"text": "hi", "by": "ann"}]


async def test_session_removed_on_expiry_carries_the_attributes(redis_url: str) -> None:
    def short() -> LongPollingServiceContextBuilder:
        return LongPollingServiceContextBuilder().timeout(0.5).max_interval(0.5)

    async with asgi_cluster(redis_url, 3, short) as cluster:
        for node, context in enumerate(cluster.contexts):
            with_hooks(context, node, [])
        receivers = [context.rx() for context in cluster.contexts]
        client = Client(cluster.url)
        await at(client, cluster, 0).handshake(ext={"user": "ann"})
        await client.connect()
        # Changed on another process than the one serving it.
        await at(client, cluster, 1).send(
            {
                "channel": "/service/whoami",
                "clientId": client.client_id,
                "data": {},
                "ext": {"promote": "op"},
            }
        )
        # Its process stops without ending it, as a process killed would: another announces
        # its end once its deadline in Redis passed, with its attributes from its record.
        serving = cluster.contexts[0]
        await leave_without_ending(serving)
        removed: list[tuple[int, Any]] = []

        def announced() -> bool:
            removed.extend(drain(receivers[1:], SessionRemoved))
            return bool(removed)

        await wait_for(announced, 15)
        [(_, event)] = removed
        assert str(event.client_id) == client.client_id
        assert event.reason == RemovalReason.EXPIRED
        assert event.attributes == {"user": "ann", "role": "op"}
