"""Taking turns: how a connection lets the event loop run everyone else.

Fairness is part of the drivers' contract: a connection does a
bounded amount of work per turn (one read, ``MESSAGES_PER_TURN`` messages)
and then yields, so other connections' reads, writes and timers run between
two pieces of one client's burst, and outboxes are flushed before they fill.
"""

from __future__ import annotations

from asyncio import _get_running_loop, sleep
from collections.abc import Awaitable, Callable
from typing import NamedTuple

import anyio.lowlevel

from ..core import BinaryMessage, Connection, Event, TextMessage

__all__ = ["MESSAGES_PER_TURN", "Handoff", "dispatch_within_turn", "next_turn"]

_MESSAGES = (TextMessage, BinaryMessage)

MESSAGES_PER_TURN = 32
"""Messages a connection's handlers process before the connection yields:
enough that pipelined small messages cost few switches, few enough that a
read full of them (64 KiB) does not hold the loop for long."""


async def next_turn() -> None:
    """Yield to the event loop once (anyio's checkpoint, cheaper on asyncio)."""
    if _get_running_loop() is not None:
        await sleep(0)
    else:
        await anyio.lowlevel.checkpoint()


class Handoff(NamedTuple):
    """What a turn could not finish without waiting: an awaitable, then the events after it."""

    pending: Awaitable[None] | None
    events: list[Event]


def dispatch_within_turn(
    core: Connection,
    events: list[Event],
    dispatch_now: Callable[[Event], Awaitable[None] | None],
) -> Handoff | None:
    """Hand messages to ``dispatch_now`` until one leaves work to await, a
    non-message event comes, or the turn's ``MESSAGES_PER_TURN`` are spent;
    None if every event (and every one the core reported meanwhile) was done.
    """
    budget = MESSAGES_PER_TURN
    while events:
        for i, event in enumerate(events):
            if not budget or not isinstance(event, _MESSAGES):
                return Handoff(None, events[i:])
            budget -= 1
            rest = dispatch_now(event)
            if rest is not None:
                return Handoff(rest, events[i + 1 :])
        events = core.events_received()
    return None
