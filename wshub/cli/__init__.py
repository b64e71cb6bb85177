"""The wshub command: run a hub or an echo server, talk to one, make tokens."""

# One module per command (serve, connect, publish, token), each with
# ``add_parser(sub)`` and ``run(args) -> exit status``; shared helpers in _common.
# --help text is plain (no reST markup): it is what users read in a terminal.

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from . import connect, publish, replay, serve, token
from ._common import ExitCode
from ._serve_setup import GC_GEN0_THRESHOLD, allowed_hosts, raise_descriptor_limit, tune_gc

__all__ = [
    "GC_GEN0_THRESHOLD",
    "ExitCode",
    "allowed_hosts",
    "build_parser",
    "main",
    "raise_descriptor_limit",
    "tune_gc",
]

_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "serve": serve.run,
    "connect": connect.run,
    "publish": publish.run,
    "token": token.run,
    "replay": replay.run,
}

_DESCRIPTION = """\
Run a WebSocket hub or an echo server, talk to one, make tokens, replay recordings.

'wshub serve' is secure by default: without --token/--token-file (or
--signing-key-file) it generates a 128-bit token and prints it
(--write-token-file also hands it to a frontend through an owner-only file);
--no-auth is an explicit, loudly warned opt-out. Ready is announced by one
flushed line 'listening on ws://HOST:PORT' so scripts can wait for it.

'wshub token keygen' writes a signing key file (owner-only; one
'<key id>:<base64url key>' per line, the first signs); 'wshub token mint'
prints a signed expiring token that 'wshub serve --signing-key-file' accepts.
"""

_EPILOG = """\
exit status: 0 success; 1 refused or failed (HTTP 4xx, publish not ok,
abnormal close, unreadable file); 2 invalid command line; 3 cannot listen or
connect (port busy, connection refused, DNS, TLS); 4 timed out; 130 interrupted.
Errors are one line on stderr, starting with 'wshub: '.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wshub",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
        default="WARNING",
        help="logging level (default WARNING)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve.add_parser(sub)
    connect.add_parser(sub)
    publish.add_parser(sub)
    token.add_parser(sub)
    replay.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s %(message)s")
    try:
        return _COMMANDS[args.command](args)
    except BaseException as exc:
        if isinstance(exc, SystemExit):
            raise
        from ._errors import describe

        outcome = describe(exc, args)
        if outcome is None:
            raise  # a bug: keep its traceback
        code, line = outcome
        if line is not None:
            print(f"wshub: {line}", file=sys.stderr, flush=True)
        return int(code)
