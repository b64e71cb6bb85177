"""What ``wshub serve`` builds from its flags before serving: the access policy,
the Host allowlist, TLS, and the process settings of a long-running server."""

from __future__ import annotations

import argparse
import gc
import ssl
import sys
import time
from collections.abc import Iterable
from typing import Any, Literal

from ..core.auth import AccessPolicy, StaticTokens, TokenSource, unsendable_token_chars
from ..tokenfile import generate_token, write_private_file
from ._common import ExitCode, fail, say, tokens_from_file
from .token import signed_tokens

__all__ = [
    "GC_GEN0_THRESHOLD",
    "access_policy",
    "allowed_hosts",
    "host_options",
    "raise_descriptor_limit",
    "server_ssl",
    "tune_gc",
]


def _static_tokens(args: argparse.Namespace, *, generate: bool) -> list[str]:
    if args.token_file is not None:
        return _browser_sendable(tokens_from_file(args.token_file), args)
    if args.token:
        return _browser_sendable(list(args.token), args)
    if not generate:
        return []  # signed tokens only
    token = generate_token()
    say(f"token: {token}")
    args.generated_token = token
    return [token]


def _browser_sendable(tokens: list[str], args: argparse.Namespace) -> list[str]:
    """Refuse tokens a browser cannot send as ``wshub.bearer.<token>``, unless
    they travel in a first ``auth`` message (``--auth-message``)."""
    if not getattr(args, "auth_message", False):
        for number, token in enumerate(tokens, 1):
            bad = unsendable_token_chars(token)
            if bad:
                raise fail(
                    f"token {number} has characters a browser cannot send in a subprotocol "
                    f"({bad!r}); use only A-Z a-z 0-9 and !#$%&'*+-.^_`|~ "
                    "(e.g. a generated token), or serve with --auth-message"
                )
    return tokens


def access_policy(args: argparse.Namespace) -> AccessPolicy:
    """Who may connect: the given, generated or signed tokens, or anyone (``--no-auth``)."""
    if args.no_auth:
        if args.signing_key_file is not None or args.write_token_file is not None:
            raise fail("--no-auth cannot be combined with --signing-key-file/--write-token-file")
        print(
            "WARNING: --no-auth: any client that can reach this port may connect. "
            "Use it only for local testing.",
            file=sys.stderr,
            flush=True,
        )
        return AccessPolicy(require_auth=False, allowed_origins=args.allow_origin)
    signed = None if args.signing_key_file is None else signed_tokens(args.signing_key_file)
    # A token is generated unless one is given, or signed tokens are the only
    # credentials wanted (no --write-token-file to hand one over).
    generate = signed is None or args.write_token_file is not None
    static = _static_tokens(args, generate=generate)
    if args.write_token_file is not None:
        try:
            write_private_file(args.write_token_file, static[0])
        except OSError as exc:
            raise fail(f"cannot write {args.write_token_file}: {exc}") from None
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


def host_options(args: argparse.Namespace) -> dict[str, Any]:
    """``allowed_hosts=`` for the server, left out when "auto" (the servers' default)."""
    hosts = allowed_hosts(args)
    return {} if hosts == "auto" else {"allowed_hosts": hosts}


def server_ssl(args: argparse.Namespace) -> ssl.SSLContext | None:
    if args.tls_cert is None:
        if args.tls_key is not None:
            raise fail("--tls-key needs --tls-cert", ExitCode.USAGE)
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(args.tls_cert, args.tls_key)
    except (OSError, ssl.SSLError) as exc:
        files = args.tls_cert if args.tls_key is None else f"{args.tls_cert}, {args.tls_key}"
        raise fail(f"cannot load the TLS certificate ({files}): {exc.strerror or exc}") from None
    return context


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
