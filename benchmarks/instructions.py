"""Instructions a server executes per handshake or per echo round trip (callgrind).

    python benchmarks/instructions.py [--server NAME ...] [--scenario handshakes|echo]
                                      [--seconds S] [--wshub-src DIR]

Timings on a shared machine move by 10% from run to run; instruction counts
do not (callgrind counts every user-space instruction the server runs,
whatever else the machine does). To tell whether a change to a hot path
helped, compare this figure before and after; ``run.py`` then gives the
speed. Kernel work (system calls) is not counted: about a quarter of a
wshub handshake's time here, and it differs between servers (the floor's
asyncio transports spend twice wshub's), so compare servers with ``run.py``.

Each server runs under ``valgrind --tool=callgrind`` (about 50 times slower),
gets a short warm-up (lazily imported code), has its counters zeroed, then
serves the load generator for ``--seconds``; the count is dumped and divided
by the handshakes (or round trips) the generator completed. Expect a minute
per server.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.build import build_loadgen
from benchmarks.procs import SERVERS, BenchError, Pinning, Server, loadgen_command, run_loadgen

HERE = Path(__file__).resolve().parent
_TOTALS = re.compile(r"^(?:summary|totals):\s+(\d+)", re.MULTILINE)


@dataclass(frozen=True)
class UnderCallgrind(Pinning):
    """Pinning that also runs the server under callgrind, dumping into ``out``."""

    out: str = ""

    def wrap(self, command: list[str], cpu: int | None) -> list[str]:
        if cpu == self.server and self.out:
            command = [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={self.out}/callgrind.%p",
                *command,
            ]
        return super().wrap(command, cpu)


def count(server_name: str, scenario: str, seconds: float, wshub_src: Path) -> tuple[int, int]:
    """(instructions, operations) of one measured run."""
    binary = build_loadgen()
    with tempfile.TemporaryDirectory(prefix="callgrind-") as out:
        pinning = UnderCallgrind(out=out)
        server = Server(
            server_name,
            echo=scenario == "echo",
            tokens=["instructions-token"],
            pinning=pinning,
            wshub_src=wshub_src,
        )
        server.start(timeout=300)
        try:
            options: dict[str, object] = {"token": ["instructions-token"], "warmup": 0}
            if scenario == "handshakes":
                options.update(conns=10, subprotocol=True, timeout=30)
            else:
                options.update(conns=10, inflight=1, size=64, timeout=30)
            warm = loadgen_command(binary, scenario, server, {**options, "duration": 2}, pinning)
            run_loadgen(warm, timeout=120)
            _control("-z", server.pid)
            command = loadgen_command(
                binary, scenario, server, {**options, "duration": seconds}, pinning
            )
            result = run_loadgen(command, timeout=seconds + 120)
            _control("-d", server.pid)
            dump = Path(out) / f"callgrind.{server.pid}.1"
            match = _TOTALS.search(dump.read_text(errors="replace"))
            if match is None:
                raise BenchError(f"no instruction total in {dump.name}")
        finally:
            server.stop()
    done = int(result["handshakes" if scenario == "handshakes" else "round_trips"])
    if done == 0:
        raise BenchError(f"{server_name}: nothing completed")
    return int(match.group(1)), done


def _control(flag: str, pid: int) -> None:
    subprocess.run(["callgrind_control", flag, str(pid)], capture_output=True, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--server", action="append", choices=SERVERS)
    parser.add_argument("--scenario", choices=("handshakes", "echo"), default="handshakes")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--wshub-src", type=Path, default=HERE.parent)
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 1
    unit = "handshake" if args.scenario == "handshakes" else "round trip"
    for name in args.server or SERVERS:
        instructions, done = count(name, args.scenario, args.seconds, args.wshub_src)
        print(f"{name:<11} {instructions / done / 1000:8.1f}k instructions per {unit}  ({done})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
