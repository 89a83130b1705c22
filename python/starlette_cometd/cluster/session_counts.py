"""The limits of sessions per browser cookie and per client address, counted over the whole
cluster.

On one process the core counts each cookie's and each address's sessions and refuses a
handshake past either limit. In a cluster a client may handshake on every process, so each
session is also counted in Redis: a sorted set per cookie and one per address (member: the
session; score: when it was counted, on Redis's clock). A handshake the core accepted is
counted by a script that refuses it when a set is full; its session is then forgotten before
anything else about it is written, and the client gets the refusal the core gives.

A session leaves its sets when it ends: where it is served (a disconnect, its expiry, the
application), or on the node that ends it after its node died. Should a removal be lost (Redis
away just then), a full set is checked, at most once per ``CHECK_EVERY_MS``, against the
deadline every session has (see node.py): a member without one, counted more than
``COUNTED_GRACE_MS`` ago (a session is counted a round trip before its deadline is written),
is gone. Each set lives as long as the records of its sessions, refreshed with them, so none
stays once its sessions are gone."""

from __future__ import annotations

import ipaddress
from typing import Any

from .connection import Connection
from .keys import COUNT_SESSION, UNCOUNT_GONE, Keys
from .turns import Turns

# How often, at most, a full set is checked for sessions gone without leaving it (ms).
CHECK_EVERY_MS = 1000
# How long a session counted may go without a deadline before a check takes it for gone (ms).
COUNTED_GRACE_MS = 30_000

PER_COOKIE = "403:too_many_sessions_per_cookie:handshake_denied"
PER_ADDRESS = "403:too_many_sessions_per_address:handshake_denied"


def address_key(address: str | None) -> str | None:
    """The address a session is counted under, as the core counts it: an IPv4 address, or the
    /64 network of an IPv6 address; ``None`` when it is not an IP address."""
    if address is None or "%" in address:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


class SessionCounts:
    """Every session's place in the counts (see the module)."""

    def __init__(
        self,
        connection: Connection,
        turns: Turns,
        keys: Keys,
        per_cookie: int | None,
        per_address: int | None,
        set_ttl_ms: int,
    ) -> None:
        self._redis = connection.redis
        self._count = connection.script(COUNT_SESSION)
        self._uncount_gone = connection.script(UNCOUNT_GONE)
        self._turns = turns
        self._keys = keys
        self._per_cookie = per_cookie
        self._per_address = per_address
        self._set_ttl_ms = set_ttl_ms
        # The browser and address key of each session here (served or borrowed).
        self._of: dict[str, tuple[str, str | None]] = {}

    def sets_of(self, browser: str, address: str | None) -> list[tuple[str, int, str]]:
        """The sets a session of ``browser`` and ``address`` (a key of ``address_key``) is
        counted in, for the limits that are set: each with its limit and its error."""
        sets = []
        if self._per_cookie is not None:
            sets.append((self._keys.counted_by_browser(browser), self._per_cookie, PER_COOKIE))
        if self._per_address is not None and address is not None:
            key = self._keys.counted_by_address(address)
            sets.append((key, self._per_address, PER_ADDRESS))
        return sets

    async def count(self, sessions: dict[str, str], address: str | None) -> dict[str, str]:
        """Counts the new sessions of one request from ``address`` (as the transport reports
        it; ``sessions``: client id and browser): returns those refused, each with its error.
        Raises what Redis raises (a session counted then leaves at a check)."""
        key = address_key(address)
        refused: dict[str, str] = {}
        for client_id, browser in sessions.items():
            sets = self.sets_of(browser, key)
            error = await self._count_in(client_id, sets)
            if error is None:
                self._of[client_id] = (browser, key)
            else:
                refused[client_id] = error
        return refused

    async def _count_in(self, client_id: str, sets: list[tuple[str, int, str]]) -> str | None:
        """Counts one session in its sets: ``None``, or the error of the first that is full
        (the session then leaves those it was counted in)."""
        results = await self._script(client_id, sets)
        due = [set_key for (set_key, _, _), result in zip(sets, results, strict=True) if result < 0]
        if due:  # full, and due for a check: checked, then counted again
            for set_key in due:
                await self._check(set_key)
            results = await self._script(client_id, sets)
        full = [error for (_, _, error), result in zip(sets, results, strict=True) if result != 1]
        if not full:
            return None
        async with self._turns.pipeline() as pipe:
            for (set_key, _, _), result in zip(sets, results, strict=True):
                if result == 1:
                    pipe.zrem(set_key, client_id)
            await pipe.execute()
        return full[0]

    async def _script(self, client_id: str, sets: list[tuple[str, int, str]]) -> list[int]:
        async with self._turns.pipeline() as pipe:
            for set_key, limit, _ in sets:
                await self._count(
                    keys=[set_key, f"{set_key}:checked"],
                    args=[client_id, limit, self._set_ttl_ms, CHECK_EVERY_MS],
                    client=pipe,
                )
            return [int(result) for result in await pipe.execute()]

    async def _check(self, set_key: str) -> None:
        """Takes out of a full set the sessions gone without leaving it (see the module)."""
        members = await self._redis.zrange(set_key, 0, -1)
        if not members:
            return
        deadlines = await self._redis.zmscore(self._keys.deadlines(), members)
        candidates = [m for m, deadline in zip(members, deadlines, strict=True) if deadline is None]
        if candidates:
            await self._uncount_gone(keys=[set_key], args=[COUNTED_GRACE_MS, *candidates])

    # Sessions leaving, and kept alive

    def address_of(self, client_id: str) -> str | None:
        """The address key a session here is counted under, which its record keeps."""
        of = self._of.get(client_id)
        return of[1] if of is not None else None

    def known(self, client_id: str, fields: dict[bytes, bytes]) -> None:
        """A session came here (taken over, borrowed): where it is counted, as its record
        says."""
        self._of[client_id] = _counted_as(fields)

    def leave(self, client_id: str) -> list[str]:
        """A session left this node (ended, or it goes on elsewhere): the sets it is counted
        in, from which it leaves if it ended."""
        of = self._of.pop(client_id, None)
        return [set_key for set_key, _, _ in self.sets_of(*of)] if of is not None else []

    def sets_in_record(self, fields: dict[bytes, bytes]) -> list[str]:
        """The sets a session is counted in, as its record says (it ended elsewhere)."""
        return [set_key for set_key, _, _ in self.sets_of(*_counted_as(fields))]

    def queue_keep_alive(self, pipe: Any, client_ids: list[str]) -> None:
        """Queues on ``pipe`` the refresh of the sets of sessions whose records are kept
        alive (each set once)."""
        sets = {
            set_key
            for client_id in client_ids
            if (of := self._of.get(client_id)) is not None
            for set_key, _, _ in self.sets_of(*of)
        }
        for set_key in sets:
            pipe.pexpire(set_key, self._set_ttl_ms)


def _counted_as(record: dict[bytes, bytes]) -> tuple[str, str | None]:
    """The browser and address key a session is counted under, as its record says."""
    browser = record.get(b"b", b"").decode(errors="replace")
    return browser, record.get(b"q", b"").decode(errors="replace") or None
