"""``wshub replay FILE``: feed a recording (``wshub serve --record``) through the core.

Prints each connection's inputs, the events the core reported and the bytes
it wrote, and checks those bytes against the recording: exit 0 when every
connection replays byte for byte, 1 at the first difference.
``--corpus DIR`` also writes each connection's received bytes as an input of
``fuzz/fuzz_server_bytes.py``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
from pathlib import Path
from typing import Any

from ..adapters.replay import RecordingError, ReplayDiverged, Step, corpus_input, read_recording
from ..adapters.replay import replay as replay_entries
from ._common import fail, say

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    replay = sub.add_parser(
        "replay",
        help="replay a recording made with 'wshub serve --record' through the core",
        description="Feed every recorded connection of FILE to a fresh core, print what it "
        "received, the events it reported and the bytes it wrote, and check those bytes "
        "against the recording (exit 1 at the first difference).",
    )
    replay.add_argument("file", type=Path, metavar="FILE", help="a wshub-*.jsonl recording")
    replay.add_argument(
        "--conn", type=int, action="append", metavar="N", help="only connection N (repeatable)"
    )
    replay.add_argument(
        "--quiet", action="store_true", help="print one line per connection, not every step"
    )
    replay.add_argument(
        "--corpus",
        type=Path,
        metavar="DIR",
        help="also write each connection's received bytes as a fuzz_server_bytes input",
    )


def _describe(entry: dict[str, Any]) -> str:
    op = entry["op"]
    if op in ("data", "out"):
        data = base64.b64decode(entry["b"])
        arrow = "<-" if op == "data" else "->"
        return f"{arrow} {len(data)} bytes {data[:60]!r}{'...' if len(data) > 60 else ''}"
    details = {k: v for k, v in entry.items() if k not in ("c", "op")}
    if op in ("prepared", "binary") and isinstance(details.get("data"), str):
        data = base64.b64decode(details["data"])
        shown = data.decode("utf-8", "replace") if entry.get("text") else data
        details["data"] = shown if len(data) <= 200 else f"{len(data)} bytes"
    return f"{op} {details}" if details else op


def _print_step(step: Step) -> None:
    say(f"  {_describe(step.entry)}")
    for event in step.events:
        say(f"     event {event!r}")


def run(args: argparse.Namespace) -> int:
    try:
        connections = read_recording(args.file)
    except OSError as exc:
        raise fail(f"cannot read {args.file}: {exc.strerror or exc}") from None
    except RecordingError as exc:
        raise fail(str(exc)) from None
    wanted = set(args.conn or connections)
    missing = wanted - set(connections)
    if missing:
        raise fail(f"no connection {min(missing)} in {args.file}")
    if args.corpus is not None:
        args.corpus.mkdir(parents=True, exist_ok=True)
    for number in sorted(wanted):
        entries = connections[number]
        steps = 0
        try:
            if not args.quiet:
                say(f"connection {number}: {_describe(entries[0])}")
            for step in replay_entries(entries):
                steps += 1
                if not args.quiet:
                    _print_step(step)
        except ReplayDiverged as exc:
            raise fail(f"connection {number} diverged after {steps} steps: {exc}") from None
        except RecordingError as exc:
            raise fail(f"connection {number}: {exc}") from None
        say(f"connection {number}: {steps} steps replayed, output identical")
        if args.corpus is not None:
            data = corpus_input(entries)
            name = hashlib.sha1(data).hexdigest()  # a file name, as libFuzzer names its inputs
            (args.corpus / name).write_bytes(data)
    return 0
