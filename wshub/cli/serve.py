"""``wshub serve``: run a hub (the default) or an echo server until SIGINT/SIGTERM.

Secure by default: without ``--token``/``--token-file`` (or
``--signing-key-file``) a 128-bit token is generated and printed
(``--write-token-file`` also hands it to a frontend through an owner-only
file); ``--no-auth`` is an explicit, loudly warned opt-out. Ready is announced
by one flushed line ``listening on ws://HOST:PORT`` so scripts and tests can
wait for it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from ..adapters.broker import BrokerUnavailable
from ..core.auth import AccessPolicy
from ..core.hub_config import HubConfig
from ..core.limits import Limits
from ._common import positive_float, positive_int, say
from ._serve_setup import access_policy, host_options, raise_descriptor_limit, server_ssl, tune_gc

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
        "--signing-key-file",
        type=Path,
        metavar="FILE",
        help="also accept signed tokens made by 'wshub token mint' with these keys",
    )
    serve.add_argument(
        "--write-token-file",
        type=Path,
        metavar="PATH",
        help="write the generated (or first given) token to PATH, readable by the owner only",
    )
    hosts = serve.add_mutually_exclusive_group()
    hosts.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="Host header value to answer (repeatable); replaces the default, which is "
        "localhost/127.0.0.1/[::1] with the port when bound to loopback",
    )
    hosts.add_argument(
        "--any-host",
        action="store_true",
        help="answer any Host header (no DNS-rebinding protection)",
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
        type=positive_int,
        default=Limits().max_message_size,
        help="largest message in bytes, after decompression (default 1 MiB)",
    )
    serve.add_argument(
        "--compression", action="store_true", help="enable permessage-deflate (default off)"
    )
    serve.add_argument(
        "--echo", action="store_true", help="echo every message unchanged (conformance mode)"
    )
    serve.add_argument(
        "--max-connections",
        type=positive_int,
        metavar="N",
        help="open connections in total; beyond, 503 (default: from the descriptor limit, "
        "which serve raises to its hard limit)",
    )
    serve.add_argument(
        "--max-per-principal",
        type=positive_int,
        metavar="N",
        help="open connections per principal; beyond, 429 (default: no bound, since "
        "static tokens are shared secrets rather than users)",
    )
    serve.add_argument(
        "--max-per-host",
        type=positive_int,
        default=HubConfig().max_per_host,
        metavar="N",
        help="open connections per non-loopback address; beyond, 429 (default 200)",
    )
    serve.add_argument(
        "--message-rate",
        type=positive_float,
        default=HubConfig().message_rate,
        metavar="PER_SECOND",
        help="messages each client may send per second, in bursts of twice as many; "
        "beyond, the error rate_limited (default 1000)",
    )
    serve.add_argument(
        "--handshake-timeout",
        type=positive_float,
        default=Limits().handshake_timeout,
        metavar="SECONDS",
        help="time a client has to complete TLS and the upgrade (default 10)",
    )
    serve.add_argument(
        "--ping-interval",
        type=positive_float,
        default=Limits().ping_interval,
        metavar="SECONDS",
        help="keepalive: ping each client this often; no pong within as long closes "
        "it with 1011 (default 20)",
    )
    serve.add_argument(
        "--auth-message",
        action="store_true",
        help="hub: accept upgrades without credentials; the first message must then be "
        '{"message_type": "auth", "payload": {"token": ...}}',
    )
    serve.add_argument(
        "--auth-timeout",
        type=positive_float,
        default=HubConfig().auth_timeout,
        metavar="SECONDS",
        help="hub: time to send the auth message with --auth-message (default 10)",
    )
    serve.add_argument(
        "--refusal",
        choices=("http", "close"),
        default="http",
        help="hub: refuse bad credentials with HTTP 401/403/429 (default) or accept and "
        "close at once with 4401/4403/4429, which browser code can read",
    )
    serve.add_argument(
        "--demo",
        action="store_true",
        help="hub: serve a demo chat page at / built on /wshub.js (its own origin is "
        "allowed; the Host allowlist applies)",
    )
    serve.add_argument(
        "--history",
        type=positive_int,
        default=0,
        metavar="N",
        help="hub: keep the last N messages of every topic, for clients that reconnect "
        "with since {seq, epoch} and for history requests (default: none)",
    )
    serve.add_argument(
        "--history-ttl",
        type=positive_float,
        default=HubConfig().history_ttl,
        metavar="SECONDS",
        help="hub: how long each kept message stays, with --history (default 300)",
    )
    serve.add_argument(
        "--record",
        type=Path,
        metavar="DIR",
        help="record every connection's inputs and outputs to a file in DIR, for "
        "'wshub replay' (tokens redacted; for investigations: costs a line per call)",
    )
    serve.add_argument(
        "--redis",
        metavar="URL",
        help="hub: span every wshub serve on this Redis (redis://HOST:PORT/DB): topics, "
        "history, presence and direct sends across nodes (needs wshub[redis])",
    )
    serve.add_argument(
        "--node",
        metavar="NAME",
        help="hub: this node's name with --redis, in logs, /metrics and presence "
        "(default HOSTNAME-PID)",
    )
    serve.add_argument(
        "--presence-ttl",
        type=positive_float,
        default=3.0,
        metavar="SECONDS",
        help="hub: with --redis, a node silent this long is dead and its members leave "
        "(within SECONDS + 1; default 3)",
    )
    serve.add_argument("--metrics", action="store_true", help="serve GET /metrics (Prometheus)")
    serve.add_argument("--tls-cert", type=Path, help="PEM certificate chain (enables wss://)")
    serve.add_argument("--tls-key", type=Path, help="PEM private key for --tls-cert")


def run(args: argparse.Namespace) -> int:
    try:
        anyio.run(_serve, args)
    except BrokerUnavailableExit as exc:
        print(f"wshub: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


class BrokerUnavailableExit(Exception):
    """``wshub serve --redis`` could not reach Redis at start."""


def _broker(args: argparse.Namespace) -> Any:
    """The ``RedisBroker`` for ``--redis``, or None."""
    if args.redis is None:
        if args.node is not None:
            raise SystemExit("wshub: --node applies with --redis")
        return None
    try:
        from ..adapters.broker_redis import RedisBroker
    except ImportError as exc:
        raise SystemExit(f"wshub: --redis needs the extra wshub[redis] ({exc})") from None
    return RedisBroker(args.redis, node=args.node, presence_ttl=args.presence_ttl)


def _hub_server(args: argparse.Namespace, policy: AccessPolicy, limits: Limits) -> Any:
    """The CLI's hub: any topic, publish by any client, three built-in commands."""
    from ..adapters import CommandContext, HubServer
    from ..core.topics import TopicPolicy

    server = HubServer(
        policy,
        host=args.host,
        port=args.port,
        ssl=server_ssl(args),
        limits=limits,
        compression=args.compression,
        # A demo/dev hub: every authenticated client may subscribe to and
        # publish on any topic ("all"), so ``wshub publish`` needs no subscription.
        default_topic=TopicPolicy(publish="all", subscribe="all"),
        config=HubConfig(
            auth_timeout=args.auth_timeout,
            max_connections=args.max_connections,
            max_per_principal=args.max_per_principal,
            max_per_host=args.max_per_host,
            message_rate=args.message_rate,
            message_burst=max(1, round(2 * args.message_rate)),
            history_size=args.history,
            history_ttl=args.history_ttl,
        ),
        metrics=args.metrics,
        auth_message=args.auth_message,
        refusal=args.refusal,
        record=args.record,
        broker=_broker(args),
        **host_options(args),
    )

    if args.demo:
        from ..adapters.static_files import StaticFiles

        server.handler.static_files = StaticFiles(demo=True)
        server.configure_topic("demo.chat", publish="subscribers", presence=True)

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
    from ..adapters import EchoHandler, WebSocketServer

    raise_descriptor_limit()

    policy = access_policy(args)
    limits = Limits(
        max_message_size=args.max_message_size,
        max_outbox_size=max(Limits().max_outbox_size, args.max_message_size + 16),
        handshake_timeout=args.handshake_timeout,
        ping_interval=args.ping_interval,
        ping_timeout=args.ping_interval,
    )
    server: Any
    if args.echo and (
        args.auth_message or args.refusal != "http" or args.demo or args.redis is not None
    ):
        raise SystemExit(
            "wshub: --auth-message, --refusal, --demo and --redis apply to the hub, not --echo"
        )
    if args.echo:
        server = WebSocketServer(
            EchoHandler(policy),
            host=args.host,
            port=args.port,
            ssl=server_ssl(args),
            limits=limits,
            compression=args.compression,
            record=args.record,
            **host_options(args),
        )
    else:
        server = _hub_server(args, policy, limits)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(server.serve)
            await _announce_and_wait(args, server, policy)
    except* BrokerUnavailable as group:
        raise BrokerUnavailableExit(str(group.exceptions[0])) from None


async def _announce_and_wait(args: argparse.Namespace, server: Any, policy: AccessPolicy) -> None:
    """Say where the server listens, then run until SIGINT/SIGTERM asks it to stop."""
    tune_gc()
    say(f"listening on {server.url}")
    if args.record is not None:
        recorder = server.recorder if args.echo else server.server.recorder
        say(f"recording connections to {recorder.path}")
    if args.demo:
        _announce_demo(args, server, policy)
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            server.shutdown()
            break


def _announce_demo(args: argparse.Namespace, server: Any, policy: AccessPolicy) -> None:
    """Allow the demo page's own origin (known once listening) and print its address.

    The token goes in the URL's fragment, which the browser never sends.
    """
    scheme = "https" if args.tls_cert is not None else "http"
    hosts = server.server.allowed_hosts
    if hosts is None:
        say("demo: with --any-host, allow the page's origin with --allow-origin")
    else:
        policy.allow_origins(f"{scheme}://{host}" for host in sorted(hosts))
    token = getattr(args, "generated_token", None) or (args.token[0] if args.token else None)
    url = f"{scheme}{server.url.removeprefix('wss').removeprefix('ws')}/"
    say(f"demo: {url}" + (f"#token={token}" if token else ""))
