"""The Redis broker's Lua scripts, key names and the decoding of their answers.

Every script runs atomically in Redis; ``RedisBroker`` loads them once per
link and calls them by SHA in pipelines (``publish_call``, ``fetch_call``).
Key layout under ``prefix`` (``Keys``): ``t:{topic}:meta`` (hash seq, epoch),
``t:{topic}:s`` (stream, ids ``<seq>-0``, field ``d``), ``c:{topic}`` (channel),
``p:{topic}`` (presence hash: conn id -> ``node\\nprincipal``), ``nm:{node}``
(a node's members, ``topic\\nconn id``), ``nodes`` (zset of deadlines), ``ctl``.
"""

from __future__ import annotations

import base64
import os
import time
from dataclasses import dataclass
from typing import Any

from ..core.hub_broker import Fetch, Outgoing, StreamAnswer

# KEYS: meta, stream. ARGV: head, tail, history size, history ttl (ms, 0: none),
# droppable ("0"/"1"), a fresh epoch (used if the topic has none), channel, publish time (ms).
PUBLISH = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[6]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', 0)
  redis.call('DEL', KEYS[2])
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local envelope = ARGV[1] .. seq .. ARGV[2]
local size = tonumber(ARGV[3])
if size > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('XADD', KEYS[2], 'MAXLEN', size, seq .. '-0', 'd', envelope, 't', now)
  local ttl = tonumber(ARGV[4])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
end
redis.call('PUBLISH', ARGV[7],
  'p' .. seq .. '\\n' .. epoch .. '\\n' .. ARGV[5] .. '\\n' .. ARGV[8] .. '\\n' .. envelope)
return {seq, epoch}
"""

# KEYS: meta, stream, presence. ARGV: a fresh epoch, after ("" = newest), epoch of
# ``after``, limit, presence ("0"/"1"), max age of entries (ms, 0: none).
FETCH = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', 0)
  redis.call('DEL', KEYS[2])
end
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq'))
local limit = tonumber(ARGV[4])
local entries = {}
if limit > 0 then
  if ARGV[2] == '' then
    entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', limit)
  else
    local after = tonumber(ARGV[2])
    if ARGV[3] ~= epoch then after = 0 end
    entries = redis.call('XRANGE', KEYS[2], (after + 1) .. '-0', '+', 'COUNT', limit)
  end
end
local age = tonumber(ARGV[6])
if age > 0 and #entries > 0 then
  -- entries older than the history's age are forgotten, as one node forgets them
  local t = redis.call('TIME')
  local oldest = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - age
  local kept = {}
  for _, entry in ipairs(entries) do
    local fields = entry[2]
    local born = 0
    for i = 1, #fields, 2 do
      if fields[i] == 't' then born = tonumber(fields[i + 1]) end
    end
    if born >= oldest then table.insert(kept, entry) end
  end
  entries = kept
end
local members = {}
if ARGV[5] == '1' then members = redis.call('HGETALL', KEYS[3]) end
return {seq, epoch, entries, members}
"""

# KEYS: presence hash, node's member set. ARGV: joined ("0"/"1"), conn id, node,
# principal, topic, channel, message.
PRESENCE = """
local member = ARGV[5] .. '\\n' .. ARGV[2]
if ARGV[1] == '1' then
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3] .. '\\n' .. ARGV[4])
  redis.call('SADD', KEYS[2], member)
else
  redis.call('HDEL', KEYS[1], ARGV[2])
  redis.call('SREM', KEYS[2], member)
end
redis.call('PUBLISH', ARGV[6], ARGV[7])
return 1
"""

# KEYS: presence hash, node's member set. ARGV: conn id, "node\nprincipal", member,
# channel, join message. A member a survivor removed is recorded and announced again.
REJOIN = """
redis.call('SADD', KEYS[2], ARGV[3])
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('PUBLISH', ARGV[4], ARGV[5])
end
return 1
"""

# KEYS: nodes zset. ARGV: node, ttl (ms), key prefix, starting ("0"/"1").
# A node starting takes its own members first: left by an earlier run under
# the same name (killed, restarted before its deadline passed). Then refresh
# this node's deadline (Redis's clock) and take every node past its deadline.
# Returns the members taken as {topic, conn id, principal, ...}, removed from presence.
HEARTBEAT = """
local gone = {}
local function take(node)
  local set = ARGV[3] .. ':nm:' .. node
  for _, member in ipairs(redis.call('SMEMBERS', set)) do
    local cut = string.find(member, '\\n', 1, true)
    local topic = string.sub(member, 1, cut - 1)
    local conn = string.sub(member, cut + 1)
    local key = ARGV[3] .. ':p:' .. topic
    local value = redis.call('HGET', key, conn)
    if value then
      redis.call('HDEL', key, conn)
      local at = string.find(value, '\\n', 1, true)
      table.insert(gone, topic)
      table.insert(gone, conn)
      table.insert(gone, string.sub(value, at + 1))
    end
  end
  redis.call('DEL', set)
end
if ARGV[4] == '1' then take(ARGV[1]) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  redis.call('ZREM', KEYS[1], node)
  take(node)
end
return gone
"""

SCRIPTS = (PUBLISH, FETCH, PRESENCE, REJOIN, HEARTBEAT)


@dataclass(frozen=True, slots=True)
class Keys:
    """The names of every key and channel under ``prefix``."""

    prefix: str

    def meta(self, topic: str) -> str:
        return f"{self.prefix}:t:{topic}:meta"

    def stream(self, topic: str) -> str:
        return f"{self.prefix}:t:{topic}:s"

    def channel(self, topic: str) -> str:
        return f"{self.prefix}:c:{topic}"

    def presence(self, topic: str) -> str:
        return f"{self.prefix}:p:{topic}"

    def members(self, node: str) -> str:
        return f"{self.prefix}:nm:{node}"

    @property
    def channels(self) -> str:
        """What every topic channel's name starts with."""
        return f"{self.prefix}:c:"

    @property
    def nodes(self) -> str:
        return f"{self.prefix}:nodes"

    @property
    def ctl(self) -> str:
        return f"{self.prefix}:ctl"


def publish_call(pipe: Any, sha: str, keys: Keys, item: Outgoing) -> Any:
    """Queue ``PUBLISH`` for ``item`` on ``pipe``; its answer is ``[seq, epoch]``."""
    return pipe.evalsha(
        sha,
        keys=[keys.meta(item.topic), keys.stream(item.topic)],
        args=[
            item.head,
            item.tail,
            item.history_size,
            ms(item.history_ttl),
            int(item.droppable),
            epoch(),
            keys.channel(item.topic),
            int(time.time() * 1000),
        ],
    )


def fetch_call(pipe: Any, sha: str, keys: Keys, item: Fetch) -> Any:
    """Queue ``FETCH`` for ``item`` on ``pipe``; ``answer`` decodes what it returns."""
    return pipe.evalsha(
        sha,
        keys=[keys.meta(item.topic), keys.stream(item.topic), keys.presence(item.topic)],
        args=[
            epoch(),
            "" if item.after is None else item.after,
            item.epoch or "",
            item.limit,
            int(item.presence),
            ms(item.max_age),
        ],
    )


def answer(fetch: Fetch, result: Any) -> StreamAnswer:
    seq, epoch, raw, flat = result
    entries = [(int(text(entry_id).split("-", 1)[0]), field(fields)) for entry_id, fields in raw]
    if fetch.after is None:
        entries.reverse()  # XREVRANGE: newest first
    members = tuple(
        (text(flat[i]), text(flat[i + 1]).split("\n", 1)[1]) for i in range(0, len(flat), 2)
    )
    return StreamAnswer(
        ref=fetch.ref,
        topic=fetch.topic,
        seq=int(seq),
        epoch=text(epoch),
        entries=tuple(entries),
        members=members,
    )


def field(fields: Any) -> bytes:
    """The envelope of a stream entry (its ``d`` field)."""
    if isinstance(fields, dict):
        value = fields.get(b"d", fields.get("d"))
    else:
        value = fields[1]
    return value if isinstance(value, bytes) else str(value).encode()


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def ms(seconds: float) -> int:
    """A history age in ms for PEXPIRE (0: no age bound)."""
    return 0 if seconds == float("inf") else max(1, int(seconds * 1000))


def epoch() -> str:
    """A fresh epoch, should the topic need one (8 URL-safe characters)."""
    return base64.urlsafe_b64encode(os.urandom(6)).decode("ascii")
