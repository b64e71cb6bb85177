"""Helpers every ``wshub`` subcommand shares: argument types, output, exit codes,
and the client side of ``connect`` and ``publish`` (token, TLS)."""

from __future__ import annotations

import argparse
import re
import ssl
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import anyio
from anyio.from_thread import BlockingPortal
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..core.auth import SUBPROTOCOL
from ..tokenfile import read_token_file

if TYPE_CHECKING:
    from ..adapters import ClientSession

__all__ = [
    "CliError",
    "ExitCode",
    "add_client_arguments",
    "check_url",
    "client_session",
    "client_ssl",
    "client_token",
    "closed_line",
    "fail",
    "key_id",
    "positive_float",
    "positive_int",
    "say",
    "stdin_lines",
    "tokens_from_file",
]


class ExitCode(IntEnum):
    """The exit status of ``wshub``: one per kind of outcome, so scripts can react."""

    OK = 0
    FAILED = 1  # refused or failed: HTTP 4xx, publish not ok, abnormal close, bad file
    USAGE = 2  # invalid command line (argparse's own status)
    UNAVAILABLE = 3  # cannot listen or connect: port busy, refused, DNS, TLS
    TIMEOUT = 4  # no answer in time
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)


class CliError(Exception):
    """An expected failure: ``main`` prints ``wshub: <message>`` and exits with ``code``."""

    def __init__(self, message: str, code: ExitCode = ExitCode.FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def fail(message: str, code: ExitCode = ExitCode.FAILED) -> CliError:
    """``raise fail("...")``: the error ``main`` turns into one line and ``code``."""
    return CliError(message, code)


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def key_id(text: str) -> str:
    if not _KEY_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(f"key id must match [A-Za-z0-9_-]{{1,64}}, got {text!r}")
    return text


def say(line: str) -> None:
    """One line on stdout, flushed at once (scripts and tests wait for lines)."""
    print(line, flush=True)


def closed_line(code: int, reason: str) -> str:
    """How a connection ended, as the client commands report it."""
    return f"closed with {code}: {reason}" if reason else f"closed with {code}"


def tokens_from_file(path: Path) -> list[str]:
    """The tokens of a ``--token-file``, or a one-line error naming the file."""
    try:
        return read_token_file(path)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise fail(f"{path}: {reason}") from None


def add_client_arguments(parser: argparse.ArgumentParser) -> None:
    """``--token``/``--token-file``, ``--cafile`` and ``--insecure`` for the client commands."""
    credentials = parser.add_mutually_exclusive_group()
    credentials.add_argument("--token", help="bearer token (visible to other users in ps)")
    credentials.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help="read the bearer token from FILE (its first token line)",
    )
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument(
        "--cafile",
        type=Path,
        metavar="FILE",
        help="PEM certificate(s) to trust for wss://, e.g. a self-signed server's",
    )
    tls.add_argument("--insecure", action="store_true", help="skip TLS verification (testing only)")


def client_ssl(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The TLS context of ``--cafile``/``--insecure`` for a wss:// ``args.url`` (else None)."""
    if not args.url.startswith("wss://"):
        return None
    context = ssl.create_default_context()
    if args.cafile is not None:
        try:
            context.load_verify_locations(cafile=args.cafile)
        except (OSError, ssl.SSLError) as exc:
            raise fail(f"{args.cafile}: {exc.strerror or exc}") from None
    if args.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def check_url(url: str) -> None:
    """Refuse anything but a ws:// or wss:// URL as a usage error."""
    if urlsplit(url).scheme not in ("ws", "wss"):
        raise fail(f"expected a ws:// or wss:// URL, got {url!r}", ExitCode.USAGE)


def client_token(args: argparse.Namespace) -> str | None:
    """The bearer token of ``--token`` or ``--token-file`` (None: neither given)."""
    if args.token_file is not None:
        return tokens_from_file(args.token_file)[0]
    return args.token  # type: ignore[no-any-return]


def client_session(
    args: argparse.Namespace, *, open_timeout: float = 10.0
) -> AbstractAsyncContextManager[ClientSession]:
    """A client for the ``connect`` and ``publish`` commands: token, wshub.v1, TLS."""
    from ..adapters import connect

    check_url(args.url)
    return connect(
        args.url,
        token=client_token(args),
        subprotocols=(SUBPROTOCOL,),
        ssl=client_ssl(args),
        open_timeout=open_timeout,
    )


@asynccontextmanager
async def stdin_lines() -> AsyncIterator[MemoryObjectReceiveStream[str]]:
    """The lines of stdin, read by a daemon thread: a stdin nobody closes must
    not keep the process alive once the command is done (a worker thread
    blocked in ``readline`` would: the interpreter joins those at exit)."""
    send, receive = anyio.create_memory_object_stream[str](1)
    async with BlockingPortal() as portal:
        threading.Thread(target=_read_stdin, args=(portal, send), daemon=True).start()
        try:
            yield receive
        finally:
            receive.close()
            await portal.stop(cancel_remaining=True)


def _read_stdin(portal: BlockingPortal, send: MemoryObjectSendStream[str]) -> None:
    """Hand each stdin line to the loop; close the stream at the end of input."""
    try:
        for line in sys.stdin:
            portal.call(send.send, line)
        portal.call(send.aclose)
    except (RuntimeError, anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass  # the loop is done with stdin
