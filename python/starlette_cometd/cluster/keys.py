"""Where a cluster keeps its state in Redis: key names (with the hash tags that keep every key
one script touches in one Redis Cluster slot), the scripts, and the cursor's encoding."""

from __future__ import annotations

import functools
import json
import zlib
from dataclasses import dataclass, field

# The partition's epoch (KEYS[1]: its head), made from ARGV[1] when it has none.
EPOCH = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
"""

# Refuses an append before anything moves when a key it writes holds another type (bad data
# under it: WRONGTYPE): an offset taken without its entry would leave a gap in the log, and a
# session whose cursor stands before a gap cannot be recovered. KEYS[2]: the log.
LOG_IS_A_LOG = """
redis.call('XLEN', KEYS[2])
"""

# Appends messages to a partition's log, one entry each, in order. KEYS: the head hash, the log
# stream. ARGV: an epoch for a log that has none yet (new, or lost with the Redis that held
# it), the history kept, then four per message: the channel, the message, the publisher to
# leave out ("" for none), the session it is sent to alone ("" for a broadcast). Returns the
# partition's epoch and the last message's offset. One call for the messages of many requests
# (see turns.py): each call costs Redis far more than each entry.
PUBLISH = (
    EPOCH
    + LOG_IS_A_LOG
    + """
local count = (#ARGV - 2) / 4
local last = redis.call('HINCRBY', KEYS[1], 'offset', count)
local offset = last - count
for i = 3, #ARGV, 4 do
  offset = offset + 1
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '0-' .. offset,
             'c', ARGV[i], 'm', ARGV[i + 1], 'x', ARGV[i + 2], 't', ARGV[i + 3])
end
return {epoch, last}
"""
)

# Takes a session over for this node. KEYS: the session hash. ARGV: this node, the session's
# time to live in ms, the request's browser cookie, "1" when sessions are trusted without it,
# the ack batch the connect acknowledges ("" for none). Returns the node that served it before
# and the whole record; nothing when there is no such session, or when the request does not
# carry its cookie (unless the session never connected yet: a socket opened before the
# handshake, as Faye's, has none) and sessions are not trusted. With the ack extension, the
# acknowledged batch's cursor becomes the session's (what the new node catches up from), and
# the batches the previous node sent after it are forgotten: their messages are sent again.
CLAIM = """
local before = redis.call('HGET', KEYS[1], 'n')
if not before then return false end
local browser = redis.call('HGET', KEYS[1], 'b')
local connected = redis.call('HGET', KEYS[1], 'k')
if ARGV[4] ~= '1' and browser ~= ARGV[3] and connected == '1' then return false end
redis.call('HSET', KEYS[1], 'n', ARGV[1])
if redis.call('HGET', KEYS[1], 'a') == '1' then
  if ARGV[5] ~= '' then
    local acked = redis.call('HGET', KEYS[1], 'u:' .. ARGV[5])
    if acked then redis.call('HSET', KEYS[1], 'c', acked) end
  end
  for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
    if string.sub(field, 1, 2) == 'u:' then redis.call('HDEL', KEYS[1], field) end
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {before, redis.call('HGETALL', KEYS[1])}
"""

# Unacknowledged ack batches whose cursors a session's record keeps, at most: a client acks
# each connect reply with its next connect, so there are one or two; one that never acks loses
# only the oldest, whose messages it then gets again after a take-over (never fewer).
MAX_UNACKED_BATCHES = 16

# Records where a session of the ack extension stands, if this node still serves it (the other
# sessions are recorded by gates, see gates.py). KEYS: the session
# hash. ARGV: this node, the cursor, the time to live in ms, whether its first connect was
# answered ("1" or "0"); then, with the ack extension ("1", else ""), the batch the client
# acknowledged last and the batch the reply carries ("" for none). Returns 1, or 0 when the
# session moved (or ended) meanwhile.
#
# Without the ack extension the cursor is the session's at once. With it, the cursor is kept
# under the reply's batch id (field u:<batch>; u holds the highest id sent) and becomes the
# session's only when the client acknowledges that batch: a take-over then resends whatever
# the client did not acknowledge, and nothing it did.
RECORD = f"""
if redis.call('HGET', KEYS[1], 'n') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'k', ARGV[4])
if ARGV[5] ~= '1' then
  redis.call('HSET', KEYS[1], 'c', ARGV[2])
else
  local batches = {{}}
  for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
    if string.sub(field, 1, 2) == 'u:' then
      table.insert(batches, tonumber(string.sub(field, 3)))
    end
  end
  table.sort(batches)
  if ARGV[6] ~= '' then
    local acked = tonumber(ARGV[6])
    local cursor = redis.call('HGET', KEYS[1], 'u:' .. ARGV[6])
    if cursor then redis.call('HSET', KEYS[1], 'c', cursor) end
    while #batches > 0 and batches[1] <= acked do
      redis.call('HDEL', KEYS[1], 'u:' .. table.remove(batches, 1))
    end
  end
  if ARGV[7] ~= '' then
    local built = tonumber(ARGV[7])
    if redis.call('HSET', KEYS[1], 'u:' .. ARGV[7], ARGV[2]) == 1 then
      table.insert(batches, built)
      table.sort(batches)
    end
    if built > tonumber(redis.call('HGET', KEYS[1], 'u') or '0') then
      redis.call('HSET', KEYS[1], 'u', ARGV[7])
    end
    while #batches > {MAX_UNACKED_BATCHES} do
      redis.call('HDEL', KEYS[1], 'u:' .. table.remove(batches, 1))
    end
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""


# Writes where a session stood at a gate (see gates.py), if this node still serves it. KEYS:
# the session hash. ARGV: this node, the cursor it stood at before the gate, the gate
# (<node>:<number>),
# the cursor before its first undelivered message at the gate ("": none, it stands at its
# node's). Returns 1, or 0 when the session moved (or ended) meanwhile.
MARK = """
if redis.call('HGET', KEYS[1], 'n') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'c', ARGV[2], 'g', ARGV[3], 'h', ARGV[4])
return 1
"""

# MARK for many sessions at once, on one Redis server (their keys are in many slots of a
# Redis Cluster). KEYS: the session hashes. ARGV: this node, the gate, then per session the
# cursors before and at the gate, as MARK's. Returns per session MARK's result, or the error
# Redis raised for its record (a key of another type): that session's alone.
MARK_MANY = """
local results = {}
for i, key in ipairs(KEYS) do
  local owner = redis.pcall('HGET', key, 'n')
  if type(owner) == 'table' and owner.err then
    results[i] = owner.err
  elseif owner ~= ARGV[1] then
    results[i] = 0
  else
    local at = 2 * i + 1
    redis.call('HSET', key, 'c', ARGV[at], 'g', ARGV[2], 'h', ARGV[at + 1])
    results[i] = 1
  end
end
return results
"""

# Makes a session just taken over stand at a cursor alone (its gates marks go), if this node
# still has it. KEYS: the session hash. ARGV: this node, the cursor. Returns 1, or 0 when
# another node claimed it meanwhile.
SETTLE = """
if redis.call('HGET', KEYS[1], 'n') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'c', ARGV[2])
redis.call('HDEL', KEYS[1], 'g', 'h')
return 1
"""

# Notes that a session's first connect was answered, if this node still serves it. KEYS: the
# session hash. ARGV: this node.
CONNECTED = """
if redis.call('HGET', KEYS[1], 'n') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'k', '1')
return 1
"""

# Completes a node's gate, unless another node fenced it meanwhile. KEYS: the node's state.
# ARGV: the gate's number, the node's cursor when it was taken, the state's time to live in
# ms. Returns 1, or 0 when fenced (which is then cleared: the node lets every session go and
# goes on).
GATE = """
if redis.call('HGET', KEYS[1], 'f') then
  redis.call('HDEL', KEYS[1], 'f')
  return 0
end
redis.call('HSET', KEYS[1], 'g', ARGV[1], 'p', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

# Fences a node that does not answer: its next gate fails. KEYS: its state. ARGV: the state's
# time to live in ms. Returns its last gate completed and its cursor then (nothing for a node
# that completed none).
FENCE = """
redis.call('HSET', KEYS[1], 'f', '1')
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return redis.call('HMGET', KEYS[1], 'g', 'p')
"""

# Changes a session's subscriptions. KEYS: the session hash. ARGV: those added and those
# removed, as JSON lists. Returns the node serving it, or nothing when there is no such session.
SUBSCRIPTIONS = """
local current = redis.call('HGET', KEYS[1], 's')
if not current then return false end
local set = {}
for _, name in ipairs(cjson.decode(current)) do set[name] = true end
for _, name in ipairs(cjson.decode(ARGV[2])) do set[name] = nil end
for _, name in ipairs(cjson.decode(ARGV[1])) do set[name] = true end
local names = {}
for name in pairs(set) do table.insert(names, name) end
table.sort(names)
-- cjson writes an empty table as an object.
redis.call('HSET', KEYS[1], 's', #names == 0 and '[]' or cjson.encode(names))
return redis.call('HGET', KEYS[1], 'n')
"""

# Writes a session's attributes if the session still exists (a record is never made by it).
# KEYS: the session hash. ARGV: the number n of fields set, n field-value pairs, then the fields
# deleted. Returns 1, or 0 when there is no such session.
ATTRIBUTES = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local n = tonumber(ARGV[1])
for i = 2, 2 * n, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
for i = 2 * n + 2, #ARGV do redis.call('HDEL', KEYS[1], ARGV[i]) end
return 1
"""

# Moves sessions' deadlines to Redis's clock now plus a time to live. KEYS: the deadlines.
# ARGV: the time to live in ms, then the client ids.
TOUCH = """
local t = redis.call('TIME')
local deadline = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], deadline, ARGV[i]) end
return #ARGV - 1
"""

# Takes sessions whose deadline passed, at most ARGV[1]: each is taken by one caller only, which
# announces its end. KEYS: the deadlines.
POP_EXPIRED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
if #ids > 0 then redis.call('ZREM', KEYS[1], unpack(ids)) end
return ids
"""

# Notes a node as alive for a while (see stats). KEYS: the nodes. ARGV: the node, for how long
# (ms). Nodes whose time passed (they died) go.
ALIVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return 1
"""

# The nodes alive now. KEYS: the nodes.
NODES_ALIVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
"""

# Registers a browser's long-poll held on some node, unless the browser holds as many as it may
# already (counting those on every node): 1 when registered, 0 when refused. KEYS: the
# browser's held long-polls (member: the session, score: when the entry lapses, ms, so that
# those of a node that died go). ARGV: the session, how long its entry lives (ms), the limit.
# A browser with one tab, the most common, costs four commands.
HOLD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
local held = redis.call('ZCARD', KEYS[1])
if held > limit then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  held = redis.call('ZCARD', KEYS[1])
  if held > limit then
    redis.call('ZREM', KEYS[1], ARGV[1])
    return 0
  end
end
if held == 1 then
  redis.call('PEXPIRE', KEYS[1], ttl)
else
  redis.call('PEXPIRE', KEYS[1], ttl, 'GT')
end
return 1
"""

# Counts a new session in the sessions of its cookie or of its address, unless as many are
# counted already (see session_counts.py). KEYS: the set (member: the session, score: when it
# was counted, ms), the marker of its last check. ARGV: the session, the limit, the set's time
# to live (ms), how long between checks (ms). Returns 1 when counted; when full, -1 if the set
# is due for a check (the caller checks it and tries again), else 0.
COUNT_SESSION = """
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[4]) then return -1 end
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

# Takes out of a set of counted sessions those found gone: of the candidates (members without a
# deadline), those counted more than a grace ago. KEYS: the set. ARGV: the grace (ms), then the
# candidates. Returns how many went.
UNCOUNT_GONE = """
local t = redis.call('TIME')
local before = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[1])
local gone = 0
for i = 2, #ARGV do
  local counted = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if counted and tonumber(counted) < before then
    gone = gone + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return gone
"""

# The hash slots of a Redis Cluster.
SLOTS = 16384
# Partitions at most: each is a log that every node follows with a read of its own.
MAX_PARTITIONS = 1024


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str
    partitions: int
    _heads: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _logs: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _tags: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        tags = partition_tags(self.partitions)
        object.__setattr__(self, "_tags", tuple(tags))
        object.__setattr__(self, "_heads", tuple(f"{self.prefix}:{{{t}}}:head" for t in tags))
        object.__setattr__(self, "_logs", tuple(f"{self.prefix}:{{{t}}}:log" for t in tags))

    def session(self, client_id: str) -> str:
        return f"{self.prefix}:{{s:{client_id}}}"

    def head(self, partition: int) -> str:
        return self._heads[partition]

    def log(self, partition: int) -> str:
        return self._logs[partition]

    def history(self, partition: int, channel: str) -> str:
        """A channel's history (see history.py), beside its partition's log."""
        return f"{self.prefix}:{{{self._tags[partition]}}}:h:{channel}"

    def history_meta(self, partition: int, channel: str) -> str:
        """Which ids a channel's history can replay after (see history.py)."""
        return f"{self.prefix}:{{{self._tags[partition]}}}:hm:{channel}"

    def history_channels(self, partition: int) -> str:
        """The channels a partition keeps a history of, by when it expires (see history.py)."""
        return f"{self.prefix}:{{{self._tags[partition]}}}:hc"

    def deadlines(self) -> str:
        """Every session's deadline, so that one node ends a session whose node died."""
        return f"{self.prefix}:{{deadlines}}"

    def held_by_browser(self, browser: str) -> str:
        """The long-polls a browser (its cookie) holds, on every node."""
        return f"{self.prefix}:{{b:{browser}}}"

    def counted_by_browser(self, browser: str) -> str:
        """The sessions of a browser (its cookie), on every node (see session_counts.py)."""
        return f"{self.prefix}:{{qb:{browser}}}"

    def counted_by_address(self, address: str) -> str:
        """The sessions of a client address (see session_counts.py)."""
        return f"{self.prefix}:{{qa:{address}}}"

    def node(self, node: str) -> str:
        """A node's control channel."""
        return f"{self.prefix}:node:{node}"

    def node_state(self, node: str) -> str:
        """A node's last gate (see gates.py)."""
        return f"{self.prefix}:{{n:{node}}}"

    def nodes(self) -> str:
        """The nodes alive (member: the node, score: until when, ms)."""
        return f"{self.prefix}:{{nodes}}"

    def node_stats(self, node: str) -> str:
        """A node's counters, as it last reported them."""
        return f"{self.prefix}:{{n:{node}}}:stats"

    def partition(self, channel: str) -> int:
        """A channel's partition: stable across processes and restarts."""
        if self.partitions == 1:
            return 0
        return zlib.crc32(channel.encode()) % self.partitions


def partition_tags(partitions: int) -> list[str]:
    """Each partition's hash tag, which puts its head and log in one Redis Cluster slot: ``p0``
    for a single partition. With several, partition k's is the first of ``pk``, ``pk.1``,
    ``pk.2``... whose slot lies in the middle half of the k-th of ``partitions`` equal ranges of
    slots, so that on a cluster whose slots are split evenly over its shards (as ``redis-cli
    --cluster create`` splits them) the partitions spread evenly over the shards."""
    if partitions == 1:
        return ["p0"]
    from redis.crc import key_slot  # only the Redis engine has several partitions

    tags = []
    for k in range(partitions):
        low, high = k * SLOTS // partitions, (k + 1) * SLOTS // partitions
        margin = (high - low) // 4
        for n in range(SLOTS * 64):
            tag = f"p{k}.{n}" if n else f"p{k}"
            if low + margin <= key_slot(tag.encode()) < high - margin:
                tags.append(tag)
                break
        else:  # pragma: no cover - each range holds the slot of some such tag
            raise ValueError(f"no hash tag found for partition {k} of {partitions}")
    return tags


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a session's delivery stands: per partition, the log's epoch and the offset of the
    last message accounted for (delivered, or not for this session)."""

    epochs: tuple[str | None, ...]
    offsets: tuple[int, ...]

    def encode(self) -> str:
        # As json.dumps([epochs, offsets]) writes it, the epochs (which change rarely) by it.
        offsets = ",".join([str(offset) for offset in self.offsets])
        return f"[{_epochs_json(self.epochs)},[{offsets}]]"

    @staticmethod
    def decode(text: str | bytes, partitions: int) -> Cursor:
        """Raises ``ValueError`` for anything that is not a cursor of ``partitions``."""
        epochs, offsets = json.loads(text)
        if (
            not isinstance(epochs, list)
            or not isinstance(offsets, list)
            or len(epochs) != partitions
            or len(offsets) != partitions
            or not all(e is None or isinstance(e, str) for e in epochs)
            or not all(type(o) is int and o >= 0 for o in offsets)
        ):
            raise ValueError(f"not a cursor of {partitions} partitions")
        return Cursor(tuple(epochs), tuple(offsets))


def offset_of(entry_id: bytes | str) -> int:
    """The offset in a log entry's id (``0-<offset>``)."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.partition("-")[2])


@functools.lru_cache(maxsize=64)
def _epochs_json(epochs: tuple[str | None, ...]) -> str:
    return json.dumps(list(epochs), separators=(",", ":"))
