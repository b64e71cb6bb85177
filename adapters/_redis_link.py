"""The Redis broker's link: which errors mean it failed, and its figures for ``/metrics``."""

from __future__ import annotations

from dataclasses import dataclass

import anyio
import coredis.exceptions

LINK_ERRORS = (
    coredis.exceptions.ConnectionError,
    TimeoutError,
    OSError,
    anyio.ClosedResourceError,
    anyio.BrokenResourceError,
    anyio.EndOfStream,
)


def link_error(exc: BaseException) -> bool:
    """Is ``exc`` (or every exception in a group) the link to Redis failing?"""
    if isinstance(exc, BaseExceptionGroup):
        return all(link_error(e) for e in exc.exceptions)
    return isinstance(exc, LINK_ERRORS)


def leaf(exc: BaseException) -> str:
    """The first real error in ``exc`` (task groups wrap them), for one log line."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return str(exc) or type(exc).__name__


@dataclass(slots=True)
class Counters:
    reconnects: int = 0
    publishes: int = 0
    publish_failures: int = 0
    received: int = 0
    lag: float = 0.0
    pipelines: int = 0  # round trips carrying publications, fetches, presence and relays


def metrics_text(node: str, counters: Counters, *, up: bool, channels: int) -> str:
    """The broker's lines for ``/metrics``, labelled with ``node``."""
    node = node.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    label = f'{{node="{node}"}}'
    c = counters
    rows = [
        ("broker_up", "gauge", "1 while the link to Redis is up.", int(up)),
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
        ("broker_channels", "gauge", "Topic channels listened to.", channels),
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
