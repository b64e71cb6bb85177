"""``wshub connect``: an interactive client, stdin lines in, every message out.

At the end of input it waits (``--wait``) for the replies still due to the
requests it sent (lines with an ``id``), then closes. A connection that ends
otherwise than normally (1000, 1001, or a close frame without a code, 1005)
ends the command with ``wshub: closed with CODE: REASON`` and status 1. With
``--subscribe`` or ``--since`` it follows topics with the reconnecting hub
client instead (``_follow``).
"""

from __future__ import annotations

import argparse
import json

import anyio

from ._common import (
    add_client_arguments,
    check_url,
    client_session,
    closed_line,
    fail,
    positive_float,
    positive_int,
    say,
    stdin_lines,
)
from ._follow import follow, since_position

__all__ = ["NORMAL_CLOSE_CODES", "add_parser", "run"]

NORMAL_CLOSE_CODES = frozenset({1000, 1001, 1005})
"""Endings that are not errors: normal closure, going away, no status code."""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    connect = sub.add_parser(
        "connect",
        help="interactive client: lines in, messages out",
        description="Send each line of stdin as a text message and print every message "
        "received. At the end of input, wait for the replies still due (--wait), then close. "
        "With --subscribe or --since, follow topics with the reconnecting hub client.",
    )
    connect.add_argument("url", help="ws:// or wss:// URL")
    add_client_arguments(connect)
    connect.add_argument(
        "--open-timeout",
        type=positive_float,
        default=10.0,
        metavar="SECONDS",
        help="give up when the connection is not open within SECONDS (default 10)",
    )
    connect.add_argument(
        "--wait",
        type=float,
        default=5.0,
        help="seconds to wait at end of input for replies still due (default 5); "
        "with --subscribe: the timeout of each request",
    )
    connect.add_argument(
        "--subscribe",
        action="append",
        metavar="TOPIC",
        help="follow TOPIC with the hub client: reconnects by itself, resubscribes with since, "
        "one JSON line per message (with seq and epoch); stdin lines are sent as requests "
        "(repeatable)",
    )
    connect.add_argument(
        "--since",
        action="append",
        nargs=3,
        type=str,
        metavar=("TOPIC", "SEQ", "EPOCH"),
        help="follow TOPIC from after SEQ of EPOCH (a line printed by an earlier run): the "
        'server replays what was missed, or a {"gap": ...} line says it could not '
        "(repeatable)",
    )
    connect.add_argument(
        "--count", type=positive_int, help="with --subscribe: exit after N topic messages"
    )
    connect.add_argument(
        "--max-attempts",
        type=positive_int,
        help="with --subscribe: give up after N failed connection attempts in a row "
        "(default: never)",
    )


def run(args: argparse.Namespace) -> int:
    check_url(args.url)
    if args.subscribe or args.since:
        args.since = [since_position(values) for values in args.since or ()]
        return anyio.run(follow, args)
    anyio.run(_connect, args)
    return 0


def _request_key(text: str) -> str | None:
    """The ``id`` of a request line, as a comparable key (None if it has none)."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, dict) and value.get("id") is not None:
        return json.dumps(value["id"])
    return None


def _reply_key(text: str) -> str | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, dict) and value.get("message_type") == "reply":
        return json.dumps(value.get("id"))
    return None


async def _connect(args: argparse.Namespace) -> None:
    """Send stdin lines; print every message; at EOF wait for the replies still due."""
    from ..adapters import ConnectionClosed

    outstanding: set[str] = set()
    answered = anyio.Event()

    async with client_session(args, open_timeout=args.open_timeout) as ws:

        async def pump_stdin() -> None:
            nonlocal answered
            async with stdin_lines() as lines:
                async for raw in lines:
                    line = raw.strip()
                    if not line:
                        continue
                    key = _request_key(line)
                    if key is not None:
                        if not outstanding:
                            answered = anyio.Event()
                        outstanding.add(key)
                    try:
                        await ws.send(line)
                    except ConnectionClosed:
                        return  # the receiving side reports how it ended
            if outstanding:
                with anyio.move_on_after(args.wait):
                    await answered.wait()
            await ws.close()

        async with anyio.create_task_group() as tg:
            tg.start_soon(pump_stdin)
            try:
                async for message in ws:
                    if isinstance(message, str):
                        say(message)
                        key = _reply_key(message)
                        if key is not None and key in outstanding:
                            outstanding.discard(key)
                            if not outstanding:
                                answered.set()
                    else:
                        say(f"<binary {message.hex()}>")
            except ConnectionClosed:
                pass  # reported below, from the closing event
            tg.cancel_scope.cancel()
    event = ws.closed_event
    if event is not None and event.code not in NORMAL_CLOSE_CODES:
        raise fail(closed_line(event.code, event.reason))
