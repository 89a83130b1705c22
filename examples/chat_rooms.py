"""A chat server with the application's side of CometD: a security policy that admits only
clients with a token and remembers who they are, a listener that moderates messages, a
service that answers the clients' remoteCall, and an extension that names the server in
every reply.

Run: uvicorn examples.chat_rooms:app --port 8000
A CometD JS client then handshakes with ``cometd.handshake({ext: {token: "alice"}}, cb)`` and
calls ``cometd.remoteCall("members/lobby", {}, cb)``.
"""

from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import Headers

from starlette_cometd import (
    CometdRoute,
    Extension,
    LongPollingServiceContextBuilder,
    Message,
    MessageRefused,
    RouterBuilder,
    SecurityPolicy,
    ServerSession,
)

TOKENS = {"alice": "Alice", "bob": "Bob"}  # a stand-in for a real user store


class TokenPolicy(SecurityPolicy):
    async def can_handshake(
        self, attributes: dict[str, Any], message: Message, headers: Headers
    ) -> bool:
        user = TOKENS.get((message.get("ext") or {}).get("token", ""))
        if user is None:
            return False  # the client gets 403::handshake_denied and stops
        attributes["user"] = user
        return True

    async def can_subscribe(self, session: ServerSession, channel: str, message: Message) -> bool:
        return channel.startswith("/chat/")


class ServerName(Extension):
    """Adds ``ext.server`` to every reply, so clients can tell which node answered."""

    async def outgoing(self, session: ServerSession | None, message: Message) -> bool:
        message.setdefault("ext", {})["server"] = "chat-1"
        return True


context = (
    LongPollingServiceContextBuilder()
    .security_policy(TokenPolicy())
    .ack_extension()  # reliable delivery for clients that register the AckExtension
    .timesync()  # and a server clock for those that register the TimeSyncExtension
    .build()
)
context.add_extension(ServerName())
members: dict[str, set[str]] = {}


@context.listener("/chat/{room}")
async def moderate(session: ServerSession, message: Message) -> None:
    text = str((message.get("data") or {}).get("text", ""))
    if not text.strip():
        raise MessageRefused("400::empty_message")
    # Stamp every message with its sender, as the server knows it.
    message["data"] = {"text": text, "user": session.attributes["user"]}


@context.service("/service/members/{room}")
async def list_members(session: ServerSession, message: Message, room: str) -> Any:
    members.setdefault(room, set()).add(session.attributes["user"])
    return sorted(members[room])


app = Starlette(
    routes=[CometdRoute("/cometd", RouterBuilder().build(context))], lifespan=context.lifespan
)
