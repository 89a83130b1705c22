"""One request batch through the server: straight to the core when the application has no
hooks, otherwise message by message, with the application's extensions, security policy,
listeners and services around the core."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from starlette.datastructures import Headers

from .._core import ClientId, HeldConnect, Outcome
from ..cluster.attributes import NotStorable, check
from ..cluster.gates import made_when_done, when_passed
from ..cluster.node import (
    Drain,
    EngineUnavailable,
    acknowledged_batches,
    gated_away,
    replies_only,
)
from ..hooks import Hooks, Message, MessageRefused, ServerSession, extension_passes
from .http_wire import Header
from .message_json import TrackedMessage, dumps

if TYPE_CHECKING:
    from ..context import LongPollingServiceContext

log = logging.getLogger("starlette_cometd")

META = "/meta/"
SERVICE = "/service/"
# How often a batch in a cluster takes over the sessions it names before the core answers
# for those still elsewhere (a 402 when they exist nowhere).
TAKE_OVER_ATTEMPTS = 3


class Request:
    """Where a batch came from. ``data`` is the additional data for events; with a
    ``data_provider`` it is computed from the request, at most once, and only if an event
    needs it."""

    __slots__ = (
        "_data_ready",
        "address",
        "browser",
        "data",
        "data_provider",
        "headers",
        "multiplexed",
        "on_bound",
        "socket",
        "transport",
    )

    def __init__(
        self,
        browser: str | None,
        transport: str,
        headers: list[Header],
        data: Any = None,
        data_provider: Callable[[], Awaitable[Any]] | None = None,
        multiplexed: bool = False,
        on_bound: Callable[[list[str]], None] | None = None,
        socket: int | None = None,
        address: str | None = None,
    ) -> None:
        self.browser = browser
        #: The client's IP address, which the limit on sessions per address counts by.
        self.address = address
        self.transport = transport
        self.headers = headers
        self.data = data
        self.data_provider = data_provider
        self._data_ready = data_provider is None
        self.multiplexed = multiplexed
        #: Called with the sessions a batch bound to its WebSocket, before its effects apply,
        #: so that a message the batch published to its own session is pushed there.
        self.on_bound = on_bound
        #: The number of the WebSocket the batch came over (the owner of its sessions).
        self.socket = socket

    def event_data(self) -> Any:
        """The additional data, or an awaitable of it when it must still be computed."""
        if self._data_ready:
            return self.data
        return self._provide()

    async def _provide(self) -> Any:
        assert self.data_provider is not None
        if not self._data_ready:
            self.data = await self.data_provider()
            self._data_ready = True
        return self.data


class Reply(Protocol):
    """What a batch gets back: the core's ``Outcome`` on the fast path has this shape."""

    @property
    def status(self) -> int: ...

    @property
    def body(self) -> bytes: ...

    @property
    def hold(self) -> HeldConnect | None: ...

    @property
    def new_browser(self) -> str | None: ...


@dataclass(slots=True)
class HookedReply:
    status: int
    body: bytes
    hold: HeldConnect | None
    new_browser: str | None


def submit(
    context: LongPollingServiceContext, request: Request, body: bytes
) -> Reply | Awaitable[Reply]:
    """Handles one batch. Without application hooks this is the fast path: one call into the
    core, its effects applied, the reply returned at once. It returns an awaitable only when
    the batch needs Python that may wait: the application's hooks, or additional data for
    events computed from the request."""
    if context.hooks.active:
        return _Hooked(context, request).run(body)
    if context.cluster is not None:
        return _in_cluster(context, request, body)
    outcome = _process(context, request, body, None)
    pending = apply(context, request, outcome)
    if pending is None:
        return outcome
    return _after(pending, outcome)


def _process(
    context: LongPollingServiceContext, request: Request, body: bytes, alone: bool | None
) -> Outcome:
    """The core's ``process`` of a batch from where ``request`` says it came."""
    return context.engine.process(
        body,
        request.browser,
        request.transport,
        request.multiplexed,
        alone,
        request.socket,
        request.address,
    )


async def _after(pending: Awaitable[None], reply: Reply) -> Reply:
    await pending
    return reply


def _in_cluster(
    context: LongPollingServiceContext, request: Request, body: bytes
) -> Reply | Awaitable[Reply]:
    """The fast path in a cluster. A batch whose sessions are all here, and that changes
    nothing the cluster keeps, is answered at once, as on one process: most of all a connect
    that is held, which records its session's cursor only when it ends."""
    node = context.cluster
    assert node is not None
    engine = context.engine
    named = engine.named_sessions(body)
    if not node.may_act_now() or not all(here for _, here, _ in named) or _replays(context, body):
        return _clustered(context, request, body)
    outcome = _process(context, request, body, None)
    drained = _drained(named, outcome)
    if outcome.relayed and not (outcome.events or drained or outcome.hold):
        sent = node.publish_soon(outcome)
        if sent is not None:
            return _published(context, request, body, outcome, sent)
    if outcome.relayed or outcome.events or drained:
        drain = node.drained(drained)
        if not (outcome.relayed or outcome.events or outcome.hold) and node.only_gated(drain):
            return _gated(context, request, outcome, drain)
        return _recorded(context, request, body, outcome, drain)
    pending = apply(context, request, outcome)
    if pending is None:
        return outcome
    return _after(pending, outcome)


def _gated(
    context: LongPollingServiceContext, request: Request, outcome: Outcome, drain: Drain
) -> asyncio.Future[Reply]:
    """The reply of a batch that needs nothing written but the gate its drained sessions
    wait for (``node.only_gated``): most of all a long-poll answered with messages. Made by
    the gate's callback, as ``_recorded`` would make it, at a fraction of its cost (no task,
    no coroutines): under load this is most requests."""
    gate = drain.gate
    assert gate is not None

    def reply(held: frozenset[str] | None) -> Reply:
        body = outcome.body
        moved = gated_away(drain, held)
        if moved:
            # Taken by another node meanwhile: it sends their messages (see _commit).
            for client_id in moved:
                context.let_go(client_id)
            body = replies_only(body)
        pending = apply(context, request, outcome)
        assert pending is None, "a batch without events has no event data to wait for"
        return HookedReply(outcome.status, body, None, outcome.new_browser)

    return when_passed(gate, reply)


def _published(
    context: LongPollingServiceContext,
    request: Request,
    body: bytes,
    outcome: Outcome,
    sent: asyncio.Future[list[Any]],
) -> asyncio.Future[Reply]:
    """The reply of a batch that only publishes (``node.publish_soon``), made by the round
    trip's callback once Redis took its messages, as ``_recorded`` would make it, without a
    task or coroutines: under load, every publish."""
    node = context.cluster
    assert node is not None

    def reply(sent: asyncio.Future[list[Any]]) -> Reply:
        try:
            unstored = node.published(sent)
        except EngineUnavailable as error:
            context.outages.log(error)
            return HookedReply(200, unavailable_reply(context, body), None, None)
        pending = apply(context, request, outcome)
        assert pending is None, "a batch without events has no event data to wait for"
        reply_body = not_stored_reply(context, outcome, unstored) if unstored else outcome.body
        return HookedReply(outcome.status, reply_body, None, outcome.new_browser)

    return made_when_done(sent, reply)


async def _recorded(
    context: LongPollingServiceContext,
    request: Request,
    body: bytes,
    outcome: Outcome,
    drain: Drain,
) -> Reply:
    """The rest of the fast path in a cluster, for a batch whose effects must be recorded (it
    may run a loop turn after the core acted: ``drain`` was taken then)."""
    try:
        processed = await _commit(context, request, outcome, drain, {})
    except EngineUnavailable as error:
        context.outages.log(error)
        return HookedReply(200, unavailable_reply(context, body), None, None)
    return await _applied(context, request, processed)


async def _applied(
    context: LongPollingServiceContext,
    request: Request,
    processed: tuple[Outcome, bytes, HeldConnect | None],
) -> Reply:
    outcome, reply_body, hold = processed
    pending = apply(context, request, outcome)
    if pending is not None:
        await pending
    return HookedReply(outcome.status, reply_body, hold, outcome.new_browser)


async def _clustered(context: LongPollingServiceContext, request: Request, body: bytes) -> Reply:
    """The fast path in a cluster when sessions must first be brought here (or Redis failed
    since this node last looked): the core acts between bringing here the sessions the batch
    needs and recording what it changed."""
    lent: dict[str, str] = {}
    try:
        processed = await process_in_cluster(context, request, body, None, lent)
        if isinstance(processed, HookedReply):
            return processed
        return await _applied(context, request, processed)
    finally:
        give_back(context, lent)


async def bring_here(
    context: LongPollingServiceContext,
    request: Request,
    body: bytes,
    named: list[tuple[str, bool, bool]],
    borrowed: dict[str, str],
    replays: list[tuple[str, str, int]] | None = None,
) -> None:
    """Brings here the sessions a batch (``body``) names (``engine.named_sessions``): a
    session it connects is taken over from the node that served it (its messages go where it
    connects; with the ack extension, from the batch the connect acknowledges); any other is
    only borrowed for the batch, added to ``borrowed`` with the node serving it. A session
    that subscribes with a replay (``replays``: the batch's, when the caller has them) is
    taken over too: its replay is read where it lives (see cluster/history.py). Raises
    ``EngineUnavailable``."""
    node = context.cluster
    assert node is not None
    engine = context.engine
    if replays is None:
        replays = _replays(context, body)
    replaying = {client_id for client_id, _, _ in replays}
    if replaying:
        named = [(c, here, connects or c in replaying) for c, here, connects in named]
    await node.ready()
    # Another node may take a session back while this one waits on Redis (the client's
    # requests run at once on several nodes): until every session is here when nothing
    # waits any more, bring it again.
    for _ in range(TAKE_OVER_ATTEMPTS):
        missing = [(c, connects) for c, _, connects in named if not engine.session_info(c)]
        if not missing:
            break
        claimed = [c for c, connects in missing if connects]
        acknowledged = acknowledged_batches(body) if claimed else None
        await node.take_over(claimed, request.address, request.browser, acknowledged=acknowledged)
        lent = await node.borrow([c for c, connects in missing if not connects], request.address)
        borrowed.update(lent)


def give_back(context: LongPollingServiceContext, borrowed: dict[str, str]) -> None:
    """Lets the sessions borrowed for a batch go, once its effects are applied (the events
    carried their attributes)."""
    for client_id in borrowed:
        context.let_go(client_id)


async def process_in_cluster(
    context: LongPollingServiceContext,
    request: Request,
    body: bytes,
    alone: bool | None,
    borrowed: dict[str, str],
) -> tuple[Outcome, bytes, HeldConnect | None] | HookedReply:
    """``engine.process`` as one node of a cluster, with the sessions the batch names brought
    here (see ``bring_here``; those borrowed are added to ``borrowed``, and the caller gives
    them back with ``give_back`` once it applied the outcome). What the core changed is
    recorded in the cluster before the reply goes out. Returns the outcome, the reply's body
    and the connect to hold, or, when the cluster's Redis cannot be reached, an unsuccessful
    reply with advice to retry."""
    engine = context.engine
    node = context.cluster
    assert node is not None
    named = engine.named_sessions(body)
    asked = _replays(context, body)
    try:
        await bring_here(context, request, body, named, borrowed, asked)
        # Those of sessions here (the rest are answered 402 by the core): each is a read.
        replays = [r for r in asked if engine.session_info(r[0]) is not None]
        if replays:
            # Read up to where this node's fan-out stands, and processed with no wait since:
            # what comes after reaches the session from the fan-out.
            feed, cuts = await node.replay_feed([(c, a) for _, c, a in replays])
            engine.set_replay_feed(feed)
        try:
            outcome = _process(context, request, body, alone)
        finally:
            if replays:
                engine.set_replay_feed([])
        if replays:
            node.replayed(outcome, replays, cuts)
        drain = node.drained(_drained(named, outcome))
        return await _commit(context, request, outcome, drain, borrowed)
    except EngineUnavailable as error:
        context.outages.log(error)
        return HookedReply(200, unavailable_reply(context, body), None, None)


def _replays(context: LongPollingServiceContext, body: bytes) -> list[tuple[str, str, int]]:
    """The replays a batch's subscribes ask for in a cluster that keeps a history (see
    ``engine.replays``); the core looks only at a batch that names them."""
    node = context.cluster
    if node is None or not node.keeps_history or b'"replay"' not in body:
        return []
    return context.engine.replays(body)


def _drained(named: list[tuple[str, bool, bool]], outcome: Outcome) -> list[str]:
    """The sessions whose queue the batch's reply drains, so whose cursor moves: those it
    connects and that are answered now. Any other reply leaves their queued messages where
    they are (a cursor recorded past them would lose them with this process), and a held
    connect records its cursor when it is answered."""
    hold = outcome.hold
    held = hold.client_id if hold is not None else None
    return [client_id for client_id, _, connects in named if connects and client_id != held]


async def _commit(
    context: LongPollingServiceContext,
    request: Request,
    outcome: Outcome,
    drain: Drain,
    borrowed: dict[str, str],
) -> tuple[Outcome, bytes, HeldConnect | None]:
    """Records what the core changed (the cursor of the sessions it drained: ``drain``,
    where this node stood when it acted), then returns the outcome, the reply's body and the
    connect to hold. Raises ``EngineUnavailable`` (the sessions the batch created are then
    forgotten: not recorded, so not made)."""
    node = context.cluster
    assert node is not None
    engine = context.engine
    body = outcome.body
    try:
        if outcome.events and node.counts_sessions():
            refused = await node.count_sessions(outcome, request.address)
            if refused:
                body = _refuse_sessions(context, outcome, refused)
        moved, unstored = await node.commit(outcome, drain, borrowed)
        if unstored:
            body = not_stored_reply(context, outcome, unstored, body)
    except EngineUnavailable:
        for kind, client_id, _ in outcome.events:
            if kind == "session_added":
                engine.forget(client_id)
        raise
    hold = outcome.hold
    if hold is not None and hold.client_id not in moved:
        # Messages that came while the batch was being recorded woke nobody (the connect was
        # not parked yet): then it is answered now, with them.
        info = engine.session_info(hold.client_id)
        if info is None:
            # Let go meanwhile (another node took it): held here, the connect would wait its
            # whole timeout for messages that go there.
            moved = moved | {hold.client_id}
        elif info["queued"]:
            body = engine.complete_connect(hold, True)
            body = await node.delivered(hold.client_id, body, node.drained([hold.client_id]))
            return outcome, body, None
    if not moved:
        return outcome, body, hold
    # Another node took a session meanwhile: it sends its messages, and a connect held here
    # for it ends now, so that the client's next connect finds it there.
    for client_id in moved:
        context.let_go(client_id)
    if hold is not None and hold.client_id in moved:
        return outcome, engine.complete_connect(hold, False), None
    return outcome, replies_only(body), hold


def _refuse_sessions(
    context: LongPollingServiceContext, outcome: Outcome, refused: dict[str, str]
) -> bytes:
    """Undoes the sessions a batch created that the cluster refused (``refused``: each with
    its error): they are forgotten, unannounced, and their handshakes' replies become the
    refusal the core gives past a limit of its own. Returns the reply's body."""
    engine = context.engine
    for client_id in refused:
        engine.forget(client_id)
    # The outcome's own lists (each read returns the same one): neither announced nor bound.
    events, bound = outcome.events, outcome.bound
    events[:] = [e for e in events if not (e[0] == "session_added" and e[1] in refused)]
    bound[:] = [client_id for client_id in bound if client_id not in refused]
    replies: list[Message] = json.loads(outcome.body)  # the core's: objects, one per message
    for index, reply in enumerate(replies):
        named = reply.get("clientId")
        if reply.get("channel") == "/meta/handshake" and named in refused:
            error = refused[named]
            count_refusal(context, None, "/meta/handshake", error)
            denied: Message = {"channel": "/meta/handshake", "successful": False, "error": error}
            if "id" in reply:
                denied["id"] = reply["id"]
            replies[index] = denied
    return json.dumps(replies, separators=(",", ":")).encode()


UNAVAILABLE = "503::engine_unavailable"


def count_refusal(
    context: LongPollingServiceContext, client_id: Any, channel: Any, error: str
) -> None:
    """Counts an unsuccessful reply by its kind and logs it, as the core does its own, with
    the session and channel it was about (each left out unless a str)."""
    client_id = client_id if isinstance(client_id, str) else None
    channel = channel if isinstance(channel, str) else None
    context.engine.count_error(error)
    context.refusals.log([(client_id, channel, error)])


def _named(message: Any) -> tuple[Any, Any]:
    """The client id and channel a message (any JSON value) names, for ``count_refusal``."""
    if not isinstance(message, dict):
        return None, None
    return message.get("clientId"), message.get("channel")


def unavailable_reply(context: LongPollingServiceContext, body: bytes) -> bytes:
    """An unsuccessful reply to every message of a batch that could not be served because the
    cluster's engine is away, with advice that makes clients try again."""
    replies = []
    for raw, _ in context.engine.split(body) or ():
        try:
            message = json.loads(raw)
        except ValueError:
            message = None
        replies.append(
            _reply(
                message,
                successful=False,
                error=UNAVAILABLE,
                advice={"reconnect": "retry", "interval": 1000},
            )
        )
        count_refusal(context, *_named(message), UNAVAILABLE)
    return json.dumps(replies, separators=(",", ":")).encode()


NOT_STORED = "500::message_not_stored"


def not_stored_reply(
    context: LongPollingServiceContext,
    outcome: Outcome,
    unstored: list[int],
    body: bytes | None = None,
) -> bytes:
    """The reply ``body`` (the outcome's by default) with the publishes Redis refused to store
    (``unstored``: their indices in ``outcome.relayed``) answered unsuccessful. The core
    relays each publish it accepts once, in the batch's order, and answers it successful on
    its channel: the n-th such reply is the n-th relayed publish's."""
    relayed = outcome.relayed or ()
    refused = set(unstored)
    batch = json.loads(outcome.body if body is None else body)
    index = 0
    for reply in batch:
        if index == len(relayed):
            break
        if reply.get("successful") is True and reply.get("channel") == relayed[index][0]:
            if index in refused:
                reply["successful"] = False
                reply["error"] = NOT_STORED
                count_refusal(context, None, reply["channel"], NOT_STORED)
            index += 1
    return json.dumps(batch, separators=(",", ":")).encode()


def apply(
    context: LongPollingServiceContext, request: Request, outcome: Outcome
) -> Awaitable[None] | None:
    """Acts on what the core changed for this request; an awaitable when the events' data
    must first be computed."""
    bound = outcome.bound
    if bound and request.on_bound is not None:
        request.on_bound(bound)
    if not outcome.events or not context.wants_events:
        context.apply(outcome)
        return None
    data = request.event_data()
    if inspect.isawaitable(data):
        return _apply_with(context, request, outcome, data)
    context.apply(outcome, Headers(raw=request.headers), data)
    return None


async def _apply_with(
    context: LongPollingServiceContext, request: Request, outcome: Outcome, data: Awaitable[Any]
) -> None:
    context.apply(outcome, Headers(raw=request.headers), await data)


def _reply(message: Any, **fields: Any) -> Message:
    if not isinstance(message, dict):
        return dict(fields)
    reply: Message = {"channel": message.get("channel"), **fields}
    # A null id is no id, as the core reads it.
    if message.get("id") is not None:
        reply["id"] = message["id"]
    return reply


class _Hooked:
    """The slow path: each message passes the application's hooks, then the core."""

    def __init__(self, context: LongPollingServiceContext, request: Request) -> None:
        self.context = context
        self.hooks: Hooks = context.hooks
        self.request = request
        self.headers = Headers(raw=request.headers)
        self.browser = request.browser
        self.new_browser: str | None = None
        self.hold: HeldConnect | None = None
        self.parts: list[bytes] = []
        #: What the security policy set for the handshake being handled.
        self.attributes: dict[str, Any] = {}
        #: In a cluster: the sessions the batch borrowed (with the node serving each), and
        #: every session its hooks saw, whose attributes' changes are written at its end.
        self.borrowed: dict[str, str] = {}
        self.seen: dict[str, ServerSession] = {}

    async def run(self, body: bytes) -> Reply:
        context = self.context
        if context.cluster is None:
            return await self._run(body)
        # The sessions the batch names are here before its hooks run: the hooks see them
        # (and their attributes) as on the process that made them.
        try:
            try:
                named = context.engine.named_sessions(body)
                await bring_here(context, self.request, body, named, self.borrowed)
            except EngineUnavailable as error:
                context.outages.log(error)
                return HookedReply(200, unavailable_reply(context, body), None, None)
            reply = await self._run(body)
            await context.save_attributes(self.seen.values(), self.borrowed)
            return reply
        finally:
            give_back(context, self.borrowed)

    async def _run(self, body: bytes) -> Reply:
        engine = self.context.engine
        # The core splits the batch by its own reader, and says which messages the hooks may
        # see: exactly those it would act on. The others (not a message, nested too deep, a
        # channel name past the limits) go to it straight, unseen by the hooks.
        batch = engine.split(body)
        if not batch:
            # Not a batch at all, or an empty one: the core answers, and acts on nothing.
            request = self.request
            outcome = engine.process(body, self.browser, request.transport, socket=request.socket)
            self.context.apply(outcome)  # its refusal, logged
            return HookedReply(outcome.status, outcome.body, None, None)
        alone = len(batch) == 1
        for raw, readable in batch:
            if not readable:
                # Not a message the protocol can act on: the core names what is wrong.
                await self._core(raw, alone, None)
                continue
            message = TrackedMessage(raw)
            # The channel and id a failure reply names, whatever the hooks do to the message.
            named = _reply(message.value)
            try:
                await self._one(message, alone)
            except Exception:
                # A hook that fails answers its message unsuccessfully; the rest of the batch
                # and every other session carry on.
                log.exception("the application's hooks failed on %.200r", raw)
                failed = _reply(named, successful=False, error="500::server_error")
                count_refusal(self.context, *_named(message.value), "500::server_error")
                self.parts.append(dumps(failed).encode())
        parts = [part for part in self.parts if part]
        # A held connect stands alone, and its reply comes later: nothing goes out now (as on
        # the fast path; a WebSocket would otherwise send an empty batch).
        body = b"" if self.hold is not None and not parts else b"[" + b",".join(parts) + b"]"
        return HookedReply(200, body, self.hold, self.new_browser)

    async def _one(self, incoming: TrackedMessage, alone: bool) -> None:
        message: Message = incoming.value
        session = self._session(message)
        if session is not None:
            self.seen[str(session.client_id)] = session
        for extension in self.hooks.extensions:
            if not await extension_passes(extension.incoming, session, message):
                await self._send(
                    session, _reply(message, successful=False, error="404::message_deleted")
                )
                return
        channel: str = message["channel"]
        try:
            refusal = await self._check(session, channel, message)
        except MessageRefused as refused:  # raised by the security policy
            refusal = _refusal(message, refused, service=False)
        if refusal is None:
            refusal = self._unstorable(session, message)
        if refusal is not None:
            await self._send(session, refusal)
            return
        if session is not None and channel.startswith(SERVICE):
            served = self.hooks.service_for(channel)
            if served is not None:
                await self._serve(session, message, *served)
                return
        await self._core(incoming.text(), alone, session)

    def _unstorable(self, session: ServerSession | None, message: Message) -> Message | None:
        """In a cluster the session's attributes live in its record: a message whose hooks set
        one that cannot be stored there (not JSON, or past the size limit) is refused before it
        takes effect, with an error naming it, and the session keeps it as it was."""
        if self.context.cluster is None:
            return None
        if message["channel"] == "/meta/handshake":
            attributes, stored = self.attributes, {}
        elif session is not None:
            attributes, stored = session.attributes, session.stored
        else:
            return None
        try:
            check(attributes, stored)
        except NotStorable as refused:
            log.error("refused %.200r: its hooks set %s", message, refused.error)
            return _reply(message, successful=False, error=refused.error)
        return None

    def _session(self, message: Message) -> ServerSession | None:
        """The message's session, if the request may use it (the core's rule: its socket, or
        its cookie)."""
        client_id = message.get("clientId")
        # A client id is 40 hex digits; anything else (a lone surrogate, say) names no session.
        if not isinstance(client_id, str) or len(client_id) != 40 or not client_id.isascii():
            return None
        engine = self.context.engine
        request = self.request
        if not engine.owns_session(client_id, self.browser, request.transport, request.socket):
            return None
        return self.context.server_session(client_id)

    async def _check(
        self, session: ServerSession | None, channel: str, message: Message
    ) -> Message | None:
        """The security policy and the listeners: a refusal to send back, or ``None``."""
        policy = self.hooks.policy
        if channel == "/meta/handshake":
            if policy is not None:
                attributes: dict[str, Any] = {}
                if not await policy.can_handshake(attributes, message, self.headers):
                    advice = {"reconnect": "none", "interval": 0}
                    return _reply(
                        message, successful=False, error="403::handshake_denied", advice=advice
                    )
                self.attributes = attributes
            return None
        if session is None:
            return None  # the core answers 402
        if channel == "/meta/subscribe" and policy is not None:
            wanted = message.get("subscription")
            names = wanted if isinstance(wanted, list) else [wanted]
            for name in names:
                if isinstance(name, str) and not await policy.can_subscribe(session, name, message):
                    return _reply(
                        message,
                        successful=False,
                        error="403:denied_by_security_policy:subscribe_denied",
                        subscription=wanted,
                    )
            return None
        if channel.startswith(META):
            return None
        if policy is not None and not await policy.can_publish(session, channel, message):
            return _reply(
                message, successful=False, error="403:denied_by_security_policy:publish_denied"
            )
        for listener in self.hooks.listeners_for(channel):
            try:
                if await listener(session, message) is False:
                    return _reply(message, successful=False, error="404::message_deleted")
            except MessageRefused as refused:
                return _refusal(message, refused, service=False)
        return None

    async def _serve(
        self, session: ServerSession, message: Message, service: Any, params: dict[str, str]
    ) -> None:
        """Calls a service; its return value is the reply's ``data`` (the ``remoteCall``
        convention: same channel, same id)."""
        try:
            result = await service(session, message, **params)
        except MessageRefused as refused:
            await self._send(session, _refusal(message, refused, service=True))
            return
        except Exception:
            log.exception("service for %s failed", message["channel"])
            await self._send(
                session, _reply(message, successful=False, error="500::service_failed")
            )
            return
        refusal = self._unstorable(session, message)
        if refusal is not None:
            await self._send(session, refusal)
            return
        reply = _reply(message, successful=True)
        if result is not None:
            reply["data"] = result
        await self._send(session, reply)

    async def _core(self, text: bytes, alone: bool, session: ServerSession | None) -> None:
        """The core handles the message (its JSON ``text``); ``session`` is the one it named
        before (a disconnect ends it, yet its reply still passes the outgoing hooks with it)."""
        attributes, self.attributes = self.attributes, {}
        body = b"[" + text + b"]"
        request = self.request
        if self.context.cluster is not None:
            processed = await process_in_cluster(self.context, request, body, alone, self.borrowed)
            if isinstance(processed, HookedReply):
                self.parts.append(processed.body[1:-1])
                return
            outcome, reply_body, hold = processed
        else:
            outcome = self.context.engine.process(
                body,
                self.browser,
                request.transport,
                request.multiplexed,
                alone,
                request.socket,
                request.address,
            )
            reply_body, hold = outcome.body, outcome.hold
        if outcome.new_browser is not None:
            self.browser = self.new_browser = outcome.new_browser
        for kind, client_id, _ in outcome.events:
            if kind == "session_added":
                session = ServerSession(ClientId(client_id), attributes)
                self.context.add_server_session(session)
                self.seen[client_id] = session
        pending = apply(self.context, request, outcome)
        if pending is not None:
            await pending
        if hold is not None:
            self.hold = hold
        else:
            reply = self.context.finish_reply(reply_body, session)
            if not isinstance(reply, bytes):
                reply = await reply
            self.parts.append(reply[1:-1])

    async def _send(self, session: ServerSession | None, reply: Message) -> None:
        error = reply.get("error")
        if reply.get("successful") is False and isinstance(error, str):
            client_id = str(session.client_id) if session is not None else None
            count_refusal(self.context, client_id, reply.get("channel"), error)
        for extension in reversed(self.hooks.extensions):
            if not await extension_passes(extension.outgoing, session, reply):
                return
        self.parts.append(dumps(reply).encode())


def _refusal(message: Message, refused: MessageRefused, service: bool) -> Message:
    """An unsuccessful reply carrying the refusal's ``data``: as the reply's ``data`` for a
    service (``remoteCall`` reads it there), in ``ext.refusal`` for a broadcast publish, since
    the CometD JavaScript client takes a reply with ``data`` for a delivered message."""
    reply = _reply(message, successful=False, error=refused.error)
    if refused.data is not None:
        if service:
            reply["data"] = refused.data
        else:
            reply["ext"] = {"refusal": refused.data}
    return reply
