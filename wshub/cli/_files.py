"""Secrets on disk: a fresh token, and files only their owner can read."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from ._common import fail

__all__ = ["generate_token", "write_private_file"]


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
                raise fail(f"{path}: not a regular file") from None
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
