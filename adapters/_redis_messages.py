"""What the Redis broker's channels carry, and what a node does with what arrives.

Topic channels carry ``p<seq>\\n<epoch>\\n<droppable>\\n<ms>\\n<envelope>`` (a
numbered publication, from ``PUBLISH``) and ``r<node>\\n<envelope>`` (a presence
notice). The control channel carries ``<kind>\\n<node>\\n<target>\\n<payload>``
for direct sends done on another node (``relay_message``).
"""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from ._redis_link import Counters
from ._redis_scripts import Keys, text

if TYPE_CHECKING:
    from .hub_runtime import HubRuntime


def relay_message(kind: str, node: str, target: str | Collection[str] | None, data: bytes) -> bytes:
    """A control message from ``node``: ``target`` is one id, several, or none (everyone)."""
    if target is None:
        arg = ""
    elif isinstance(target, str):
        arg = target
    else:
        arg = "\t".join(target)
    return f"{kind}\n{node}\n{arg}\n".encode() + data


async def receive(ps: Any, keys: Keys, node: str, counters: Counters, runtime: HubRuntime) -> None:
    """Hand what arrives on ``ps`` (pub/sub) to the hub of node ``node``, until it ends."""
    prefix = keys.channels
    async for message in ps:
        if message["type"] != "message":
            continue
        channel = text(message["channel"])
        data = message["data"]
        if not isinstance(data, bytes):
            data = data.encode()
        if channel == keys.ctl:
            _control(node, runtime, data)
        elif channel.startswith(prefix):
            _topic_message(node, counters, runtime, channel[len(prefix) :], data)


def _topic_message(
    node: str, counters: Counters, runtime: HubRuntime, topic: str, data: bytes
) -> None:
    kind = data[:1]
    if kind == b"p":
        seq, epoch, flag, stamp, envelope = data[1:].split(b"\n", 4)
        counters.received += 1
        counters.lag = max(0.0, time.time() - int(stamp) / 1000)
        runtime.hub.publication(topic, int(seq), epoch.decode(), envelope, droppable=flag == b"1")
    elif kind == b"r":
        origin, envelope = data[1:].split(b"\n", 1)
        if origin.decode() != node:
            runtime.hub.presence_arrived(topic, envelope)


def _control(node: str, runtime: HubRuntime, data: bytes) -> None:
    kind, origin, arg, payload = data.split(b"\n", 3)
    if origin.decode() == node:
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
