"""``wshub publish``: publish one JSON message to a hub topic and print the reply.

The reply is printed on stdout; the status is 0 when the hub accepted the
publication, 1 (with the hub's error on stderr) when it refused, 4 when no
reply came within ``--timeout``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import anyio

from ._common import (
    ExitCode,
    add_client_arguments,
    client_session,
    fail,
    positive_float,
    say,
)

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    publish = sub.add_parser(
        "publish",
        help="publish one message to a hub topic",
        description="Publish one JSON message to a hub topic and print the hub's reply.",
    )
    publish.add_argument("url", help="ws:// or wss:// URL of a hub")
    publish.add_argument("topic", help="topic name")
    publish.add_argument("payload", help="JSON payload")
    add_client_arguments(publish)
    publish.add_argument(
        "--timeout",
        type=positive_float,
        default=10.0,
        metavar="SECONDS",
        help="give up when the hub has not replied within SECONDS, connecting included "
        "(default 10)",
    )


def run(args: argparse.Namespace) -> int:
    return anyio.run(_publish, args)


async def _publish(args: argparse.Namespace) -> int:
    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as exc:
        raise fail(f"payload is not JSON: {exc}", ExitCode.USAGE) from None
    request = {"message_type": "publish", "topic": args.topic, "payload": payload, "id": 1}
    with anyio.move_on_after(args.timeout) as scope:
        reply = await _request(args, request)
    if scope.cancelled_caught:
        raise fail(f"no reply from {args.url} within {args.timeout:g} s", ExitCode.TIMEOUT)
    say(json.dumps(reply))
    if reply.get("ok"):
        return 0
    error = reply.get("error")
    if isinstance(error, dict):
        raise fail(f"publish refused: {error.get('code')}: {error.get('message')}")
    raise fail("publish refused")


async def _request(args: argparse.Namespace, request: dict[str, Any]) -> dict[str, Any]:
    """Send ``request`` and return the reply with its id."""
    async with client_session(args) as ws:
        await ws.send(json.dumps(request))
        async for message in ws:
            if not isinstance(message, str):
                continue
            try:
                envelope = json.loads(message)
            except ValueError:
                continue
            if (
                isinstance(envelope, dict)
                and envelope.get("message_type") == "reply"
                and envelope.get("id") == request["id"]
            ):
                await ws.close()
                return envelope
    raise fail("the hub closed the connection without replying")
