"""wshub's hub as an ASGI app (``HubApp``) under uvicorn: what mounting costs.

Hub mode runs the same hub as ``wshub serve`` (same tokens, the same open
default topic policy, the ``echo``/``time``/``whoami`` commands, no
per-principal bound) behind uvicorn instead of wshub's own server. ``--echo``
runs a minimal ASGI echo app with the same ``AccessPolicy`` (wshub serve
--echo is not the hub either: it measures the transport). uvicorn keeps its
defaults (``--ws auto``, keepalive pings, permessage-deflate offered) except
its message limit, set to wshub's 1 MiB; no access log; the garbage
collector tuned as ``wshub serve`` tunes it.

    python benchmarks/servers/wshub_uvicorn.py --port 0 --token T [--echo] [--ws IMPL]
                                               [--message-rate PER_SECOND]

Prints ``listening on ws://HOST:PORT`` when ready, like ``wshub serve``.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import socket
import time
from typing import Any

import uvicorn

from wshub.adapters import CommandContext, HubApp
from wshub.adapters._asgi_session import deny, handshake_request
from wshub.cli._serve_setup import tune_gc
from wshub.core.auth import AccessPolicy, Denial, StaticTokens
from wshub.core.hub_config import HubConfig
from wshub.core.topics import TopicPolicy


def hub_app(policy: AccessPolicy, message_rate: float) -> HubApp:
    hub = HubApp(
        policy,
        default_topic=TopicPolicy(publish="all", subscribe="all"),
        config=HubConfig(
            max_per_principal=None,
            message_rate=message_rate,
            message_burst=max(1, round(2 * message_rate)),
        ),
    )

    @hub.command("echo")
    async def echo(_ctx: CommandContext, payload: Any) -> Any:
        return payload

    @hub.command("time")
    async def now(_ctx: CommandContext, _payload: Any) -> int:
        return int(time.time() * 1000)

    @hub.command("whoami")
    async def whoami(ctx: CommandContext, _payload: Any) -> dict[str, str]:
        return {"conn_id": ctx.conn_id, "principal": ctx.principal.id}

    return hub


def echo_app(policy: AccessPolicy) -> Any:
    """Authenticate like the hub, then send every message back."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        if (await receive())["type"] != "websocket.connect":
            return
        verdict = policy.authenticate(handshake_request(scope))
        if inspect.isawaitable(verdict):
            verdict = await verdict
        if isinstance(verdict, Denial):
            await deny(scope, send, verdict.status, verdict.reason, verdict.headers)
            return
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                return
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})

    return app


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", action="append", required=True)
    parser.add_argument("--echo", action="store_true")
    parser.add_argument("--ws", default="auto", help="uvicorn's WebSocket implementation")
    parser.add_argument(
        "--message-rate",
        type=float,
        default=HubConfig().message_rate,
        help="as wshub serve --message-rate (per connection per second, bursts of twice that)",
    )
    args = parser.parse_args()
    policy = AccessPolicy(tokens=StaticTokens(args.token))
    app = echo_app(policy) if args.echo else hub_app(policy, args.message_rate)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    config = uvicorn.Config(
        app,
        ws=args.ws,
        ws_max_size=1 << 20,
        lifespan="on" if not args.echo else "off",
        log_level="warning",
        access_log=False,
        backlog=4096,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve([sock]))
    while not server.started:
        if task.done():
            await task
            return
        await asyncio.sleep(0.01)
    tune_gc()  # as wshub serve does: the comparison is of the transports
    host, port = sock.getsockname()[:2]
    print(f"listening on ws://{host}:{port}", flush=True)
    await task


if __name__ == "__main__":
    asyncio.run(main())
