"""``wshub publish``: publish one JSON message to a hub topic and print the reply.

The exit status is 0 when the hub accepted the publication, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json

import anyio

from ._common import client_session, say

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    publish = sub.add_parser("publish", help="publish one message to a hub topic")
    publish.add_argument("url", help="ws:// or wss:// URL of a hub")
    publish.add_argument("topic", help="topic name")
    publish.add_argument("payload", help="JSON payload")
    publish.add_argument("--token", help="bearer token")
    publish.add_argument("--insecure", action="store_true", help="skip TLS verification")


def run(args: argparse.Namespace) -> int:
    return anyio.run(_publish, args)


async def _publish(args: argparse.Namespace) -> int:
    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"wshub: payload is not JSON: {exc}") from None
    request = {"message_type": "publish", "topic": args.topic, "payload": payload, "id": 1}
    async with client_session(args) as ws:
        await ws.send(json.dumps(request))
        async for message in ws:
            if not isinstance(message, str):
                continue
            envelope = json.loads(message)
            if envelope.get("message_type") == "reply" and envelope.get("id") == 1:
                say(json.dumps(envelope))
                await ws.close()
                return 0 if envelope.get("ok") else 1
    return 1
