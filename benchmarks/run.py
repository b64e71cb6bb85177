"""Run the benchmark suite: wshub, websockets and the floor, side by side.

    python benchmarks/run.py [--quick] [--scenario NAME ...] [--server NAME ...]
                             [--rounds N] [--duration S] [--inflight K] [--window W]
                             [--json PATH] [--no-pin] [--busy-poll] [--wshub-src DIR]

Rounds interleave the servers (each round runs every scenario on every
server, the server order rotating), so drift on the machine hits all of them.
The connections scenario measures a capacity, not a speed: first round only.
Prints the tables; a complete run writes ``benchmarks/results/<date>.json``
and ``latest.json`` (``--quick`` or a subset of scenarios or servers writes
only to ``--json``). Exit status 1 when
a scenario failed to run on some server (not for ratios below a target).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # run as a script: make ``benchmarks`` importable as a package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.build import build_loadgen
from benchmarks.procs import (
    EXTRA_SERVERS,
    SERVERS,
    BenchError,
    Pinning,
    Server,
    nofile_hard_limit,
    wshub_location,
)
from benchmarks.report import Record, detail_table, jsonable, machine, ratio_table, summarize
from benchmarks.scenarios import FULL, QUICK, SCENARIOS, Context, Settings, clients_for

HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a ~10 s smoke run, tiny counts")
    parser.add_argument(
        "--scenario", action="append", choices=list(SCENARIOS), help="repeatable; default all"
    )
    parser.add_argument(
        "--server",
        action="append",
        choices=SERVERS + EXTRA_SERVERS,
        help=f"repeatable; default {', '.join(SERVERS)}",
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3, quick 1)")
    parser.add_argument("--duration", type=float, help="measured seconds per timed scenario")
    parser.add_argument("--inflight", type=int, help="echo: messages in flight per connection")
    parser.add_argument("--window", type=int, help="fan-out: messages outstanding (default 8)")
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to cores 0 and 1")
    parser.add_argument(
        "--busy-poll",
        action="store_true",
        help="the generator spins instead of sleeping in epoll_wait (no wakeups to pay)",
    )
    parser.add_argument(
        "--wshub-src",
        type=Path,
        default=HERE.parent,
        help="source tree whose wshub is measured (default: this repository)",
    )
    return parser.parse_args(argv)


def run_one(
    scenario_name: str, server_name: str, settings: Settings, args: argparse.Namespace, binary: Path
) -> tuple[float, list[str], dict[str, Any]]:
    scenario = SCENARIOS[scenario_name]
    tokens_needed, hosts = clients_for(scenario.conns(settings))
    tokens = [f"bench-{i:03d}-{int(time.time() * 1000) % 100_000}" for i in range(tokens_needed)]
    pinning = Pinning(None, None) if args.no_pin else Pinning()
    try:
        with Server(
            server_name,
            echo=scenario.echo_mode,
            tokens=tokens,
            pinning=pinning,
            wshub_src=args.wshub_src.resolve(),
            ping_interval=settings.idle_ping_interval if scenario.short_keepalive else None,
        ) as server:
            ctx = Context(binary, server, settings, tokens, hosts, pinning, args.busy_poll)
            m = scenario.run(ctx)
            if not server.alive():
                m.problems.append(f"server exited: {server.log_tail(5)}")
            return m.value, m.problems, m.details
    except BenchError as exc:
        return math.nan, [str(exc)], {}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.wshub_src / "wshub").is_dir():
        print(f"benchmarks: no wshub package in {args.wshub_src}", file=sys.stderr)
        return 2
    settings = QUICK if args.quick else FULL
    if args.duration is not None:
        settings = replace(settings, duration=args.duration)
    if args.inflight is not None:
        settings = replace(settings, echo_inflight=args.inflight)
    if args.window is not None:
        settings = replace(settings, fanout_window=args.window)
    rounds = args.rounds or (1 if args.quick else 3)
    scenarios = args.scenario or list(SCENARIOS)
    servers = args.server or list(SERVERS)
    try:
        binary = build_loadgen()
    except RuntimeError as exc:
        print(f"benchmarks: {exc}", file=sys.stderr)
        return 1
    info = machine(args.wshub_src.resolve())
    info["nofile_hard_limit"] = nofile_hard_limit()
    info["wshub_module"] = wshub_location(args.wshub_src.resolve())
    info["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
    print(
        f"# {info['cpu']}, {info['cores']} cores, Linux {info['kernel']}, "
        f"Python {info['python']}, websockets {info['websockets']}, "
        f"wshub {info['wshub_commit']} ({info['wshub_module']}), "
        f"RLIMIT_NOFILE hard {info['nofile_hard_limit']}, load average {info['loadavg_start']}",
        flush=True,
    )
    started = time.monotonic()
    records: list[Record] = []
    for rnd in range(rounds):
        order = servers[rnd % len(servers) :] + servers[: rnd % len(servers)]
        for scenario in scenarios:
            if rnd > 0 and not SCENARIOS[scenario].every_round:
                continue
            for server in order:
                began = time.monotonic()
                value, problems, details = run_one(scenario, server, settings, args, binary)
                details["elapsed_s"] = round(time.monotonic() - began, 1)
                records.append(Record(rnd + 1, scenario, server, value, problems, details))
                note = f"  PROBLEM: {'; '.join(problems)}" if problems else ""
                print(
                    f"round {rnd + 1} {scenario:<11} {server:<10} {value:12.1f}{note}",
                    flush=True,
                )
    summary = summarize(records)
    print()
    print(ratio_table(summary))
    print()
    print(detail_table(summary))
    elapsed = time.monotonic() - started
    info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    busy = max(info["loadavg_start"][0], info["loadavg_end"][0]) > 2.5  # we use about 2
    print(
        f"\n{rounds} round(s) in {elapsed:.0f} s; load average {info['loadavg_end']}"
        + (": other processes shared these cores, figures are noisy" if busy else ""),
        flush=True,
    )

    document = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": info,
        "settings": {
            **settings.__dict__,
            "rounds": rounds,
            "pinned": not args.no_pin,
            "busy_poll": args.busy_poll,
        },
        "quick": args.quick,
        "summary": summary,
        "records": [r.as_json() for r in records],
    }
    text = json.dumps(jsonable(document), indent=2, allow_nan=False)
    targets = [args.json] if args.json else []
    if not (args.quick or args.scenario or args.server):  # only complete runs
        results = HERE / "results"
        results.mkdir(exist_ok=True)
        targets += [results / f"{datetime.now(UTC):%Y-%m-%d}.json", results / "latest.json"]
    for target in targets:
        target.write_text(text + "\n")
        print(f"wrote {target}")
    failed = [r for r in records if r.problems]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
