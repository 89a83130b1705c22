"""Application hooks for tests that run the same traffic with and without them: one of every
kind, none refusing anything."""

from __future__ import annotations

from typing import Any

from starlette_cometd import (
    Extension,
    LongPollingServiceContext,
    Message,
    SecurityPolicy,
    ServerSession,
)


class Passing(Extension):
    """Sees every message and changes none."""


class Marking(Extension):
    """Changes every message in and every reply out, so that each is written back by Python:
    an ``ext`` where a message has none, and ``ext.hooked`` on replies."""

    async def incoming(self, session: ServerSession | None, message: Message) -> bool:
        message.setdefault("ext", {"hooked": True})
        return True

    async def outgoing(self, session: ServerSession | None, message: Message) -> bool:
        ext = message.setdefault("ext", {})
        if isinstance(ext, dict):
            ext["hooked"] = True
        return True


def register_hooks(context: LongPollingServiceContext, extension: Extension) -> None:
    """``extension``, a security policy, a listener on every channel and a service on
    ``/service/echo`` (which answers with the data it got)."""
    context.add_extension(extension)
    context.security_policy = SecurityPolicy()

    @context.listener("/**")
    async def listen(session: ServerSession, message: Message) -> None:
        return None

    @context.service("/service/echo")
    async def echo(session: ServerSession, message: Message) -> Any:
        return message.get("data")


def unmarked(values: list[Any]) -> list[Any]:
    """Replies without what :class:`Marking` added to them."""
    for value in values:
        ext = value.get("ext") if isinstance(value, dict) else None
        if isinstance(ext, dict) and ext.pop("hooked", None) and not ext:
            del value["ext"]
    return values
