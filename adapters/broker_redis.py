"""A Redis broker for the hub (the extra ``wshub[redis]``, on coredis 6, anyio-native).

Each topic is a stream in Redis: a hash ``{prefix}:t:{topic}:meta`` holds its
``seq`` and ``epoch``, a capped stream ``{prefix}:t:{topic}:s`` the kept
envelopes (entry ids ``<seq>-0``), and the channel ``{prefix}:c:{topic}``
carries its publications to the nodes that have subscribers for it. One Lua
script per publication increments ``seq`` (a lost hash starts a new epoch
and drops the stream: clients are told, never silently mis-numbered), splices
the number into the envelope encoded by the publishing node, ``XADD``s it
(capped by the topic's history size, expiring with its history age) and
``PUBLISH``es it, atomically. Publications queued together go in one
pipeline: a burst costs its node one round trip.

Direct sends (broadcast, ``send_to``, ``send_to_principal``, ``disconnect``)
are done locally and relayed on ``{prefix}:ctl``. Presence lives in
``{prefix}:p:{topic}`` (connection -> node and principal); each node
refreshes its deadline in ``{prefix}:nodes`` every ``heartbeat`` seconds;
a node silent for ``presence_ttl`` seconds is removed by the first survivor
that sweeps, which sends its members' ``leave`` to every node. The link is
watched by that heartbeat; when lost, publishes fail at once
(``BrokerUnavailable``, ``unavailable`` for clients), the broker reconnects
with backoff, listens again and asks the hub to bring every subscriber back
in step (``Hub.resync``).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import coredis
import coredis.exceptions
from anyio.abc import TaskStatus
from coredis.retry import NoRetryPolicy

from ..core.hub_broker import (
    BrokerCommand,
    Fetch,
    Listen,
    Outgoing,
    PresenceOut,
    StreamAnswer,
    Unlisten,
)
from ..core.hub_events import HubEvent, PresenceChanged
from .broker import BrokerUnavailable

if TYPE_CHECKING:
    from .hub_runtime import HubRuntime

__all__ = ["RedisBroker"]

logger = logging.getLogger("wshub.broker")

# KEYS: meta, stream. ARGV: head, tail, history size, history ttl (ms, 0: none),
# droppable ("0"/"1"), a fresh epoch (used if the topic has none), channel, publish time (ms).
_PUBLISH = """
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
_FETCH = """
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
_PRESENCE = """
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
_REJOIN = """
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
_HEARTBEAT = """
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

_LINK_ERRORS = (
    coredis.exceptions.ConnectionError,
    TimeoutError,
    OSError,
    anyio.ClosedResourceError,
    anyio.BrokenResourceError,
    anyio.EndOfStream,
)


def _link_error(exc: BaseException) -> bool:
    """Is ``exc`` (or every exception in a group) the link to Redis failing?"""
    if isinstance(exc, BaseExceptionGroup):
        return all(_link_error(e) for e in exc.exceptions)
    return isinstance(exc, _LINK_ERRORS)


def _leaf(exc: BaseException) -> str:
    """The first real error in ``exc`` (task groups wrap them), for one log line."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return str(exc) or type(exc).__name__


@dataclass(slots=True)
class _Wait:
    """A server-side publish waiting for its numbering."""

    done: anyio.Event = field(default_factory=anyio.Event)
    result: tuple[int, str] | None = None
    error: str = ""


@dataclass(slots=True)
class _Read:
    """A server-side history read waiting for its answer."""

    done: anyio.Event = field(default_factory=anyio.Event)
    answer: StreamAnswer | None = None


@dataclass(slots=True)
class _Counters:
    reconnects: int = 0
    publishes: int = 0
    publish_failures: int = 0
    received: int = 0
    lag: float = 0.0
    pipelines: int = 0  # round trips carrying publications, fetches, presence and relays


class RedisBroker:
    """The hub's streams, presence and direct sends in one Redis (``redis://...``).

    ``node`` names this process in logs, ``/metrics`` and presence (default
    ``<hostname>-<pid>``); ``prefix`` every key and channel. A node silent for
    ``presence_ttl`` seconds is declared dead by the first survivor's sweep
    (every ``heartbeat`` seconds): its members leave within
    ``presence_ttl + heartbeat`` seconds (4 with the defaults).
    """

    def __init__(
        self,
        url: str,
        *,
        node: str | None = None,
        prefix: str = "wshub",
        presence_ttl: float = 3.0,
        heartbeat: float = 1.0,
        connect_timeout: float = 2.0,
        command_timeout: float = 5.0,
        max_backoff: float = 2.0,
    ) -> None:
        if not presence_ttl > heartbeat > 0:
            raise ValueError("presence_ttl must be larger than heartbeat, both positive")
        self.url = url
        self.node = node or f"{socket.gethostname()}-{os.getpid()}"
        self.prefix = prefix
        self.presence_ttl = presence_ttl
        self.heartbeat = heartbeat
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.max_backoff = max_backoff
        self.counters = _Counters()
        self._runtime: HubRuntime | None = None
        self._up = False
        self._wakeup = anyio.Event()  # the writer's, while the link is up
        self._down_wakeup = anyio.Event()  # the drainer's, while it is down
        self._queue: list[BrokerCommand | tuple[str, bytes]] = []  # commands, control messages
        self._backlog: list[BrokerCommand] = []  # not done when the link went down
        self._waits: dict[int, _Wait] = {}
        self._reads: dict[int, _Read] = {}
        self._channels: set[str] = set()  # topics listened to
        self._ps: Any = None
        self._connected_once = False
        self._shas: dict[str, str] = {}  # script source -> SHA loaded on this link
        # this node's presence members: (topic, conn id) -> (principal, join envelope)
        self._members: dict[tuple[str, str], tuple[str, bytes]] = {}
        self._ctl = f"{prefix}:ctl"

    # -- the Broker protocol -----------------------------------------------------------

    def attach(self, runtime: HubRuntime) -> None:
        self._runtime = runtime

    @property
    def up(self) -> bool:
        return self._up

    def wake(self) -> None:
        if self._up:
            self._wakeup.set()
        else:
            self._down_wakeup.set()

    def publish(self, outgoing: Outgoing) -> None:
        if not self._up:
            self.counters.publish_failures += 1
            raise BrokerUnavailable(f"redis unavailable ({self.url})")
        self._queue.append(outgoing)
        self.wake()

    async def publish_wait(self, outgoing: Outgoing) -> tuple[int, str]:
        wait = self._waits[outgoing.ref] = _Wait()
        try:
            self.publish(outgoing)
            await wait.done.wait()
        finally:
            self._waits.pop(outgoing.ref, None)
        if wait.result is None:
            raise BrokerUnavailable(wait.error or f"redis unavailable ({self.url})")
        return wait.result

    async def fetch_wait(self, fetch: Fetch) -> StreamAnswer:
        if not self._up:
            raise BrokerUnavailable(f"redis unavailable ({self.url})")
        wait = self._reads[fetch.ref] = _Read()
        try:
            self._queue.append(fetch)
            self.wake()
            await wait.done.wait()
        finally:
            self._reads.pop(fetch.ref, None)
        if wait.answer is None:
            raise BrokerUnavailable(f"redis unavailable ({self.url})")
        return wait.answer

    def relay(self, kind: str, target: str | Collection[str] | None, data: bytes) -> None:
        if not self._up:
            raise BrokerUnavailable(f"redis unavailable ({self.url})")
        if target is None:
            arg = ""
        elif isinstance(target, str):
            arg = target
        else:
            arg = "\t".join(target)
        header = f"{kind}\n{self.node}\n{arg}\n".encode()
        self._queue.append(("ctl", header + data))
        self.wake()

    def metrics_text(self) -> str:
        node = self.node.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        label = f'{{node="{node}"}}'
        c = self.counters
        rows = [
            ("broker_up", "gauge", "1 while the link to Redis is up.", int(self._up)),
            ("broker_reconnects_total", "counter", "Links to Redis made again.", c.reconnects),
            ("broker_publishes_total", "counter", "Publications Redis numbered.", c.publishes),
            (
                "broker_publish_failures_total",
                "counter",
                "Publications refused: Redis unreachable.",
                c.publish_failures,
            ),
            ("broker_received_total", "counter", "Publications from Redis.", c.received),
            (
                "broker_pipelines_total",
                "counter",
                "Pipelines sent to Redis (one round trip each, however many commands).",
                c.pipelines,
            ),
            (
                "broker_lag_seconds",
                "gauge",
                "Age of the last publication received (publisher's clock).",
                round(c.lag, 6),
            ),
            ("broker_channels", "gauge", "Topic channels listened to.", len(self._channels)),
        ]
        lines: list[str] = []
        for name, kind, text, value in rows:
            metric = f"wshub_{name}"
            lines += [
                f"# HELP {metric} {text}",
                f"# TYPE {metric} {kind}",
                f"{metric}{label} {value}",
            ]
        return "\n".join(lines) + "\n"

    # -- keys ----------------------------------------------------------------------------

    def _meta(self, topic: str) -> str:
        return f"{self.prefix}:t:{topic}:meta"

    def _stream(self, topic: str) -> str:
        return f"{self.prefix}:t:{topic}:s"

    def _channel(self, topic: str) -> str:
        return f"{self.prefix}:c:{topic}"

    def _presence(self, topic: str) -> str:
        return f"{self.prefix}:p:{topic}"

    # -- running -------------------------------------------------------------------------

    def _client(self) -> Any:
        return coredis.Redis.from_url(
            self.url,
            retry_policy=NoRetryPolicy(),
            connect_timeout=self.connect_timeout,
            stream_timeout=self.command_timeout,
            client_name=f"wshub:{self.node}",  # CLIENT LIST shows whose link it is
        )

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Connect, report started, serve; reconnect with backoff when the link is lost."""
        if self._runtime is None:
            raise RuntimeError("RedisBroker.run before attach")
        try:
            async with anyio.create_task_group() as outer:
                outer.start_soon(self._drain_while_down)
                await self._connected(task_status)
        except BaseException:
            if anyio.current_effective_deadline() == -math.inf:
                # Cancelled: coredis's pub/sub cleanup may fail on its closed
                # connection meanwhile; the cancellation is what matters.
                await anyio.lowlevel.checkpoint()
            raise

    async def _connected(self, task_status: TaskStatus[None]) -> None:
        delay = 0.05
        first = True
        while True:
            started = anyio.Event()
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._session, started)
                    if first:
                        with anyio.fail_after(self.connect_timeout + self.command_timeout):
                            await started.wait()
                        first = False
                        task_status.started()
            except BaseException as exc:
                if not _link_error(exc) or anyio.current_effective_deadline() == -math.inf:
                    raise
                self._down()
                if first:
                    raise BrokerUnavailable(
                        f"redis unavailable at {self.url}: {_leaf(exc)}"
                    ) from None
                logger.warning(
                    "broker %s: redis link lost (%s); reconnecting", self.node, _leaf(exc)
                )
            if started.is_set():
                delay = 0.05
            await anyio.sleep(delay)
            delay = min(delay * 2, self.max_backoff)

    async def _drain_while_down(self) -> None:
        """While the link is down, client publishes fail at once (``unavailable``)
        and other commands wait for the next link."""
        while True:
            await self._down_wakeup.wait()
            self._down_wakeup = anyio.Event()
            if not self._up:
                self._down()

    def _down(self) -> None:
        """The link is lost: fail what cannot be kept, keep what can be redone."""
        runtime = self._runtime
        assert runtime is not None
        self._up = False
        self._ps = None
        queue, self._queue = [*self._queue, *runtime.hub.broker_commands()], []
        for item in queue:
            if isinstance(item, Outgoing):
                self._failed(item.ref, "redis unavailable")
            elif isinstance(item, Fetch) and item.ref in self._reads:
                self._reads[item.ref].done.set()  # the application's read fails
            elif not isinstance(item, tuple):
                self._backlog.append(item)

    async def _session(self, started: anyio.Event) -> None:
        runtime = self._runtime
        assert runtime is not None
        async with self._client() as client:
            await client.ping()
            # Loaded once per link: pipelines then call them by their SHA alone
            # (a pipeline of registered scripts asks SCRIPT EXISTS first: a
            # second round trip per burst).
            self._shas = {
                source: _text(await client.script_load(source))
                for source in (_PUBLISH, _FETCH, _PRESENCE, _REJOIN, _HEARTBEAT)
            }
            async with client.pubsub(
                retry_policy=NoRetryPolicy(), ignore_subscribe_messages=True
            ) as ps:
                self._ps = ps
                await ps.subscribe(self._ctl)
                self._channels = set()
                if self._connected_once:
                    self.counters.reconnects += 1
                    await self._rejoin(client)
                else:
                    await self._sweep(client, own=True)  # a node of this name that died
                self._up = True
                self._connected_once = True
                self._queue[:0] = self._backlog
                self._backlog = []
                runtime.hub.resync()  # listen again; subscribers back in step from the streams
                self._wakeup.set()
                started.set()
                logger.info("broker %s: connected to %s", self.node, self.url)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._reader, ps)
                    tg.start_soon(self._writer, client, ps)
                    tg.start_soon(self._beat, client)

    # -- writing -------------------------------------------------------------------------

    async def _writer(self, client: Any, ps: Any) -> None:
        runtime = self._runtime
        assert runtime is not None
        while True:
            await self._wakeup.wait()
            self._wakeup = anyio.Event()
            while True:
                self._queue += runtime.hub.broker_commands()
                if not self._queue:
                    break
                batch, self._queue = self._queue, []
                await self._carry(client, ps, batch)

    async def _carry(self, client: Any, ps: Any, batch: list[Any]) -> None:
        """Do ``batch`` in order: runs of scripts in one pipeline each, (un)listening
        in between (awaited: a fetch after a ``Listen`` must read after it)."""
        run: list[Any] = []
        for index, item in enumerate(batch):
            if isinstance(item, Listen | Unlisten):
                try:
                    await self._pipeline(client, run)
                    run = []
                    await self._listen(ps, item)
                except BaseException:
                    self._queue[:0] = [*run, *batch[index:]]
                    raise
            else:
                run.append(item)
        try:
            await self._pipeline(client, run)
        except BaseException:
            self._queue[:0] = run
            raise

    async def _listen(self, ps: Any, command: Listen | Unlisten) -> None:
        topic = command.topic
        if isinstance(command, Listen):
            if topic not in self._channels:
                await ps.subscribe(self._channel(topic))
                self._channels.add(topic)
        elif topic in self._channels:
            self._channels.discard(topic)
            await ps.unsubscribe(self._channel(topic))

    async def _pipeline(self, client: Any, run: list[Any]) -> None:
        if not run:
            return
        runtime = self._runtime
        assert runtime is not None
        shas = self._shas
        requests: list[tuple[Any, Any]] = []
        self.counters.pipelines += 1
        async with client.pipeline(transaction=False) as pipe:
            for item in run:
                if isinstance(item, Outgoing):
                    request = pipe.evalsha(
                        shas[_PUBLISH],
                        keys=[self._meta(item.topic), self._stream(item.topic)],
                        args=[
                            item.head,
                            item.tail,
                            item.history_size,
                            _ms(item.history_ttl),
                            int(item.droppable),
                            _epoch(),
                            self._channel(item.topic),
                            int(time.time() * 1000),
                        ],
                    )
                elif isinstance(item, Fetch):
                    request = pipe.evalsha(
                        shas[_FETCH],
                        keys=[
                            self._meta(item.topic),
                            self._stream(item.topic),
                            self._presence(item.topic),
                        ],
                        args=[
                            _epoch(),
                            "" if item.after is None else item.after,
                            item.epoch or "",
                            item.limit,
                            int(item.presence),
                            _ms(item.max_age),
                        ],
                    )
                elif isinstance(item, PresenceOut):
                    key = (item.topic, item.conn_id)
                    if item.joined:
                        self._members[key] = (item.principal_id, item.envelope)
                    else:
                        self._members.pop(key, None)
                    request = pipe.evalsha(
                        shas[_PRESENCE],
                        keys=[self._presence(item.topic), f"{self.prefix}:nm:{self.node}"],
                        args=[
                            int(item.joined),
                            item.conn_id,
                            self.node,
                            item.principal_id,
                            item.topic,
                            self._channel(item.topic),
                            b"r" + self.node.encode() + b"\n" + item.envelope,
                        ],
                    )
                else:
                    request = pipe.publish(self._ctl, item[1])
                requests.append((item, request))
        for item, request in requests:
            result = await request
            if isinstance(item, Outgoing):
                seq, epoch = int(result[0]), _text(result[1])
                self.counters.publishes += 1
                wait = self._waits.get(item.ref)
                if wait is not None:
                    wait.result = (seq, epoch)
                    wait.done.set()
                else:
                    runtime.broker_events(runtime.hub.published(item.ref, seq, epoch))
            elif isinstance(item, Fetch):
                read = self._reads.get(item.ref)
                if read is not None:
                    read.answer = _answer(item, result)
                    read.done.set()
                else:
                    runtime.hub.answered(_answer(item, result))

    def _failed(self, ref: int, message: str) -> None:
        runtime = self._runtime
        assert runtime is not None
        self.counters.publish_failures += 1
        wait = self._waits.get(ref)
        if wait is not None:
            wait.error = message
            wait.done.set()
        else:
            runtime.hub.publish_failed(ref, message)

    # -- reading -------------------------------------------------------------------------

    async def _reader(self, ps: Any) -> None:
        prefix = f"{self.prefix}:c:"
        async for message in ps:
            if message["type"] != "message":
                continue
            channel = _text(message["channel"])
            data = message["data"]
            if not isinstance(data, bytes):
                data = data.encode()
            if channel == self._ctl:
                self._control(data)
            elif channel.startswith(prefix):
                self._topic_message(channel[len(prefix) :], data)

    def _topic_message(self, topic: str, data: bytes) -> None:
        runtime = self._runtime
        assert runtime is not None
        kind = data[:1]
        if kind == b"p":
            seq, epoch, flag, stamp, envelope = data[1:].split(b"\n", 4)
            self.counters.received += 1
            self.counters.lag = max(0.0, time.time() - int(stamp) / 1000)
            runtime.hub.publication(
                topic, int(seq), epoch.decode(), envelope, droppable=flag == b"1"
            )
        elif kind == b"r":
            origin, envelope = data[1:].split(b"\n", 1)
            if origin.decode() != self.node:
                runtime.hub.presence_arrived(topic, envelope)

    def _control(self, data: bytes) -> None:
        runtime = self._runtime
        assert runtime is not None
        kind, origin, arg, payload = data.split(b"\n", 3)
        if origin.decode() == self.node:
            return
        hub = runtime.hub
        target = arg.decode()
        if kind == b"broadcast":
            hub.broadcast_encoded(payload, exclude=target.split("\t") if target else None)
        elif kind == b"principal":
            hub.send_encoded_to_principal(target, payload)
        elif kind == b"conn":
            hub.send_encoded_to(target, payload)
        elif kind == b"disconnect":
            code, reason = payload.split(b"\n", 1)
            hub.disconnect(target, int(code), reason.decode())

    # -- presence of nodes ---------------------------------------------------------------

    async def _rejoin(self, client: Any) -> None:
        """After a lost link: record this node's members again. A survivor may
        have declared this node dead meanwhile (their ``leave`` went out):
        those it removed join again, announced to the other nodes."""
        if not self._members:
            return
        sha = self._shas[_REJOIN]
        async with client.pipeline(transaction=False) as pipe:
            for (topic, conn_id), (principal, envelope) in self._members.items():
                pipe.evalsha(
                    sha,
                    keys=[self._presence(topic), f"{self.prefix}:nm:{self.node}"],
                    args=[
                        conn_id,
                        f"{self.node}\n{principal}",
                        f"{topic}\n{conn_id}",
                        self._channel(topic),
                        b"r" + self.node.encode() + b"\n" + envelope,
                    ],
                )

    async def _beat(self, client: Any) -> None:
        while True:
            await anyio.sleep(self.heartbeat)
            await self._sweep(client)

    async def _sweep(self, client: Any, *, own: bool = False) -> None:
        """Refresh this node's deadline; remove nodes past theirs (with ``own``,
        at start, this node's own leftovers from an earlier run first, in the
        same script) and send their members' ``leave``."""
        runtime = self._runtime
        assert runtime is not None
        gone = await client.evalsha(
            self._shas[_HEARTBEAT],
            keys=[f"{self.prefix}:nodes"],
            args=[self.node, int(self.presence_ttl * 1000), self.prefix, int(own)],
        )
        if not gone:
            return
        hub = runtime.hub
        events: list[HubEvent] = []
        async with client.pipeline(transaction=False) as pipe:
            for i in range(0, len(gone), 3):
                topic, conn_id, principal = (_text(x) for x in gone[i : i + 3])
                payload = {"event": "leave", "conn_id": conn_id, "principal": principal}
                envelope = hub.encode("presence", payload, topic=topic)
                hub.presence_arrived(topic, envelope)
                pipe.publish(self._channel(topic), b"r" + self.node.encode() + b"\n" + envelope)
                events.append(
                    PresenceChanged(
                        topic=topic, conn_id=conn_id, principal_id=principal, joined=False
                    )
                )
        runtime.broker_events(events)  # the sweeping node's on_event hears of them
        logger.info(
            "broker %s: %d presence member(s) of dead nodes left", self.node, len(gone) // 3
        )


def _answer(fetch: Fetch, result: Any) -> StreamAnswer:
    seq, epoch, raw, flat = result
    entries = [(int(_text(entry_id).split("-", 1)[0]), _field(fields)) for entry_id, fields in raw]
    if fetch.after is None:
        entries.reverse()  # XREVRANGE: newest first
    members = tuple(
        (_text(flat[i]), _text(flat[i + 1]).split("\n", 1)[1]) for i in range(0, len(flat), 2)
    )
    return StreamAnswer(
        ref=fetch.ref,
        topic=fetch.topic,
        seq=int(seq),
        epoch=_text(epoch),
        entries=tuple(entries),
        members=members,
    )


def _field(fields: Any) -> bytes:
    """The envelope of a stream entry (its ``d`` field)."""
    if isinstance(fields, dict):
        value = fields.get(b"d", fields.get("d"))
    else:
        value = fields[1]
    return value if isinstance(value, bytes) else str(value).encode()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ms(seconds: float) -> int:
    """A history age in ms for PEXPIRE (0: no age bound)."""
    return 0 if seconds == float("inf") else max(1, int(seconds * 1000))


def _epoch() -> str:
    """A fresh epoch, should the topic need one (8 URL-safe characters)."""
    import base64

    return base64.urlsafe_b64encode(os.urandom(6)).decode("ascii")
