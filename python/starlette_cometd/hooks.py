"""What an application plugs into the server: services, channel listeners, a security policy
and extensions, and the per-session attributes they share."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import Headers

from ._core import ClientId

Message = dict[str, Any]

log = logging.getLogger("starlette_cometd")


@dataclass(eq=False)
class ServerSession:
    """A session as the application sees it: its id and the attributes the application keeps
    on it (set at handshake by the security policy, readable in every hook and event). In a
    cluster the attributes are kept in the session's record, so their values must be JSON."""

    client_id: ClientId
    attributes: dict[str, Any] = field(default_factory=dict)
    #: In a cluster: each attribute's JSON as the session's record holds it, so that only
    #: what changed is written, and what another process changed is merged in.
    stored: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)


class MessageRefused(Exception):
    """Raised by a listener or service to refuse a message with a Bayeux error string such as
    ``"403::not_a_member"``; ``data`` goes back to the client with the error."""

    def __init__(self, error: str = "404::message_deleted", data: Any = None) -> None:
        super().__init__(error)
        self.error = error
        self.data = data


class SecurityPolicy:
    """Decides who may handshake, subscribe and publish. Every check allows by default;
    override the ones the application needs. Meta channels are always refused for subscribing
    and publishing, and publishing always needs a handshake."""

    async def can_handshake(
        self, attributes: dict[str, Any], message: Message, headers: Headers
    ) -> bool:
        """``message`` is the handshake (its ``ext`` may carry a token); what is put in
        ``attributes`` becomes the new session's attributes."""
        return True

    async def can_subscribe(self, session: ServerSession, channel: str, message: Message) -> bool:
        return True

    async def can_publish(self, session: ServerSession, channel: str, message: Message) -> bool:
        return True


class Extension:
    """Sees every message a client sends (``incoming``, in registration order) and every reply
    the server sends back to it (``outgoing``, in reverse order), and may change them. Returning
    False from ``incoming`` deletes the message (the client gets ``404::message_deleted``);
    from ``outgoing``, drops the reply. Messages delivered to subscribers are not passed through
    ``outgoing`` one recipient at a time: change a publish once, in ``incoming`` or a listener."""

    async def incoming(self, session: ServerSession | None, message: Message) -> bool:
        return True

    async def outgoing(self, session: ServerSession | None, message: Message) -> bool:
        return True


Service = Callable[..., Awaitable[Any]]
Listener = Callable[[ServerSession, Message], Awaitable[bool | None]]

_TEMPLATE_PARAM = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")


class ChannelPattern:
    """A channel, a wildcard (``/a/*``, ``/a/**``) or a template (``/rooms/{room}``)."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.segments = pattern.strip("/").split("/")

    def match(self, channel: str) -> dict[str, str] | None:
        """The template parameters if ``channel`` matches, else ``None``."""
        parts = channel.strip("/").split("/")
        params: dict[str, str] = {}
        for i, segment in enumerate(self.segments):
            if segment == "**":
                return params if len(parts) > i else None
            if i >= len(parts):
                return None
            if segment == "*":
                continue
            name = _TEMPLATE_PARAM.match(segment)
            if name is not None:
                params[name.group(1)] = parts[i]
            elif segment != parts[i]:
                return None
        return params if len(parts) == len(self.segments) else None


class Hooks:
    """Everything the application registered. While it is empty, requests take the core's fast
    path and no Python runs per message."""

    def __init__(self) -> None:
        self.services: list[tuple[ChannelPattern, Service]] = []
        self.listeners: list[tuple[ChannelPattern, Listener]] = []
        self.extensions: list[Extension] = []
        self._policy: SecurityPolicy | None = None
        #: Whether anything is registered: a plain attribute, since every request reads it.
        self.active = False

    def add_service(self, pattern: ChannelPattern, service: Service) -> None:
        self.services.append((pattern, service))
        self.active = True

    def add_listener(self, pattern: ChannelPattern, listener: Listener) -> None:
        self.listeners.append((pattern, listener))
        self.active = True

    def add_extension(self, extension: Extension) -> None:
        self.extensions.append(extension)
        self.active = True

    @property
    def policy(self) -> SecurityPolicy | None:
        return self._policy

    @policy.setter
    def policy(self, policy: SecurityPolicy | None) -> None:
        self._policy = policy
        self.active = bool(self.services or self.listeners or self.extensions or policy)

    def service_for(self, channel: str) -> tuple[Service, dict[str, str]] | None:
        for pattern, service in self.services:
            params = pattern.match(channel)
            if params is not None:
                return service, params
        return None

    def listeners_for(self, channel: str) -> list[Listener]:
        return [
            listener for pattern, listener in self.listeners if pattern.match(channel) is not None
        ]


async def extension_passes(
    hook: Callable[[ServerSession | None, Message], Awaitable[bool]],
    session: ServerSession | None,
    message: Message,
) -> bool:
    """Runs one extension hook. An extension that raises is logged and passed over, as CometD
    does: the message goes on as if the extension had let it through."""
    try:
        return await hook(session, message)
    except Exception:
        log.exception("extension hook %r failed; the message goes on without it", hook)
        return True
