"""python-socketio 5 with ``AsyncRedisManager``: the cross-node job done the Socket.IO way.

One node of a Socket.IO cluster, as a competent python-socketio user would
write it for ``benchmarks/crossnode.py``: an ``AsyncServer`` (ASGI, under
uvicorn with its defaults but no access log) whose client manager is
``AsyncRedisManager``, so an ``emit`` to a room goes through Redis pub/sub
and every node delivers it to its own members of the room. Clients
authenticate in the namespace connect (``auth={"token": ...}``, checked in
constant time against ``--token``), ``subscribe`` joins the room named by its
argument and acknowledges, ``publish`` with ``{"topic", "payload"}`` emits
``message`` with the payload to that room. WebSocket transport only (the
load generator speaks Engine.IO 4 over WebSocket directly, no polling).

    python benchmarks/servers/socketio_redis.py --port 0 --token T --redis URL [--node NAME]

Prints ``listening on ws://HOST:PORT`` when ready, like ``wshub serve``.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import socket
from typing import Any

import socketio
import uvicorn


def make_server(tokens: list[str], redis_url: str) -> socketio.AsyncServer:
    manager = socketio.AsyncRedisManager(redis_url, channel="bench-socketio")
    sio = socketio.AsyncServer(
        async_mode="asgi",
        client_manager=manager,
        transports=["websocket"],
    )
    accepted = [t.encode() for t in tokens]

    @sio.event
    async def connect(_sid: str, _environ: dict[str, Any], auth: Any) -> bool:
        token = auth.get("token") if isinstance(auth, dict) else None
        if not isinstance(token, str):
            return False
        given = token.encode()
        return any(hmac.compare_digest(given, t) for t in accepted)

    @sio.event
    async def subscribe(sid: str, topic: Any) -> bool:
        if not isinstance(topic, str):
            return False
        await sio.enter_room(sid, topic)
        return True

    @sio.event
    async def publish(_sid: str, data: Any) -> None:
        if isinstance(data, dict) and isinstance(data.get("topic"), str):
            await sio.emit("message", data.get("payload"), room=data["topic"])

    return sio


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", action="append", required=True)
    parser.add_argument("--redis", required=True, help="redis://HOST:PORT/DB")
    parser.add_argument("--node", default="", help="a name for logs (unused otherwise)")
    args = parser.parse_args()
    sio = make_server(args.token, args.redis)
    app = socketio.ASGIApp(sio)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, backlog=4096, lifespan="off"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve([sock]))
    while not server.started:
        if task.done():
            await task
            return
        await asyncio.sleep(0.01)
    host, port = sock.getsockname()[:2]
    print(f"listening on ws://{host}:{port}", flush=True)
    await task


if __name__ == "__main__":
    asyncio.run(main())
