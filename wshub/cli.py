"""The ``wshub`` command: run a hub or an echo server, talk to one, make tokens.

``wshub serve`` is secure by default: without ``--token``/``--token-file``
(or ``--signing-key-file``) it generates a 128-bit token and prints it
(``--write-token-file`` also hands it to a frontend through an owner-only
file); ``--no-auth`` is an explicit, loudly warned opt-out. Ready is announced
by one flushed line ``listening on ws://HOST:PORT`` so scripts and tests can
wait for it.

``wshub token keygen`` writes a signing key file (owner-only; one
``<key id>:<base64url key>`` per line, the first signs); ``wshub token mint``
prints a signed expiring token that ``wshub serve --signing-key-file``
accepts.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import re
import secrets
import signal
import ssl
import stat
import sys
import time
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio

from .core.auth import SUBPROTOCOL, AccessPolicy, StaticTokens, TokenSource
from .core.hub_config import HubConfig
from .core.limits import Limits
from .core.tokens import SignedTokens, format_key_file, parse_key_file

if TYPE_CHECKING:
    from .adapters import ClientSession

__all__ = ["build_parser", "main"]

log = logging.getLogger("wshub.cli")


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _key_id(text: str) -> str:
    if not _KEY_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(f"key id must match [A-Za-z0-9_-]{{1,64}}, got {text!r}")
    return text


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
    serve.add_argument(
        "--max-connections",
        type=_positive_int,
        metavar="N",
        help="open connections in total; beyond, 503 (default: from the descriptor limit, "
        "which serve raises to its hard limit)",
    )
    serve.add_argument(
        "--max-per-principal",
        type=_positive_int,
        metavar="N",
        help="open connections per principal; beyond, 429 (default: no bound, since "
        "static tokens are shared secrets rather than users)",
    )
    serve.add_argument(
        "--max-per-host",
        type=_positive_int,
        default=HubConfig().max_per_host,
        metavar="N",
        help="open connections per non-loopback address; beyond, 429 (default 200)",
    )
    serve.add_argument(
        "--handshake-timeout",
        type=_positive_float,
        default=Limits().handshake_timeout,
        metavar="SECONDS",
        help="time a client has to complete TLS and the upgrade (default 10)",
    )
    serve.add_argument(
        "--auth-message",
        action="store_true",
        help="hub: accept upgrades without credentials; the first message must then be "
        '{"message_type": "auth", "payload": {"token": ...}}',
    )
    serve.add_argument(
        "--auth-timeout",
        type=_positive_float,
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

    token = sub.add_parser("token", help="signed tokens: make a key file, mint a token")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    keygen = token_sub.add_parser(
        "keygen",
        help="write a new random signing key file (owner-only permissions)",
        description="Write a 256-bit signing key as '<key id>:<base64url key>' to a new "
        "file readable by its owner only. --rotate adds the new key in front of an existing "
        "file's keys: it signs from then on, the old keys still verify.",
    )
    keygen.add_argument("--out", type=Path, required=True, metavar="FILE", help="key file")
    keygen.add_argument("--key-id", type=_key_id, help="id for the new key (default: random)")
    keygen.add_argument(
        "--rotate", action="store_true", help="prepend a new signing key to an existing file"
    )
    mint = token_sub.add_parser(
        "mint", help="print a signed token", description="Print a signed expiring token."
    )
    mint.add_argument("--key-file", type=Path, required=True, metavar="FILE", help="key file")
    mint.add_argument("--key-id", type=_key_id, help="key to sign with (default: the first)")
    mint.add_argument("--principal", required=True, help="principal id the token stands for")
    mint.add_argument("--scope", action="append", default=[], help="scope granted (repeatable)")
    mint.add_argument(
        "--ttl",
        type=_positive_float,
        default=3600.0,
        metavar="SECONDS",
        help="lifetime in seconds (default 3600)",
    )
    return parser


def _print(line: str) -> None:
    print(line, flush=True)


def _fail(message: str) -> SystemExit:
    return SystemExit(f"wshub: {message}")


def _signed_tokens(path: Path, key_id: str | None = None) -> SignedTokens:
    """The key ring in ``path``; ``key_id`` (if given) signs instead of the first key."""
    try:
        keys = parse_key_file(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise _fail(f"{path}: {exc}") from None
    signing = key_id if key_id is not None else keys[0][0]
    if signing not in dict(keys):
        raise _fail(f"{path}: no key with id {signing!r}")
    return SignedTokens(dict(keys), signing_key_id=signing)


def generate_token() -> str:
    """A fresh 128-bit token, base64url without padding (22 characters)."""
    return secrets.token_urlsafe(16)


def _chmod_private(fd: int, path: Path) -> None:
    if hasattr(os, "fchmod"):
        os.fchmod(fd, 0o600)
    else:  # pragma: no cover - Windows before 3.13: no fchmod, no POSIX modes either
        os.chmod(path, 0o600)


def _open_private(path: Path, *, exclusive: bool) -> int:
    """A write descriptor on ``path``, readable and writable by its owner only.

    Created with mode 0600 (``O_EXCL``: never through a planted symlink). An
    existing file (unless ``exclusive``) must be a regular file, not a
    symlink; it is chmod-ed to 0600 before being truncated. Either way the
    mode ends as 0600, whatever the umask or the file's old mode.
    """
    extra = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | extra, 0o600)
    except FileExistsError:
        if exclusive:
            raise
        # O_NONBLOCK: a FIFO planted at the path fails to open instead of hanging.
        fd = os.open(path, os.O_WRONLY | getattr(os, "O_NONBLOCK", 0) | extra)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise _fail(f"{path}: not a regular file") from None
            _chmod_private(fd, path)
            os.ftruncate(fd, 0)
        except BaseException:
            os.close(fd)
            raise
        return fd
    _chmod_private(fd, path)  # the umask may have cleared bits the owner needs to read
    return fd


def write_private_file(path: Path, text: str, *, exclusive: bool = False) -> None:
    """Write ``text`` to ``path`` with owner-only permissions (see ``_open_private``)."""
    with os.fdopen(_open_private(path, exclusive=exclusive), "w", encoding="utf-8") as file:
        file.write(text)


def _static_tokens(args: argparse.Namespace, *, generate: bool) -> list[str]:
    if args.token_file is not None:
        tokens = [
            line.strip()
            for line in args.token_file.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
        if not tokens:
            raise _fail(f"no token in {args.token_file}")
        return tokens
    if args.token:
        return list(args.token)
    if not generate:
        return []  # signed tokens only
    token = generate_token()
    _print(f"token: {token}")
    return [token]


def _policy(args: argparse.Namespace) -> AccessPolicy:
    if args.no_auth:
        if args.signing_key_file is not None or args.write_token_file is not None:
            raise _fail("--no-auth cannot be combined with --signing-key-file/--write-token-file")
        print(
            "WARNING: --no-auth: any client that can reach this port may connect. "
            "Use it only for local testing.",
            file=sys.stderr,
            flush=True,
        )
        return AccessPolicy(require_auth=False, allowed_origins=args.allow_origin)
    signed = None if args.signing_key_file is None else _signed_tokens(args.signing_key_file)
    # A token is generated unless one is given, or signed tokens are the only
    # credentials wanted (no --write-token-file to hand one over).
    generate = signed is None or args.write_token_file is not None
    static = _static_tokens(args, generate=generate)
    if args.write_token_file is not None:
        try:
            write_private_file(args.write_token_file, static[0])
        except OSError as exc:
            raise _fail(f"cannot write {args.write_token_file}: {exc}") from None
    sources: list[TokenSource] = []
    if static:
        sources.append(StaticTokens(static))
    if signed is not None:
        sources.append(signed)
    return AccessPolicy(
        tokens=sources,
        allowed_origins=args.allow_origin,
        clock=time.time if signed is not None else None,
    )


def allowed_hosts(args: argparse.Namespace) -> Iterable[str] | Literal["auto"] | None:
    """The servers' ``allowed_hosts``: the flags' list, None for --any-host, else "auto"."""
    if args.any_host:
        return None
    if args.allow_host:
        return list(args.allow_host)
    return "auto"


def _host_options(args: argparse.Namespace) -> dict[str, Any]:
    """``allowed_hosts=`` for the server, left out when "auto" (the servers' default)."""
    hosts = allowed_hosts(args)
    return {} if hosts == "auto" else {"allowed_hosts": hosts}


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
        config=HubConfig(
            auth_timeout=args.auth_timeout,
            max_connections=args.max_connections,
            max_per_principal=args.max_per_principal,
            max_per_host=args.max_per_host,
        ),
        metrics=args.metrics,
        auth_message=args.auth_message,
        refusal=args.refusal,
        **_host_options(args),
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


def raise_descriptor_limit() -> int:
    """Raise the soft open-files limit to the hard one (servers hold one per
    client; the common soft default of 1024 is far below what a hub serves)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


GC_GEN0_THRESHOLD = 10_000


def tune_gc() -> None:
    """Garbage collection for a long-running server, once it has started.

    Everything alive now (modules, the server, the hub) lives as long as the
    process: ``gc.freeze`` takes it out of every later collection. Connections
    make no reference cycles, so young collections find little: running them
    every 10,000 allocations instead of 700 costs no memory worth counting
    and saves about 3% of the instructions of a handshake (callgrind).
    """
    gc.freeze()
    _gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


async def _serve(args: argparse.Namespace) -> None:
    from .adapters import EchoHandler, WebSocketServer

    raise_descriptor_limit()

    policy = _policy(args)
    limits = Limits(
        max_message_size=args.max_message_size,
        max_outbox_size=max(Limits().max_outbox_size, args.max_message_size + 16),
        handshake_timeout=args.handshake_timeout,
    )
    server: Any
    if args.echo and (args.auth_message or args.refusal != "http"):
        raise SystemExit("wshub: --auth-message and --refusal apply to the hub, not --echo")
    if args.echo:
        server = WebSocketServer(
            EchoHandler(policy),
            host=args.host,
            port=args.port,
            ssl=_server_ssl(args),
            limits=limits,
            compression=args.compression,
            **_host_options(args),
        )
    else:
        server = _hub_server(args, policy, limits)
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)
        tune_gc()
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


def _keygen(args: argparse.Namespace) -> None:
    key_id = args.key_id or f"k{secrets.token_hex(4)}"
    key = secrets.token_bytes(32)
    path: Path = args.out
    if not args.rotate:
        try:
            write_private_file(path, format_key_file([(key_id, key)]), exclusive=True)
        except FileExistsError:
            raise _fail(f"{path} exists (use --rotate to add a key to it)") from None
        except OSError as exc:
            raise _fail(f"cannot write {path}: {exc}") from None
        _print(f"key id: {key_id}")
        return
    try:
        old = parse_key_file(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise _fail(f"{path}: {exc}") from None
    if key_id in dict(old):
        raise _fail(f"{path}: key id {key_id!r} already present")
    # Write a sibling, then rename over the file: never a half-written key file.
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        write_private_file(temporary, format_key_file([(key_id, key), *old]), exclusive=True)
    except OSError as exc:
        raise _fail(f"cannot write {temporary}: {exc}") from None
    try:
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)  # ours: created with O_EXCL above
        raise _fail(f"cannot replace {path}: {exc}") from None
    _print(f"key id: {key_id}")


def _mint(args: argparse.Namespace) -> None:
    tokens = _signed_tokens(args.key_file, args.key_id)
    try:
        token = tokens.mint(args.principal, args.scope, ttl=args.ttl, now=time.time())
    except ValueError as exc:
        raise _fail(str(exc)) from None
    _print(token)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s %(message)s")
    from .adapters import ConnectionClosed, HandshakeError

    if args.command == "token":
        if args.token_command == "keygen":
            _keygen(args)
        else:
            _mint(args)
        return 0
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
