"""Expected failures as one line and an exit code, never a traceback.

anyio wraps what a task group's tasks raise in ``ExceptionGroup``s; a group
whose every leaf is an expected failure (cancellations aside) is reported by
its first leaf. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import ssl
from collections.abc import Iterator

from ..adapters.errors import ConnectionClosed, HandshakeError, HandshakeRejected
from ._common import CliError, ExitCode, closed_line

__all__ = ["describe", "os_reason"]

Outcome = tuple[ExitCode, str | None]


def describe(exc: BaseException, args: argparse.Namespace) -> Outcome | None:
    """The exit code and line (None: no line) for an expected failure, else None."""
    if isinstance(exc, BaseExceptionGroup):
        outcomes = [describe(leaf, args) for leaf in _leaves(exc) if not _is_cancellation(leaf)]
        if outcomes and all(outcome is not None for outcome in outcomes):
            return outcomes[0]
        return None
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED, None
    if isinstance(exc, CliError):
        return exc.code, exc.message
    if isinstance(exc, HandshakeRejected):
        return ExitCode.FAILED, _rejection(exc)
    if isinstance(exc, ConnectionClosed):
        return ExitCode.FAILED, closed_line(exc.code, exc.reason)
    if isinstance(exc, HandshakeError):
        return ExitCode.UNAVAILABLE, str(exc)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ExitCode.UNAVAILABLE, (
            f"TLS certificate verification failed for {_where(args)}: {exc.verify_message}; "
            "trust the server's certificate with --cafile FILE "
            "(or skip verification with --insecure, for testing only)"
        )
    if isinstance(exc, TimeoutError):  # before OSError: TimeoutError is one
        return ExitCode.TIMEOUT, f"timed out connecting to {_where(args)}"
    if isinstance(exc, ssl.SSLError):
        return ExitCode.UNAVAILABLE, f"TLS failed with {_where(args)}: {exc.reason or exc}"
    if isinstance(exc, OSError):
        verb = "cannot listen on" if args.command == "serve" else "cannot connect to"
        return ExitCode.UNAVAILABLE, f"{verb} {_where(args)}: {os_reason(exc)}"
    return None


def os_reason(exc: OSError) -> str:
    """The most specific reason: anyio raises ``OSError("All connection attempts
    failed")`` from the attempt's own error, or from a group of them."""
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup):
        cause = next((leaf for leaf in _leaves(cause) if isinstance(leaf, OSError)), None)
    if isinstance(cause, OSError):
        exc = cause
    if exc.errno is not None and exc.errno > 0:
        return os.strerror(exc.errno).lower()
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]


def _rejection(exc: HandshakeRejected) -> str:
    line = f"server rejected the WebSocket handshake with HTTP {exc.status}"
    body = exc.body.decode("utf-8", "replace").strip()
    if body and len(body) <= 200 and body.isprintable():
        line += f": {body}"
    if exc.status == 401:
        line += " (pass the hub's token with --token or --token-file)"
    return line


def _where(args: argparse.Namespace) -> str:
    if args.command == "serve":
        host = f"[{args.host}]" if ":" in args.host else args.host
        return f"{host}:{args.port}"
    return str(args.url)


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


def _is_cancellation(exc: BaseException) -> bool:
    # asyncio.CancelledError or trio.Cancelled, without importing either backend.
    return type(exc).__name__ in ("CancelledError", "Cancelled")
