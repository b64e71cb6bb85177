"""The ``wshub`` command: run a hub or an echo server, talk to one.

``wshub serve`` is secure by default: without ``--token``/``--token-file`` it
generates a token and prints it; ``--no-auth`` is an explicit, loudly warned
opt-out. Ready is announced by one flushed line ``listening on ws://HOST:PORT``
so scripts and tests can wait for it.
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import signal
import ssl
import sys
import time
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from .core.auth import SUBPROTOCOL, AccessPolicy, StaticTokens
from .core.limits import Limits

if TYPE_CHECKING:
    from .adapters import ClientSession

__all__ = ["build_parser", "main"]

log = logging.getLogger("wshub.cli")


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wshub", description=__doc__)
    parser.add_argument("--log-level", default="WARNING", help="logging level (default WARNING)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve",
        help="run a hub (default) or an echo server",
        description="Run a hub: clients may subscribe and publish to any topic and call "
        "the commands echo, time and whoami. --echo runs an echo server instead.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 = any)")
    tokens = serve.add_mutually_exclusive_group()
    tokens.add_argument("--token", action="append", default=[], help="accepted bearer token")
    tokens.add_argument("--token-file", type=Path, help="file with one token per line")
    tokens.add_argument(
        "--no-auth", action="store_true", help="accept clients without a token (unsafe)"
    )
    serve.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="browser Origin allowed to connect, e.g. http://localhost:5173 (repeatable)",
    )
    serve.add_argument(
        "--max-message-size",
        type=_positive_int,
        default=Limits().max_message_size,
        help="largest message in bytes, after decompression (default 1 MiB)",
    )
    serve.add_argument(
        "--compression", action="store_true", help="enable permessage-deflate (default off)"
    )
    serve.add_argument(
        "--echo", action="store_true", help="echo every message unchanged (conformance mode)"
    )
    serve.add_argument("--metrics", action="store_true", help="serve GET /metrics (Prometheus)")
    serve.add_argument("--tls-cert", type=Path, help="PEM certificate chain (enables wss://)")
    serve.add_argument("--tls-key", type=Path, help="PEM private key for --tls-cert")

    connect = sub.add_parser("connect", help="interactive client: lines in, messages out")
    connect.add_argument("url", help="ws:// or wss:// URL")
    connect.add_argument("--token", help="bearer token")
    connect.add_argument("--insecure", action="store_true", help="skip TLS verification")
    connect.add_argument(
        "--wait",
        type=float,
        default=5.0,
        help="seconds to wait at end of input for replies still due (default 5)",
    )

    publish = sub.add_parser("publish", help="publish one message to a hub topic")
    publish.add_argument("url", help="ws:// or wss:// URL of a hub")
    publish.add_argument("topic", help="topic name")
    publish.add_argument("payload", help="JSON payload")
    publish.add_argument("--token", help="bearer token")
    publish.add_argument("--insecure", action="store_true", help="skip TLS verification")
    return parser


def _print(line: str) -> None:
    print(line, flush=True)


def _policy(args: argparse.Namespace) -> AccessPolicy:
    if args.no_auth:
        print(
            "WARNING: --no-auth: any client that can reach this port may connect. "
            "Use it only for local testing.",
            file=sys.stderr,
            flush=True,
        )
        return AccessPolicy(require_auth=False, allowed_origins=args.allow_origin)
    if args.token_file is not None:
        tokens = [
            line.strip()
            for line in args.token_file.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
        if not tokens:
            raise SystemExit(f"wshub: no token in {args.token_file}")
    elif args.token:
        tokens = list(args.token)
    else:
        tokens = [secrets.token_urlsafe(24)]
        _print(f"token: {tokens[0]}")
    return AccessPolicy(tokens=StaticTokens(tokens), allowed_origins=args.allow_origin)


def _server_ssl(args: argparse.Namespace) -> ssl.SSLContext | None:
    if args.tls_cert is None:
        if args.tls_key is not None:
            raise SystemExit("wshub: --tls-key needs --tls-cert")
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.tls_cert, args.tls_key)
    return context


def _client_ssl(url: str, insecure: bool) -> ssl.SSLContext | None:
    if not url.startswith("wss://"):
        return None
    context = ssl.create_default_context()
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _hub_server(args: argparse.Namespace, policy: AccessPolicy, limits: Limits) -> Any:
    """The CLI's hub: any topic, publish by any client, three built-in commands."""
    from .adapters import CommandContext, HubServer
    from .core.topics import TopicPolicy

    server = HubServer(
        policy,
        host=args.host,
        port=args.port,
        ssl=_server_ssl(args),
        limits=limits,
        compression=args.compression,
        # A demo/dev hub: every authenticated client may subscribe to and
        # publish on any topic ("all"), so ``wshub publish`` needs no subscription.
        default_topic=TopicPolicy(publish="all", subscribe="all"),
        metrics=args.metrics,
    )

    @server.command("echo")
    async def echo(_ctx: CommandContext, payload: Any) -> Any:
        return payload

    @server.command("time")
    async def now(_ctx: CommandContext, _payload: Any) -> int:
        return int(time.time() * 1000)

    @server.command("whoami")
    async def whoami(ctx: CommandContext, _payload: Any) -> dict[str, str]:
        return {"conn_id": ctx.conn_id, "principal": ctx.principal.id}

    return server


async def _serve(args: argparse.Namespace) -> None:
    from .adapters import EchoHandler, WebSocketServer

    policy = _policy(args)
    limits = Limits(
        max_message_size=args.max_message_size,
        max_outbox_size=max(Limits().max_outbox_size, args.max_message_size + 16),
    )
    server: Any
    if args.echo:
        server = WebSocketServer(
            EchoHandler(policy),
            host=args.host,
            port=args.port,
            ssl=_server_ssl(args),
            limits=limits,
            compression=args.compression,
        )
    else:
        server = _hub_server(args, policy, limits)
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)
        _print(f"listening on {server.url}")
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                server.shutdown()
                break


def _request_key(text: str) -> str | None:
    """The ``id`` of a request line, as a comparable key (None if it has none)."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, dict) and value.get("id") is not None:
        return json.dumps(value["id"])
    return None


def _client(args: argparse.Namespace) -> AbstractAsyncContextManager[ClientSession]:
    """A client for the ``connect`` and ``publish`` commands: token, wshub.v1, TLS."""
    from .adapters import connect

    return connect(
        args.url,
        token=args.token,
        subprotocols=(SUBPROTOCOL,),
        ssl=_client_ssl(args.url, args.insecure),
    )


async def _connect(args: argparse.Namespace) -> None:
    """Send stdin lines; print every message; at EOF wait for the replies still due."""
    outstanding: set[str] = set()
    answered = anyio.Event()

    async with _client(args) as ws:

        async def pump_stdin() -> None:
            nonlocal answered
            while True:
                line = await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
                if not line:
                    break
                line = line.strip()
                if not line:
                    continue
                key = _request_key(line)
                if key is not None:
                    if not outstanding:
                        answered = anyio.Event()
                    outstanding.add(key)
                await ws.send(line)
            if outstanding:
                with anyio.move_on_after(args.wait):
                    await answered.wait()
            await ws.close()

        async with anyio.create_task_group() as tg:
            tg.start_soon(pump_stdin)
            async for message in ws:
                if isinstance(message, str):
                    _print(message)
                    key = _reply_key(message)
                    if key is not None and key in outstanding:
                        outstanding.discard(key)
                        if not outstanding:
                            answered.set()
                else:
                    _print(f"<binary {message.hex()}>")
            tg.cancel_scope.cancel()
        event = ws.closed_event
        if event is not None and event.code not in (1000, 1001, 1005):
            raise SystemExit(f"wshub: closed with {event.code} {event.reason}")


def _reply_key(text: str) -> str | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, dict) and value.get("message_type") == "reply":
        return json.dumps(value.get("id"))
    return None


async def _publish(args: argparse.Namespace) -> int:
    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"wshub: payload is not JSON: {exc}") from None
    request = {"message_type": "publish", "topic": args.topic, "payload": payload, "id": 1}
    async with _client(args) as ws:
        await ws.send(json.dumps(request))
        async for message in ws:
            if not isinstance(message, str):
                continue
            envelope = json.loads(message)
            if envelope.get("message_type") == "reply" and envelope.get("id") == 1:
                _print(json.dumps(envelope))
                await ws.close()
                return 0 if envelope.get("ok") else 1
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s %(message)s")
    from .adapters import ConnectionClosed, HandshakeError

    try:
        if args.command == "serve":
            anyio.run(_serve, args)
        elif args.command == "connect":
            anyio.run(_connect, args)
        elif args.command == "publish":
            return anyio.run(_publish, args)
    except KeyboardInterrupt:
        return 130
    except (HandshakeError, ConnectionClosed, OSError) as exc:
        # Expected failures of a network tool: one line, no traceback.
        print(f"wshub: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0
