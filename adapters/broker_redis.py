"""A Redis broker for the hub (the extra ``wshub[redis]``, on coredis 6, anyio-native).

Each topic is a stream in Redis, numbered by one Lua script per publication
(``seq`` incremented, the envelope ``XADD``ed and ``PUBLISH``ed atomically;
a lost hash starts a new epoch: clients are told, never silently
mis-numbered). Publications queued together go in one pipeline: a burst
costs its node one round trip. Direct sends are done locally and relayed on
the control channel. Presence lives in per-topic hashes, owned by the node
holding the connection; nodes refresh their deadlines and sweep the dead.
The link is watched by that heartbeat; when lost, publishes fail at once
(``BrokerUnavailable``, ``unavailable`` for clients), the broker reconnects
with backoff, listens again and asks the hub to bring every subscriber back
in step (``Hub.resync``).

Here: the broker (queue, link, pipelines). Scripts and key names:
``_redis_scripts``; presence of nodes: ``_redis_presence``; what the
channels carry: ``_redis_messages``; link errors and ``/metrics``: ``_redis_link``.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import coredis
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
from ._redis_link import Counters, leaf, link_error, metrics_text
from ._redis_messages import receive, relay_message
from ._redis_presence import NodePresence
from ._redis_scripts import FETCH, PUBLISH, SCRIPTS, Keys, answer, fetch_call, publish_call, text
from .broker import BrokerUnavailable

if TYPE_CHECKING:
    from .hub_runtime import HubRuntime

__all__ = ["RedisBroker"]

logger = logging.getLogger("wshub.broker")


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
        self.counters = Counters()
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
        self._keys = Keys(prefix)
        self._presence = NodePresence(self.node, self._keys, presence_ttl)

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
        self._queue.append(("ctl", relay_message(kind, self.node, target, data)))
        self.wake()

    def metrics_text(self) -> str:
        return metrics_text(self.node, self.counters, up=self._up, channels=len(self._channels))

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
                if not link_error(exc) or anyio.current_effective_deadline() == -math.inf:
                    raise
                self._down()
                if first:
                    raise BrokerUnavailable(
                        f"redis unavailable at {self.url}: {leaf(exc)}"
                    ) from None
                logger.warning(
                    "broker %s: redis link lost (%s); reconnecting", self.node, leaf(exc)
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
            self._shas = {source: text(await client.script_load(source)) for source in SCRIPTS}
            async with client.pubsub(
                retry_policy=NoRetryPolicy(), ignore_subscribe_messages=True
            ) as ps:
                self._ps = ps
                await ps.subscribe(self._keys.ctl)
                self._channels = set()
                if self._connected_once:
                    self.counters.reconnects += 1
                    await self._presence.rejoin(client, self._shas)
                else:  # leftovers of an earlier run under this name go first
                    await self._presence.sweep(client, self._shas, runtime, own=True)
                self._up = True
                self._connected_once = True
                self._queue[:0] = self._backlog
                self._backlog = []
                runtime.hub.resync()  # listen again; subscribers back in step from the streams
                self._wakeup.set()
                started.set()
                logger.info("broker %s: connected to %s", self.node, self.url)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(receive, ps, self._keys, self.node, self.counters, runtime)
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
                await ps.subscribe(self._keys.channel(topic))
                self._channels.add(topic)
        elif topic in self._channels:
            self._channels.discard(topic)
            await ps.unsubscribe(self._keys.channel(topic))

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
                    request = publish_call(pipe, shas[PUBLISH], self._keys, item)
                elif isinstance(item, Fetch):
                    request = fetch_call(pipe, shas[FETCH], self._keys, item)
                elif isinstance(item, PresenceOut):
                    request = self._presence.call(pipe, shas, item)
                else:
                    request = pipe.publish(self._keys.ctl, item[1])
                requests.append((item, request))
        for item, request in requests:
            result = await request
            if isinstance(item, Outgoing):
                seq, epoch = int(result[0]), text(result[1])
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
                    read.answer = answer(item, result)
                    read.done.set()
                else:
                    runtime.hub.answered(answer(item, result))

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

    # -- presence of nodes ---------------------------------------------------------------

    async def _beat(self, client: Any) -> None:
        runtime = self._runtime
        assert runtime is not None
        while True:
            await anyio.sleep(self.heartbeat)
            await self._presence.sweep(client, self._shas, runtime)
