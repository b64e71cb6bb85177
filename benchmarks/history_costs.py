"""What history costs the core: memory per kept message, and subscribe without ``since``.

    python benchmarks/history_costs.py [--entries 100000] [--size 100] [--rounds 7]
                                       [--before REV]

Memory: a ``Hub`` keeps ``--entries`` messages of ``--size`` payload bytes
(on 1 and on 1,000 topics, nobody subscribed); ``tracemalloc`` measures what
the hub holds beyond the envelope bytes themselves (``history_bytes``).

Subscribe: the core's subscribe path (``receive_text`` of a subscribe with an
``id`` and of the matching unsubscribe, a connection that accepts every
message) timed in this checkout's core and in the core of git revision
``--before`` (default: the last commit before history), loaded side by side
in one process from ``git show``; rounds interleave the two and the best of
each is reported. Timings on a shared machine move; ``--instructions`` also
counts the instructions of one subscribe+unsubscribe under ``valgrind
--tool=callgrind`` (the difference between two loop lengths, so start-up
cancels out), which does not. A tool, not a test: nothing asserts on time.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BEFORE = "7414bde"  # core/hub.py split; history came in the next commit to core/


class Sink:
    """A connection the hub can queue to: open, never full, forgets what it gets."""

    def __init__(self, core: ModuleType) -> None:
        self.state = core.State.OPEN
        self.limits = core.Limits(max_outbox_size=1 << 30)
        self.outbox_size = 0
        self.deflate = None

    def send_prepared(self, _message: object) -> bool:
        return True

    def close(self, code: int = 1000, reason: str = "") -> None:
        pass


def load_core(rev: str | None) -> ModuleType:
    """This checkout's ``wshub.core``, or ``core/`` at ``rev`` as a package of its own."""
    if rev is None:
        return importlib.import_module("wshub.core")
    folder = Path(tempfile.mkdtemp()) / f"core_{rev}"
    folder.mkdir()
    names = subprocess.run(
        ["git", "ls-tree", "--name-only", rev, "core/"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    for name in names:
        text = subprocess.run(
            ["git", "show", f"{rev}:{name}"], cwd=ROOT, check=True, capture_output=True
        ).stdout
        (folder / Path(name).name).write_bytes(text)
    sys.path.insert(0, str(folder.parent))
    return importlib.import_module(folder.name)


def memory(core: ModuleType, entries: int, size: int, topics: int) -> dict[str, float]:
    clock = iter(range(10**9)).__next__
    hub = core.Hub(
        clock=lambda: float(clock()),
        wall_clock=lambda: 1.7e9,
        config=core.HubConfig(
            history_size=entries,
            history_topic_bytes=1 << 30,
            max_history_bytes=1 << 34,
        ),
    )
    payload = "x" * size
    names = [f"topic-{i}" for i in range(topics)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(entries):
        hub.publish(names[i % topics], payload)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    stats = hub.stats()
    assert stats.history_entries == entries
    return {
        "entries": entries,
        "topics": topics,
        "envelope_bytes_per_entry": stats.history_bytes / entries,
        "held_per_entry": held / entries,
        "beyond_envelope_per_entry": (held - stats.history_bytes) / entries,
    }


def subscribe_loop(core: ModuleType, count: int) -> float:
    hub = core.Hub(clock=time.monotonic, wall_clock=time.time)
    hub.configure_topic("t")
    principal = core.Principal("alice")
    hub.add("c1", Sink(core), principal=principal)
    sub = '{"message_type":"subscribe","topic":"t","id":1}'
    unsub = '{"message_type":"unsubscribe","topic":"t","id":2}'
    receive = hub.receive_text
    start = time.perf_counter()
    for _ in range(count):
        receive("c1", sub)
        receive("c1", unsub)
    return (time.perf_counter() - start) / count


def instructions(rev: str, count: int) -> float:
    """Callgrind instructions per subscribe+unsubscribe of the core at ``rev`` ("now": this one)."""

    def total(n: int) -> int:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "callgrind.out"
            subprocess.run(
                [
                    "valgrind",
                    "--tool=callgrind",
                    f"--callgrind-out-file={out}",
                    sys.executable,
                    __file__,
                    "--loop-only",
                    rev,
                    "--count",
                    str(n),
                ],
                check=True,
                capture_output=True,
            )
            found = re.search(r"^(?:summary|totals):\s+(\d+)", out.read_text(), re.MULTILINE)
            assert found is not None
            return int(found.group(1))

    return (total(2 * count) - total(count)) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--before", default=BEFORE)
    parser.add_argument("--instructions", action="store_true", help="count under callgrind")
    parser.add_argument("--loop-only", metavar="REV", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loop_only:
        core = load_core(None if args.loop_only == "now" else args.loop_only)
        subscribe_loop(core, args.count)
        return
    now = load_core(None)
    for topics in (1, 1000):
        figures = memory(now, args.entries, args.size, topics)
        print(
            f"memory, {figures['entries']} entries on {topics} topic(s): envelope "
            f"{figures['envelope_bytes_per_entry']:.0f} B, held {figures['held_per_entry']:.1f} "
            f"B, beyond the envelope bytes {figures['beyond_envelope_per_entry']:.1f} B per entry"
        )
    before = load_core(args.before)
    best: dict[str, float] = {"before": float("inf"), "now": float("inf")}
    cores: dict[str, Any] = {"before": before, "now": now}
    for _ in range(args.rounds):
        for name, core in cores.items():
            best[name] = min(best[name], subscribe_loop(core, args.count))
    print(
        f"subscribe+unsubscribe without since, best of {args.rounds} x {args.count}: "
        f"before ({args.before}) {best['before'] * 1e6:.2f} us, now {best['now'] * 1e6:.2f} us "
        f"({best['now'] / best['before']:.2f}x)"
    )
    if args.instructions and shutil.which("valgrind"):
        counts = {rev: instructions(rev, 2000) for rev in (args.before, "now")}
        print(
            f"instructions per subscribe+unsubscribe without since (callgrind): before "
            f"({args.before}) {counts[args.before]:.0f}, now {counts['now']:.0f} "
            f"({counts['now'] / counts[args.before]:.3f}x)"
        )


if __name__ == "__main__":
    main()
