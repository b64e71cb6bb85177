"""Hub counters, their immutable snapshot, and the Prometheus text rendering."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["Counters", "HubStats", "prometheus_text"]


@dataclass(slots=True)
class Counters:
    """Mutable running totals kept by the hub (snapshot them with ``Hub.stats``)."""

    messages_in: int = 0
    bytes_in: int = 0
    messages_out: int = 0
    bytes_out: int = 0
    drops: int = 0
    slow_consumer_closes: int = 0
    policy_closes: int = 0
    commands: int = 0
    command_errors: int = 0
    outbox_high_water: int = 0
    errors_by_code: dict[str, int] = field(default_factory=dict)

    def error(self, code: str) -> None:
        self.errors_by_code[code] = self.errors_by_code.get(code, 0) + 1


@dataclass(frozen=True, slots=True, kw_only=True)
class HubStats:
    """A point-in-time snapshot of the hub.

    Gauges: ``connections``, ``subscriptions`` (subscribers per topic that has
    any), ``pending_commands``. Counters since the hub was created:
    ``messages_in``/``bytes_in`` (client text frames, UTF-8 bytes),
    ``messages_out``/``bytes_out`` (envelopes queued, counted once per
    recipient, envelope bytes before framing or compression), ``drops``
    (droppable messages skipped for full outboxes), ``slow_consumer_closes``
    (connections failed with 1013 by an overflowing send), ``policy_closes``
    (1008 for too many errors), ``commands`` (requests handed to the
    application), ``command_errors`` (commands answered with an error),
    ``errors_by_code``. ``outbox_high_water``: the largest outbox seen right
    after the hub queued to it. ``history_entries`` / ``history_bytes``:
    envelopes kept in the history of all topics, and their bytes (gauges).
    """

    connections: int
    subscriptions: Mapping[str, int]
    pending_commands: int
    messages_in: int
    bytes_in: int
    messages_out: int
    bytes_out: int
    drops: int
    slow_consumer_closes: int
    policy_closes: int
    commands: int
    command_errors: int
    outbox_high_water: int
    errors_by_code: Mapping[str, int]
    history_entries: int = 0
    history_bytes: int = 0

    @classmethod
    def snapshot(
        cls,
        counters: Counters,
        *,
        connections: int,
        subscriptions: dict[str, int],
        pending_commands: int,
        history_entries: int = 0,
        history_bytes: int = 0,
    ) -> HubStats:
        return cls(
            connections=connections,
            subscriptions=MappingProxyType(dict(subscriptions)),
            pending_commands=pending_commands,
            messages_in=counters.messages_in,
            bytes_in=counters.bytes_in,
            messages_out=counters.messages_out,
            bytes_out=counters.bytes_out,
            drops=counters.drops,
            slow_consumer_closes=counters.slow_consumer_closes,
            policy_closes=counters.policy_closes,
            commands=counters.commands,
            command_errors=counters.command_errors,
            outbox_high_water=counters.outbox_high_water,
            errors_by_code=MappingProxyType(dict(counters.errors_by_code)),
            history_entries=history_entries,
            history_bytes=history_bytes,
        )


def _label(value: str) -> str:
    # Exposition format: backslash, double quote and newline are escaped.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


_SCALARS: tuple[tuple[str, str, str, str], ...] = (
    ("connections", "connections", "gauge", "Open connections registered in the hub."),
    ("pending_commands", "pending_commands", "gauge", "Commands awaiting their reply."),
    (
        "outbox_high_water",
        "outbox_high_water_bytes",
        "gauge",
        "Largest connection outbox seen after queueing.",
    ),
    ("history_entries", "history_entries", "gauge", "Envelopes kept in topic history."),
    ("history_bytes", "history_bytes", "gauge", "Bytes of envelopes kept in topic history."),
    ("messages_in", "messages_received_total", "counter", "Client text messages received."),
    ("bytes_in", "received_bytes_total", "counter", "UTF-8 bytes of client text messages."),
    ("messages_out", "messages_sent_total", "counter", "Envelopes queued, once per recipient."),
    ("bytes_out", "sent_bytes_total", "counter", "Envelope bytes queued, once per recipient."),
    ("drops", "dropped_messages_total", "counter", "Droppable messages skipped for full outboxes."),
    (
        "slow_consumer_closes",
        "slow_consumer_closes_total",
        "counter",
        "Connections closed with 1013 because their outbox overflowed.",
    ),
    (
        "policy_closes",
        "policy_closes_total",
        "counter",
        "Connections closed with 1008 for too many invalid messages.",
    ),
    ("commands", "commands_total", "counter", "Command requests handed to the application."),
    ("command_errors", "command_errors_total", "counter", "Commands answered with an error."),
)


def prometheus_text(stats: HubStats, *, prefix: str = "wshub") -> str:
    """Render ``stats`` in the Prometheus text exposition format (version 0.0.4).

    Topic names become label values: keep them few, or drop
    ``subscriptions`` before serving if topics are per user.
    """
    lines: list[str] = []
    for attr, name, kind, help_text in _SCALARS:
        metric = f"{prefix}_{name}"
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} {kind}"]
        lines.append(f"{metric} {getattr(stats, attr)}")
    metric = f"{prefix}_subscriptions"
    lines += [f"# HELP {metric} Subscriptions over all topics.", f"# TYPE {metric} gauge"]
    lines.append(f"{metric} {sum(stats.subscriptions.values())}")
    metric = f"{prefix}_topic_subscribers"
    lines += [f"# HELP {metric} Subscribers per topic.", f"# TYPE {metric} gauge"]
    for topic, count in sorted(stats.subscriptions.items()):
        lines.append(f'{metric}{{topic="{_label(topic)}"}} {count}')
    metric = f"{prefix}_errors_total"
    lines += [f"# HELP {metric} Errors sent to clients, by code.", f"# TYPE {metric} counter"]
    for code, count in sorted(stats.errors_by_code.items()):
        lines.append(f'{metric}{{code="{_label(code)}"}} {count}')
    return "\n".join(lines) + "\n"
