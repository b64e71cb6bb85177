"""The event loop's clock, read cheaply.

``anyio.current_time()`` finds the running backend on every call (a sniffio
lookup, several function calls); the server reads the clock a few times per
connection event, so on asyncio we ask the running loop directly. It is the
same clock anyio's cancel scopes use, so deadlines computed from it can be
handed to them.
"""

from __future__ import annotations

from asyncio import _get_running_loop

import anyio

__all__ = ["current_time"]


def current_time() -> float:
    """The running event loop's time: ``anyio.current_time()``, faster on asyncio."""
    loop = _get_running_loop()
    if loop is not None:
        return loop.time()
    return anyio.current_time()
