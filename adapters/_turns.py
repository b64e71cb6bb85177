"""Taking turns: how a connection lets the event loop run everyone else.

Fairness is part of the drivers' contract: a connection does a
bounded amount of work per turn (one read, ``MESSAGES_PER_TURN`` messages)
and then yields, so other connections' reads, writes and timers run between
two pieces of one client's burst, and outboxes are flushed before they fill.
"""

from __future__ import annotations

from asyncio import _get_running_loop, sleep

import anyio.lowlevel

__all__ = ["MESSAGES_PER_TURN", "next_turn"]

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
