"""What mounting the hub in an ASGI server costs: wshub's own server beside
``HubApp`` under uvicorn, on the echo and fan-out scenarios.

    python benchmarks/mounting.py [--rounds 3] [--duration 2] [--echo-conns 50]
                                  [--subscribers 200] [--no-pin] [--json PATH]

Both servers are driven by the compiled load generator of ``run.py`` with the
same scenarios (``scenarios.run_echo`` / ``run_fanout``), at sizes small
enough for a shared machine. ``wshub`` is ``wshub serve`` (hub mode for
fan-out, ``--echo`` for echo); ``wshub-uvicorn`` is
``servers/wshub_uvicorn.py`` (the hub as ``HubApp`` under uvicorn for
fan-out, a minimal ASGI echo app with the same ``AccessPolicy`` for echo).
Rounds interleave the two servers, the order rotating; the figure is the
median over rounds of each server, and the ratio uvicorn / native taken
within each round. Both hubs run with ``--message-rate 1000000``: the
default (1,000 messages per second per connection) is a limit on clients,
and the one publisher of fan-out outruns it on a quiet machine (50
subscribers at 240,000 deliveries/s are 4,800 publishes/s), which would
measure the rate limit instead of the fan-out.
Prints the load average before and after: on a busy machine the figures are
noisy. A tool, not a test: nothing asserts on time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.build import build_loadgen
from benchmarks.procs import BenchError, Pinning, Server
from benchmarks.scenarios import FULL, SCENARIOS, Context, Settings, clients_for

ROOT = Path(__file__).resolve().parent.parent
SERVERS = ("wshub", "wshub-uvicorn")
MEASURED = ("echo", "fanout")


#: Per connection per second, for both hubs: far above what one publisher sends.
MESSAGE_RATE = 1_000_000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=2.0, help="measured seconds")
    parser.add_argument("--echo-conns", type=int, default=50)
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--no-pin", action="store_true", help="do not pin to cores 0 and 1")
    parser.add_argument("--json", type=Path, help="write every measurement here too")
    return parser.parse_args(argv)


def run_one(
    scenario: str, server_name: str, settings: Settings, pinning: Pinning, binary: Path
) -> tuple[float, dict[str, Any]]:
    spec = SCENARIOS[scenario]
    tokens_needed, hosts = clients_for(spec.conns(settings))
    stamp = int(time.time() * 1000) % 100_000
    tokens = [f"mount-{i:03d}-{stamp}" for i in range(tokens_needed)]
    try:
        with Server(
            server_name,
            echo=spec.echo_mode,
            tokens=tokens,
            pinning=pinning,
            wshub_src=ROOT,
            extra_args=("--message-rate", str(MESSAGE_RATE)),
        ) as server:
            m = spec.run(Context(binary, server, settings, tokens, hosts, pinning))
            if not server.alive():
                m.problems.append(f"server exited: {server.log_tail(5)}")
    except BenchError as exc:
        return math.nan, {"problems": [str(exc)]}
    value = math.nan if m.problems else m.value
    return value, {"problems": m.problems, "p50_us": m.details.get("p50_us")}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = replace(
        FULL,
        warmup=0.5,
        duration=args.duration,
        echo_conns=args.echo_conns,
        fanout_subscribers=args.subscribers,
    )
    pinning = Pinning(None, None) if args.no_pin else Pinning()
    binary = build_loadgen()
    load_before = os.getloadavg()
    print(
        f"# echo: {settings.echo_conns} connections, 1 message of {settings.echo_size} B "
        f"in flight each; fan-out: {settings.fanout_subscribers} subscribers, window "
        f"{settings.fanout_window}; {settings.duration:g} s measured; {args.rounds} rounds; "
        f"load average {load_before[0]:.2f}",
        flush=True,
    )
    values: dict[tuple[str, str], list[float]] = {}
    ratios: dict[str, list[float]] = {s: [] for s in MEASURED}
    records: list[dict[str, Any]] = []
    failed = False
    for rnd in range(args.rounds):
        for scenario in MEASURED:
            order = SERVERS[rnd % 2 :] + SERVERS[: rnd % 2]
            got: dict[str, float] = {}
            for server in order:
                value, details = run_one(scenario, server, settings, pinning, binary)
                got[server] = value
                values.setdefault((scenario, server), []).append(value)
                records.append(
                    {
                        "round": rnd + 1,
                        "scenario": scenario,
                        "server": server,
                        "value": None if math.isnan(value) else value,
                        **details,
                    }
                )
                note = f"  PROBLEM: {'; '.join(details['problems'])}" if details["problems"] else ""
                failed = failed or bool(details["problems"])
                print(
                    f"round {rnd + 1} {scenario:<7} {server:<14} {value:10.1f}/s{note}", flush=True
                )
            if not any(math.isnan(v) for v in got.values()):
                ratios[scenario].append(got["wshub-uvicorn"] / got["wshub"])
    load_after = os.getloadavg()
    print()
    print(
        "| scenario | wshub serve (median) | HubApp under uvicorn (median) | uvicorn / native "
        "(median of per-round ratios) | per round |"
    )
    print("|---|---|---|---|---|")
    for scenario in MEASURED:
        native = [v for v in values.get((scenario, "wshub"), []) if not math.isnan(v)]
        mounted = [v for v in values.get((scenario, "wshub-uvicorn"), []) if not math.isnan(v)]
        per_round = " ".join(f"{r:.2f}" for r in ratios[scenario])
        ratio = statistics.median(ratios[scenario]) if ratios[scenario] else math.nan
        print(
            f"| {scenario} | {statistics.median(native) if native else math.nan:,.0f}/s "
            f"| {statistics.median(mounted) if mounted else math.nan:,.0f}/s "
            f"| {ratio:.2f} | {per_round} |"
        )
    print(f"\nload average {load_before[0]:.2f} before, {load_after[0]:.2f} after", flush=True)
    if args.json:
        document = {
            "settings": settings.__dict__,
            "pinned": not args.no_pin,
            "loadavg": [load_before[0], load_after[0]],
            "records": records,
        }
        args.json.write_text(json.dumps(document, indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
