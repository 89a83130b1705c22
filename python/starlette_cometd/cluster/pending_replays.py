"""Replays that must move with their session (see history.py for the replays themselves).

A session taken over gets from the new node what it missed since where it stood, read from
the logs. A replay is not in the logs after that point: it is the history of a channel up to
where the node that served the subscribe stood (its cut). So until a replay is delivered, the
session's record names it (field ``rp``: ``[channel, id asked after, cut]`` each), and a node
that takes the session over queues it again, in its place among what the session missed: after
the entries of the channel's log up to the cut, which are the replay's and are passed over.

The node serving the session notes a replay when its subscribe succeeds and writes the list
with the subscribe's other changes; it clears it once a reply or push that carried the
replay went out (it did not if the session moved meanwhile: the record still names it). The
writes are versioned (``rv``), since those of a delivery go in the background: an older list
never overwrites a newer one. A replay delivered just as its session moves may be delivered
twice; one is never lost. Sessions of the ack extension are not covered (their replays are
lost when they move before they are delivered)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from .connection import REDIS_ERRORS
from .keys import Keys

log = logging.getLogger("starlette_cometd.cluster")

# Writes a session's pending replays if newer than those recorded. KEYS: the session hash.
# ARGV: the version, the list as JSON ("" when none is pending). Nothing for a session gone.
RECORD_REPLAYS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local version = redis.call('HGET', KEYS[1], 'rv')
if version and tonumber(version) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'rv', ARGV[1])
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], 'rp')
else
  redis.call('HSET', KEYS[1], 'rp', ARGV[2])
end
return 1
"""

# A replay not delivered yet: the channel, the id asked after (-2: all kept), the cut.
Replay = tuple[str, int, int]
# Replays a record may name at most: more is bad data.
MAX_RECORDED = 10_000

Script = Callable[..., Coroutine[Any, Any, Any]]


class PendingReplays:
    """The replays of this node's sessions not delivered yet, and their record."""

    def __init__(
        self, keys: Keys, record: Script, background: Callable[[Coroutine[Any, Any, None]], None]
    ) -> None:
        self._keys = keys
        self._record = record
        self._background = background
        self._pending: dict[str, list[Replay]] = {}
        # Drained into a reply or push that waits for its gate: still named by the record.
        self._in_flight: dict[str, list[Replay]] = {}
        self._versions: dict[str, int] = {}
        self._to_record: set[str] = set()

    def queued(self, client_id: str, replays: Iterable[Replay]) -> None:
        """Replays just queued for a session served here."""
        pending = self._pending.setdefault(client_id, [])
        pending.extend(replay for replay in replays if replay not in pending)
        self._to_record.add(client_id)

    def adopted(
        self, client_id: str, replays: list[Replay], named: list[Replay], version: int
    ) -> None:
        """A session taken over with ``replays`` queued again here, of the ``named`` ones its
        record (of that version) named. Those passed over (lost, or of a channel it left) are
        written out of the record with the batch's changes: a later take-over must not queue
        them, once the session subscribes again, after what it got since."""
        self._versions[client_id] = version
        if replays:
            self._pending[client_id] = list(replays)
        if len(replays) < len(named):
            self._to_record.add(client_id)

    def forget(self, client_id: str) -> None:
        self._pending.pop(client_id, None)
        self._in_flight.pop(client_id, None)
        self._versions.pop(client_id, None)
        self._to_record.discard(client_id)

    @property
    def to_record(self) -> bool:
        """Whether the next batch's writes carry records of pending replays."""
        return bool(self._to_record)

    async def record(self, pipe: Any) -> None:
        """Queues on ``pipe`` the lists of the sessions whose replays changed."""
        for client_id in self._to_record:
            await self._write(client_id, pipe)
        self._to_record.clear()

    def draining(self, client_ids: Iterable[str]) -> list[str]:
        """Of the sessions whose queues were just drained, those that had replays queued:
        they are in flight until the gate the drain waits for passes (see ``passed``)."""
        draining = [c for c in client_ids if c in self._pending]
        for client_id in draining:
            self._in_flight.setdefault(client_id, []).extend(self._pending.pop(client_id))
        return draining

    def passed(self, out: Iterable[str]) -> None:
        """The gate a drain waited for passed: the replays in flight of the sessions in
        ``out`` went out, and their records stop naming them (the others moved with their
        sessions, and their records still name them)."""
        for client_id in out:
            if self._in_flight.pop(client_id, None) is not None:
                self._background(self._cleared(client_id))

    async def _cleared(self, client_id: str) -> None:
        try:
            await self._write(client_id, None)
        except REDIS_ERRORS as error:
            # The record names them still: a node taking the session over sends them again.
            log.debug("could not record that %s's replays went out: %s", client_id, error)

    async def _write(self, client_id: str, pipe: Any) -> None:
        version = self._versions.get(client_id, 0) + 1
        self._versions[client_id] = version
        named = self._in_flight.get(client_id, []) + self._pending.get(client_id, [])
        text = json.dumps(named) if named else ""
        await self._record(keys=[self._keys.session(client_id)], args=[version, text], client=pipe)


def recorded(fields: dict[bytes, bytes]) -> tuple[list[Replay], int]:
    """The replays a session's record names, and the version of that list; bad data is
    passed over."""
    version = fields.get(b"rv", b"0")
    try:
        replays = json.loads(fields.get(b"rp", b"[]"))
        number = int(version)
    except ValueError:
        return [], 0
    if not isinstance(replays, list) or len(replays) > MAX_RECORDED:
        return [], number
    valid = [
        (channel, after, cut)
        for channel, after, cut in (r for r in replays if isinstance(r, list) and len(r) == 3)
        if isinstance(channel, str) and isinstance(after, int) and isinstance(cut, int)
    ]
    return valid, number


def spliced(
    missed: list[tuple[int, Any]], channel: str, cut: int, replayed: list[Any]
) -> list[tuple[int, Any]]:
    """One partition's entries a session missed (offset, entry), with a replay of ``channel``
    up to ``cut`` in its place: the channel's own entries up to the cut are the replay's."""
    before = [
        (offset, entry)
        for offset, entry in missed
        if offset <= cut and not (entry[0] == channel and entry[3] is None)
    ]
    after = [item for item in missed if item[0] > cut]
    return before + [(cut, entry) for entry in replayed] + after
