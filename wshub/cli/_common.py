"""Helpers every ``wshub`` subcommand shares: argument types, output, errors, TLS."""

from __future__ import annotations

import argparse
import re
import ssl
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

from ..core.auth import SUBPROTOCOL

if TYPE_CHECKING:
    from ..adapters import ClientSession

__all__ = [
    "client_session",
    "client_ssl",
    "fail",
    "key_id",
    "positive_float",
    "positive_int",
    "say",
]


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


def fail(message: str) -> SystemExit:
    """The exit of an expected failure: ``wshub: <message>`` on stderr, status 1."""
    return SystemExit(f"wshub: {message}")


def client_ssl(url: str, insecure: bool) -> ssl.SSLContext | None:
    if not url.startswith("wss://"):
        return None
    context = ssl.create_default_context()
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def client_session(args: argparse.Namespace) -> AbstractAsyncContextManager[ClientSession]:
    """A client for the ``connect`` and ``publish`` commands: token, wshub.v1, TLS."""
    from ..adapters import connect

    return connect(
        args.url,
        token=args.token,
        subprotocols=(SUBPROTOCOL,),
        ssl=client_ssl(args.url, args.insecure),
    )
