"""``wshub token keygen`` and ``wshub token mint``: signing key files and signed tokens.

A key file holds one ``<key id>:<base64url key>`` per line, readable by its
owner only; the first key signs, every key verifies (rotation).
"""

from __future__ import annotations

import argparse
import os
import secrets
import time
from pathlib import Path

from ..core.tokens import SignedTokens, format_key_file, parse_key_file
from ..tokenfile import write_private_file
from ._common import fail, key_id, positive_float, say

__all__ = ["add_parser", "run", "signed_tokens"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    keygen.add_argument("--key-id", type=key_id, help="id for the new key (default: random)")
    keygen.add_argument(
        "--rotate", action="store_true", help="prepend a new signing key to an existing file"
    )
    mint = token_sub.add_parser(
        "mint", help="print a signed token", description="Print a signed expiring token."
    )
    mint.add_argument("--key-file", type=Path, required=True, metavar="FILE", help="key file")
    mint.add_argument("--key-id", type=key_id, help="key to sign with (default: the first)")
    mint.add_argument("--principal", required=True, help="principal id the token stands for")
    mint.add_argument("--scope", action="append", default=[], help="scope granted (repeatable)")
    mint.add_argument(
        "--ttl",
        type=positive_float,
        default=3600.0,
        metavar="SECONDS",
        help="lifetime in seconds (default 3600)",
    )


def run(args: argparse.Namespace) -> int:
    if args.token_command == "keygen":
        _keygen(args)
    else:
        _mint(args)
    return 0


def signed_tokens(path: Path, signing_key_id: str | None = None) -> SignedTokens:
    """The key ring in ``path``; ``signing_key_id`` (if given) signs instead of the first key."""
    try:
        keys = parse_key_file(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise fail(f"{path}: {exc}") from None
    signing = signing_key_id if signing_key_id is not None else keys[0][0]
    if signing not in dict(keys):
        raise fail(f"{path}: no key with id {signing!r}")
    return SignedTokens(dict(keys), signing_key_id=signing)


def _keygen(args: argparse.Namespace) -> None:
    new_id = args.key_id or f"k{secrets.token_hex(4)}"
    key = secrets.token_bytes(32)
    path: Path = args.out
    if not args.rotate:
        try:
            write_private_file(path, format_key_file([(new_id, key)]), exclusive=True)
        except FileExistsError:
            raise fail(f"{path} exists (use --rotate to add a key to it)") from None
        except OSError as exc:
            raise fail(f"cannot write {path}: {exc}") from None
        say(f"key id: {new_id}")
        return
    try:
        old = parse_key_file(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise fail(f"{path}: {exc}") from None
    if new_id in dict(old):
        raise fail(f"{path}: key id {new_id!r} already present")
    # Write a sibling, then rename over the file: never a half-written key file.
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        write_private_file(temporary, format_key_file([(new_id, key), *old]), exclusive=True)
    except OSError as exc:
        raise fail(f"cannot write {temporary}: {exc}") from None
    try:
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)  # ours: created with O_EXCL above
        raise fail(f"cannot replace {path}: {exc}") from None
    say(f"key id: {new_id}")


def _mint(args: argparse.Namespace) -> None:
    tokens = signed_tokens(args.key_file, args.key_id)
    try:
        token = tokens.mint(args.principal, args.scope, ttl=args.ttl, now=time.time())
    except ValueError as exc:
        raise fail(str(exc)) from None
    say(token)
