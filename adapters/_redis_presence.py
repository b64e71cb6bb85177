"""The Redis broker's presence: this node's members, and the nodes' deadlines.

Each node records its members in the topics' presence hashes and in its own
member set (``PRESENCE``), refreshes its deadline in Redis every heartbeat
and sweeps nodes past theirs (``HEARTBEAT``): the sweeping node sends the
swept members' ``leave`` to every node and to its own ``on_event``. A node
starting takes its own members left by an earlier run under its name first;
a node whose link came back records its members again (``REJOIN``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..core.hub_broker import PresenceOut
from ..core.hub_events import HubEvent, PresenceChanged
from ._redis_scripts import HEARTBEAT, PRESENCE, REJOIN, Keys, text

if TYPE_CHECKING:
    from .hub_runtime import HubRuntime

logger = logging.getLogger("wshub.broker")


class NodePresence:
    """The presence members of node ``node`` and its sweeps of dead nodes."""

    def __init__(self, node: str, keys: Keys, presence_ttl: float) -> None:
        self.node = node
        self.keys = keys
        self.presence_ttl = presence_ttl
        # this node's members: (topic, conn id) -> (principal, join envelope)
        self.members: dict[tuple[str, str], tuple[str, bytes]] = {}
        self._origin = b"r" + node.encode() + b"\n"  # presence notices from this node

    def call(self, pipe: Any, shas: dict[str, str], item: PresenceOut) -> Any:
        """Note a local member's join or leave and queue ``PRESENCE`` for it on ``pipe``."""
        key = (item.topic, item.conn_id)
        if item.joined:
            self.members[key] = (item.principal_id, item.envelope)
        else:
            self.members.pop(key, None)
        return pipe.evalsha(
            shas[PRESENCE],
            keys=[self.keys.presence(item.topic), self.keys.members(self.node)],
            args=[
                int(item.joined),
                item.conn_id,
                self.node,
                item.principal_id,
                item.topic,
                self.keys.channel(item.topic),
                self._origin + item.envelope,
            ],
        )

    async def rejoin(self, client: Any, shas: dict[str, str]) -> None:
        """After a lost link: record this node's members again. A survivor may
        have declared this node dead meanwhile (their ``leave`` went out):
        those it removed join again, announced to the other nodes."""
        if not self.members:
            return
        sha = shas[REJOIN]
        async with client.pipeline(transaction=False) as pipe:
            for (topic, conn_id), (principal, envelope) in self.members.items():
                pipe.evalsha(
                    sha,
                    keys=[self.keys.presence(topic), self.keys.members(self.node)],
                    args=[
                        conn_id,
                        f"{self.node}\n{principal}",
                        f"{topic}\n{conn_id}",
                        self.keys.channel(topic),
                        self._origin + envelope,
                    ],
                )

    async def sweep(
        self, client: Any, shas: dict[str, str], runtime: HubRuntime, *, own: bool = False
    ) -> None:
        """Refresh this node's deadline; remove nodes past theirs (with ``own``,
        at start, this node's own leftovers from an earlier run first, in the
        same script) and send their members' ``leave``."""
        gone = await client.evalsha(
            shas[HEARTBEAT],
            keys=[self.keys.nodes],
            args=[self.node, int(self.presence_ttl * 1000), self.keys.prefix, int(own)],
        )
        if not gone:
            return
        hub = runtime.hub
        events: list[HubEvent] = []
        async with client.pipeline(transaction=False) as pipe:
            for i in range(0, len(gone), 3):
                topic, conn_id, principal = (text(x) for x in gone[i : i + 3])
                payload = {"event": "leave", "conn_id": conn_id, "principal": principal}
                envelope = hub.encode("presence", payload, topic=topic)
                hub.presence_arrived(topic, envelope)
                pipe.publish(self.keys.channel(topic), self._origin + envelope)
                events.append(
                    PresenceChanged(
                        topic=topic, conn_id=conn_id, principal_id=principal, joined=False
                    )
                )
        runtime.broker_events(events)  # the sweeping node's on_event hears of them
        logger.info(
            "broker %s: %d presence member(s) of dead nodes left", self.node, len(gone) // 3
        )
