"""Shared plumbing of the atheris harnesses.

Each harness defines ``test_one_input(data: bytes)``, which must return for
every input; an exception is a crash. ``main`` runs it under atheris (with
the parsers instrumented for coverage), ``run_corpus`` replays files without
atheris, so CI and pytest check the seed corpora even where atheris is not
installed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from wshub.core import Closed, Event

Target = Callable[[bytes], None]

__all__ = ["Target", "check_one_closed", "chunked", "main", "run_corpus"]


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    """``data`` in pieces of ``size`` bytes (``size`` < 1 means all at once)."""
    if size < 1:
        yield data
        return
    for i in range(0, len(data), size):
        yield data[i : i + size]


def check_one_closed(events: list[Event]) -> None:
    """After EOF: exactly one Closed, and it is the last event."""
    closed = [e for e in events if isinstance(e, Closed)]
    if len(closed) != 1 or events[-1] is not closed[0]:
        raise AssertionError(f"expected exactly one final Closed, got {events!r}")


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
    import atheris

    # Everything is imported by now: instrument the loaded code (wshub,
    # wsproto, h11, zlib wrappers) for coverage feedback.
    atheris.instrument_all()
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()
