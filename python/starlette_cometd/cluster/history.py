"""The history of a cluster: what channels with a history keep, shared by every node, for the
replay extension (see ``rust/history.rs`` for the extension and the in-memory history).

Each such channel has a stream of its own beside its partition's log, under the partition's
hash tag (one Redis Cluster slot), written by the same script as the log (``PUBLISH_KEPT``):

- A message's id is the partition's base (``rb`` in its head: Redis's clock in ms times 1,000
  when the partition first kept a message) plus its offset in the log. Ids only grow, and an id
  from before Redis lost the partition is below every id since, so it is refused.
- The core leaves the id out of the message it relays (``"replayId":?}}}`` at its end), and the
  script splices it in: the log and the history hold the same bytes, so a message reaches its
  subscribers, a session taken over, and a replay alike.
- A channel's stream keeps ``size`` messages, each for ``ttl``; its meta hash (``evicted``: the
  newest id pushed out; ``last``: its newest id) says which ids can still be replayed after.
- The channels of a partition are kept in a sorted set, scored by when their last message
  expires: those past it go, a few per publish, and past ``max channels`` a new channel pushes
  out the one that expires first. The head's ``dropped`` is the newest id a channel that went
  had given: a channel kept nowhere can replay after no earlier id.

A replay is read on the node where the session lives, before the core processes the subscribe
(``replay_feed``): every message after the id up to where this node's fan-out of the log stands
(the cut). Those after the cut reach the session from the fan-out, once it is subscribed: no
gap and no duplicate at the seam."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .keys import EPOCH, LOG_IS_A_LOG, Keys, offset_of

# Publishes one message on a channel with a history: PUBLISH (see keys.py), then the history.
# KEYS: the head, the log, the channel's stream, its meta hash, the partition's channels kept.
# ARGV: as PUBLISH's for one message (1-6), then the size kept, the ttl in ms (0: none), the
# channels a partition keeps at most, the prefixes of a channel's stream and meta keys. Returns
# the epoch and offset.
PUBLISH_KEPT = (
    EPOCH
    + LOG_IS_A_LOG
    + """
-- As the log, the channel's keys are checked before anything moves.
redis.call('XLEN', KEYS[3])
redis.call('HLEN', KEYS[4])
redis.call('ZCARD', KEYS[5])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local base = redis.call('HGET', KEYS[1], 'rb')
if not base then
  -- The log's next entry gets the id now x 1,000 + 1, whatever its offset: an id given before
  -- Redis lost the partition stays below every id since.
  local before = tonumber(redis.call('HGET', KEYS[1], 'offset') or 0)
  base = string.format('%.0f', now * 1000 - before)
  redis.call('HSET', KEYS[1], 'rb', base, 'dropped', string.format('%.0f', now * 1000))
end
base = tonumber(base)
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
local id = string.format('%.0f', base + offset)
local message = ARGV[4]
if string.sub(message, -15) == '"replayId":?}}}' then
  message = string.sub(message, 1, -5) .. id .. '}}}'
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '0-' .. offset,
           'c', ARGV[3], 'm', message, 'x', ARGV[5], 't', ARGV[6])
local dropped = tonumber(redis.call('HGET', KEYS[1], 'dropped') or base)
local function drop(channel)
  local last = redis.call('HGET', ARGV[11] .. channel, 'last')
  if last and tonumber(last) > dropped then dropped = tonumber(last) end
  redis.call('DEL', ARGV[10] .. channel, ARGV[11] .. channel)
  redis.call('ZREM', KEYS[5], channel)
end
for _, channel in ipairs(redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now, 'LIMIT', 0, 8)) do
  drop(channel)
end
if redis.call('EXISTS', KEYS[4]) == 0 then
  while redis.call('ZCARD', KEYS[5]) >= tonumber(ARGV[9]) do
    drop(redis.call('ZRANGE', KEYS[5], 0, 0)[1])
  end
  redis.call('HSET', KEYS[4], 'evicted', string.format('%.0f', dropped))
end
redis.call('HSET', KEYS[1], 'dropped', string.format('%.0f', dropped))
redis.call('XADD', KEYS[3], '0-' .. offset, 'm', message, 'd', now)
local evicted = nil
local over = redis.call('XLEN', KEYS[3]) - tonumber(ARGV[7])
if over > 0 then
  local gone = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', over)
  evicted = gone[#gone][1]
  redis.call('XTRIM', KEYS[3], 'MAXLEN', ARGV[7])
end
local ttl = tonumber(ARGV[8])
if ttl > 0 then
  for _ = 1, 16 do
    local first = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', 1)[1]
    if not first or tonumber(first[2][4]) > now - ttl then break end
    evicted = first[1]
    redis.call('XDEL', KEYS[3], first[1])
  end
end
if evicted then
  local gone = base + tonumber(string.sub(evicted, 3))
  redis.call('HSET', KEYS[4], 'evicted', string.format('%.0f', gone))
end
redis.call('HSET', KEYS[4], 'last', id)
redis.call('ZADD', KEYS[5], now + (ttl > 0 and ttl or 1e13), ARGV[3])
return {epoch, offset}
"""
)

# Reads a channel's history after an id. KEYS: the head, the channel's stream, its meta hash.
# ARGV: the id ("" for every message kept). Returns the partition's epoch, base, offset and
# dropped, the channel's evicted, Redis's clock in ms, and the entries after the id.
READ_KEPT = """
local head = redis.call('HMGET', KEYS[1], 'epoch', 'rb', 'offset', 'dropped')
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local start = '-'
if ARGV[1] ~= '' and head[2] then
  local after = tonumber(ARGV[1]) - tonumber(head[2])
  if after > 0 then start = '(0-' .. string.format('%.0f', after) end
end
return {head[1], head[2], head[3], head[4], redis.call('HGET', KEYS[3], 'evicted'),
        string.format('%.0f', now), redis.call('XRANGE', KEYS[2], start, '+')}
"""


@dataclass
class Kept:
    """What one read of a channel's history found."""

    epoch: str | None
    base: int | None
    head: int
    dropped: int
    # None when the channel is kept nowhere (see the module).
    evicted: int | None
    now_ms: int
    # (offset, message, when kept in ms), oldest first.
    entries: list[tuple[int, bytes, int]]


Script = Callable[..., Awaitable[Any]]


class ClusterHistory:
    """Writes and reads the cluster's history (see the module)."""

    def __init__(self, keys: Keys, publish: Script, read: Script, max_channels: int) -> None:
        self.keys = keys
        self._publish = publish
        self._read = read
        # The channels each partition keeps at most: the builder's max_history_channels,
        # shared out.
        self._per_partition = max(1, -(-max_channels // keys.partitions))

    def publish(
        self,
        pipe: Any,
        partition: int,
        args: Sequence[str | bytes | int],
        channel: str,
        rule: tuple[int, int | None],
    ) -> Awaitable[Any]:
        """Queues a publish on a channel with a history (``rule``: its size and ttl in ms) on
        ``pipe``; ``args``: PUBLISH's."""
        keys = self.keys
        size, ttl = rule
        return self._publish(
            keys=[
                keys.head(partition),
                keys.log(partition),
                keys.history(partition, channel),
                keys.history_meta(partition, channel),
                keys.history_channels(partition),
            ],
            args=[
                *args,
                size,
                ttl or 0,
                self._per_partition,
                keys.history(partition, ""),
                keys.history_meta(partition, ""),
            ],
            client=pipe,
        )

    async def read(self, channel: str, after: int | None) -> Kept:
        """The channel's messages kept after the id ``after`` (None: all), with what says
        whether they are all there is. Raises ValueError for bad data under its keys."""
        partition = self.keys.partition(channel)
        keys = self.keys
        found: list[Any] = await self._read(
            keys=[
                keys.head(partition),
                keys.history(partition, channel),
                keys.history_meta(partition, channel),
            ],
            args=["" if after is None else str(after)],
        )
        epoch, base, head, dropped, evicted, now_ms, entries = found
        # Bad data under these keys raises ValueError: that history cannot be read.
        base_id = int(base) if base is not None else None
        return Kept(
            epoch=epoch.decode() if epoch is not None else None,
            base=base_id,
            head=int(head or 0),
            dropped=int(dropped) if dropped is not None else base_id or 0,
            evicted=int(evicted) if evicted is not None else None,
            now_ms=int(now_ms),
            entries=[_entry(entry_id, fields) for entry_id, fields in entries],
        )

    async def figures(self, redis: Any) -> dict[str, int]:
        """What the cluster's history keeps, for ``cluster_stats``: its channels, their
        messages, and the oldest id kept (0: none). Reads every channel kept (bounded by
        ``max_history_channels``), a pipelined round trip per partition."""
        keys = self.keys
        channels = messages = 0
        oldest: int | None = None
        for partition in range(keys.partitions):
            names: list[bytes] = await redis.zrange(keys.history_channels(partition), 0, -1)
            base = await redis.hget(keys.head(partition), "rb")
            if not names or base is None:
                continue
            async with redis.pipeline(transaction=False) as pipe:
                for name in names:
                    stream = keys.history(partition, name.decode(errors="replace"))
                    pipe.xlen(stream)
                    pipe.xrange(stream, count=1)
                found: list[Any] = await pipe.execute(raise_on_error=False)
            channels += len(names)
            for length, first in zip(found[::2], found[1::2], strict=True):
                if isinstance(length, int):
                    messages += length
                with contextlib.suppress(ValueError):  # bad data: not counted
                    if isinstance(first, list) and first:
                        kept_id = int(base) + offset_of(first[0][0])
                        oldest = kept_id if oldest is None else min(oldest, kept_id)
        return {
            "history_channels": channels,
            "history_messages": messages,
            "history_oldest_id": oldest or 0,
        }


def replayable(kept: Kept, after: int | None, ttl_ms: int | None) -> list[int] | None:
    """Which of ``kept.entries`` (their indexes) a replay after ``after`` (None: every message
    kept) gets, or None when that id cannot be replayed after: from before Redis lost the
    partition, never given, or with messages after it gone (pushed out, or past their ttl)."""
    fresh = [
        i
        for i, (_, _, at) in enumerate(kept.entries)
        if ttl_ms is None or at > kept.now_ms - ttl_ms
    ]
    if after is None:
        return fresh
    base = kept.base
    if base is None or after < base or after > base + kept.head:
        return None
    # Messages after the id gone by their ttl, as if pushed out.
    expired = len(fresh) < len(kept.entries)
    evicted = kept.evicted if kept.evicted is not None else kept.dropped
    if expired or after < evicted:
        return None
    return fresh


def replayed_messages(
    kept: Kept, after: int, ttl_ms: int | None, cut: int | None = None
) -> list[bytes] | None:
    """The messages a replay after the id ``after`` (-2: every message kept) gets from
    ``kept``, up to the offset ``cut`` when given; None when that id cannot be replayed after
    (see ``replayable``)."""
    chosen = replayable(kept, None if after == -2 else after, ttl_ms)
    if chosen is None:
        return None
    entries = kept.entries
    return [entries[i][1] for i in chosen if cut is None or entries[i][0] <= cut]


def joined(first: Kept, more: Kept) -> Kept | None:
    """``first`` with what a later read after its head found (``more``), or None when messages
    between the two went meanwhile, or the partition was lost."""
    if first.base is None:
        return more  # nothing was kept then: the later read was of everything
    if more.base != first.base or more.epoch != first.epoch:
        return None
    if more.evicted is None:
        # Not kept now: had it been, its messages went meanwhile.
        if first.evicted is not None:
            return None
    elif more.evicted > first.base + first.head:
        return None  # messages after the first read's head were pushed out
    return Kept(
        epoch=more.epoch,
        base=more.base,
        head=more.head,
        dropped=first.dropped,
        evicted=first.evicted,
        now_ms=first.now_ms,
        entries=first.entries + more.entries,
    )


def _entry(entry_id: bytes, fields: list[bytes] | dict[bytes, bytes]) -> tuple[int, bytes, int]:
    """A stream entry as (offset, message, when kept in ms)."""
    if isinstance(fields, list):  # a script's reply: the fields as a flat list
        fields = dict(zip(fields[::2], fields[1::2], strict=True))
    return offset_of(entry_id), fields.get(b"m", b""), int(fields.get(b"d", 0))
