"""Tokens on disk, safely: generate one, hand it over in an owner-only file, read it back.

A desktop app's backend typically generates a token at each launch and
writes it where its frontend (same user) can read it; that file must never be
readable by other users, never be written through a symlink someone planted,
and never block on a FIFO. ``write_token_file`` does all of that; it is the
writer ``wshub serve --write-token-file`` uses::

    from wshub.tokenfile import generate_token, write_token_file

    token = generate_token()
    write_token_file(path, token)            # mode 0600, whatever the umask
    server = HubServer(AccessPolicy(tokens=StaticTokens([token])))
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path

__all__ = ["generate_token", "read_token_file", "write_private_file", "write_token_file"]


def generate_token() -> str:
    """A fresh 128-bit token, base64url without padding (22 characters)."""
    return secrets.token_urlsafe(16)


def write_token_file(path: str | os.PathLike[str], token: str) -> None:
    """Write ``token`` (no newline) to ``path``, readable and writable by its owner only.

    Replaces an existing regular file (its mode too); refuses symlinks and
    anything that is not a regular file with ``OSError``.
    """
    write_private_file(path, token)


def read_token_file(path: str | os.PathLike[str]) -> list[str]:
    """The tokens in ``path``: one per line; blank lines and ``#`` comments skipped.

    Raises ``OSError`` if the file cannot be read, ``ValueError`` if it holds
    no token or is not UTF-8.
    """
    text = Path(path).read_text(encoding="utf-8")
    tokens = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not tokens:
        raise ValueError("no token in the file")
    return tokens


def write_private_file(path: str | os.PathLike[str], text: str, *, exclusive: bool = False) -> None:
    """Write ``text`` to ``path`` with mode 0600, whatever the umask or the old mode.

    A new file is created with ``O_EXCL`` (never through a planted symlink).
    An existing one is replaced only if it is a regular file and not a
    symlink (``O_NOFOLLOW``; ``O_NONBLOCK`` so a planted FIFO fails instead of
    hanging); with ``exclusive=True`` an existing file raises
    ``FileExistsError`` instead. Other refusals raise ``OSError``.
    """
    with os.fdopen(_open_private(Path(path), exclusive=exclusive), "w", encoding="utf-8") as file:
        file.write(text)


def _chmod_private(fd: int, path: Path) -> None:
    if hasattr(os, "fchmod"):
        os.fchmod(fd, 0o600)
    else:  # pragma: no cover - Windows before 3.13: no fchmod, no POSIX modes either
        os.chmod(path, 0o600)


def _open_private(path: Path, *, exclusive: bool) -> int:
    extra = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | extra, 0o600)
    except FileExistsError:
        if exclusive:
            raise
        fd = os.open(path, os.O_WRONLY | getattr(os, "O_NONBLOCK", 0) | extra)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, "not a regular file", str(path))
            _chmod_private(fd, path)
            os.ftruncate(fd, 0)
        except BaseException:
            os.close(fd)
            raise
        return fd
    _chmod_private(fd, path)  # the umask may have cleared bits the owner needs to read
    return fd
