"""The ``websockets`` library (17.x) doing the jobs of ``wshub serve``, written plainly.

This is the comparison server: what a competent websockets user writes for
the same work. It checks the bearer token in ``process_request`` (401
otherwise); with ``--echo`` it echoes every message; otherwise it is a small
hub speaking wshub's envelopes (``docs/protocol.md``): a ``welcome`` on
connect, ``subscribe``/``unsubscribe`` with replies, ``publish`` encoded once
and sent with ``websockets.broadcast`` to the topic's subscribers, errors as
envelopes. The library's defaults stay on (1 MiB max message size, keepalive
pings, its write buffer limits).

    python benchmarks/servers/websockets_server.py --port 0 --token T [--echo]

Prints ``listening on ws://HOST:PORT`` when ready, like ``wshub serve``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.http11 import Request, Response

SUBPROTOCOL = "wshub.v1"
_conn_ids = itertools.count(1)


def dumps(envelope: dict[str, Any]) -> str:
    """Compact JSON in raw UTF-8, as wshub writes its envelopes."""
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False)


def now_ms() -> int:
    return int(time.time() * 1000)


class Hub:
    """Topics, their subscribers and sequence numbers."""

    def __init__(self) -> None:
        self.topics: dict[str, set[ServerConnection]] = {}
        self.seqs: dict[str, int] = {}
        self.principals: dict[ServerConnection, str] = {}

    def reply(self, request_id: Any, payload: Any) -> str:
        return dumps(
            {
                "message_type": "reply",
                "id": request_id,
                "ok": True,
                "payload": payload,
                "timestamp": now_ms(),
            }
        )

    def error(self, request_id: Any, code: str, message: str) -> str:
        envelope: dict[str, Any] = {"message_type": "reply" if request_id is not None else "error"}
        if request_id is not None:
            envelope["id"] = request_id
            envelope["ok"] = False
        envelope.update(payload=None, error={"code": code, "message": message}, timestamp=now_ms())
        return dumps(envelope)

    def leave(self, ws: ServerConnection, topic: str) -> None:
        members = self.topics.get(topic)
        if members is None:
            return
        members.discard(ws)
        if not members:
            del self.topics[topic]
            self.seqs.pop(topic, None)

    async def handle(self, ws: ServerConnection) -> None:
        conn_id = f"c{next(_conn_ids)}"
        principal = self.principals.pop(ws, "anonymous")
        mine: set[str] = set()
        await ws.send(
            dumps(
                {
                    "message_type": "welcome",
                    "payload": {"conn_id": conn_id, "principal": principal},
                    "timestamp": now_ms(),
                }
            )
        )
        try:
            async for message in ws:
                if not isinstance(message, str):
                    await ws.close(1003, "binary messages are not supported")
                    return
                answer = self.dispatch(ws, message, mine)
                if answer is not None:
                    await ws.send(answer)
        finally:
            for topic in mine:
                self.leave(ws, topic)

    def dispatch(self, ws: ServerConnection, message: str, mine: set[str]) -> str | None:
        try:
            envelope = json.loads(message)
        except ValueError:
            return self.error(None, "invalid_json", "not JSON")
        if not isinstance(envelope, dict) or not isinstance(envelope.get("message_type"), str):
            return self.error(None, "invalid_envelope", "not an envelope")
        kind = envelope["message_type"]
        request_id = envelope.get("id")
        topic = envelope.get("topic")
        if kind in ("subscribe", "unsubscribe", "publish") and (
            not isinstance(topic, str) or not topic or len(topic) > 256
        ):
            return self.error(request_id, "invalid_envelope", "bad topic")
        assert topic is None or isinstance(topic, str)
        if kind == "subscribe" and topic is not None:
            self.topics.setdefault(topic, set()).add(ws)
            mine.add(topic)
            payload: Any = {"topic": topic, "seq": self.seqs.get(topic, 0)}
        elif kind == "unsubscribe" and topic is not None:
            self.leave(ws, topic)
            mine.discard(topic)
            payload = {"topic": topic}
        elif kind == "publish" and topic is not None:
            members = self.topics.get(topic)
            seq, delivered = 0, 0
            if members:
                seq = self.seqs[topic] = self.seqs.get(topic, 0) + 1
                broadcast(
                    members,
                    dumps(
                        {
                            "message_type": "message",
                            "topic": topic,
                            "seq": seq,
                            "payload": envelope.get("payload"),
                            "timestamp": now_ms(),
                        }
                    ),
                )
                delivered = len(members)
            payload = {"topic": topic, "seq": seq, "delivered": delivered}
        elif request_id is not None:
            return self.error(request_id, "unknown_command", f"no command {kind!r}")
        else:
            return self.error(None, "unknown_message_type", f"unknown {kind!r}")
        return None if request_id is None else self.reply(request_id, payload)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--token", action="append", default=[], required=True)
    parser.add_argument("--echo", action="store_true")
    parser.add_argument("--ping-interval", type=float, default=20.0)
    args = parser.parse_args()
    tokens = {token: f"token-{i}" for i, token in enumerate(args.token)}
    hub = Hub()

    def check_token(connection: ServerConnection, request: Request) -> Response | None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        principal = tokens.get(token) if scheme.lower() == "bearer" else None
        if principal is None:
            return connection.respond(HTTPStatus.UNAUTHORIZED, "missing or invalid token\n")
        if not args.echo:
            hub.principals[connection] = principal
        return None

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with serve(
        echo if args.echo else hub.handle,
        args.host,
        args.port,
        process_request=check_token,
        subprotocols=None if args.echo else [SUBPROTOCOL],  # type: ignore[list-item]
        ping_interval=args.ping_interval,
        ping_timeout=args.ping_interval,
    ) as server:
        host, port = server.sockets[0].getsockname()[:2]
        print(f"listening on ws://{host}:{port}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
