"""Shared plumbing of the atheris harnesses.

Each harness defines ``test_one_input(data: bytes)``, the whole body of one
fuzz run, which must return for every input; an exception is a crash.
``main`` runs it under atheris (with the parsers instrumented for coverage),
``run_corpus`` replays files without atheris, and tests/test_fuzz_properties.py
calls it from hypothesis, so the same checks run where atheris is not
installed.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

# Fuzz the wshub of this checkout, not whichever one is installed: an
# editable install may point at another worktree. (Imported before wshub by
# every harness.)
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

Target = Callable[[bytes], None]

__all__ = ["FakeClock", "Target", "chunked", "main", "run_corpus"]


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    """``data`` in pieces of ``size`` bytes (``size`` < 1 means all at once)."""
    if size < 1:
        yield data
        return
    for i in range(0, len(data), size):
        yield data[i : i + size]


class FakeClock:
    """A clock that moves only when told (monotonic or wall, as needed)."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def _files(paths: Iterable[str | Path]) -> Iterator[Path]:
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(p for p in path.iterdir() if p.is_file())
        else:
            yield path


def run_corpus(target: Target, paths: Iterable[str | Path]) -> int:
    """Run ``target`` on every file in ``paths`` (files or folders); return the count."""
    count = 0
    for path in _files(paths):
        target(path.read_bytes())
        count += 1
    return count


def main(target: Target) -> None:
    """``python fuzz_x.py --corpus PATH...`` replays; otherwise fuzz with atheris
    (libFuzzer options such as ``-max_total_time=60`` pass through)."""
    if len(sys.argv) > 1 and sys.argv[1] == "--corpus":
        print(f"{run_corpus(target, sys.argv[2:])} inputs ok")
        return
    import atheris  # type: ignore[import-untyped]

    # Everything is imported by now: instrument the loaded code (wshub,
    # wsproto, h11, zlib wrappers) for coverage feedback.
    atheris.instrument_all()
    # libFuzzer re-runs argv[0] through the shell for -jobs, -fork and
    # -minimize_crash: make it "python script.py", as the harnesses are not
    # executables of their own.
    argv0 = f"{shlex.quote(sys.executable)} {shlex.quote(str(Path(sys.argv[0]).resolve()))}"
    atheris.Setup([argv0, *sys.argv[1:]], target)
    atheris.Fuzz()
