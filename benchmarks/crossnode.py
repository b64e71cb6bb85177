"""Cross-node fan-out through Redis: wshub beside python-socketio + AsyncRedisManager.

One publisher on node A; N subscribers on node A and N on node B (two server
processes on one private ``redis-server``), so every publication crosses
Redis to reach B's half. The publisher keeps at most W messages outstanding:
it sends the next when the oldest reached every subscriber (the ``fanout``
scenario of ``run.py``, driven by the same C load generator, which spreads
the subscribers over the nodes with ``--sub-port``). Systems, same machine,
same run, interleaved when there are several rounds:

- ``wshub-redis``: two ``wshub serve --redis URL --node a|b`` (hub mode,
  production defaults, as in run.py);
- ``wshub-single``: one ``wshub serve`` without Redis, all 2N subscribers on
  it (the in-memory hub: what crossing Redis costs);
- ``socketio-redis``: two nodes of ``servers/socketio_redis.py``
  (python-socketio 5, ``AsyncRedisManager``, under uvicorn); the generator
  speaks Engine.IO 4 / Socket.IO 5 over WebSocket to them.

Each system gets a fresh Redis (``tests/redis_support.py``'s private server:
free loopback port, no persistence, stopped by PID) and fresh nodes. Nothing
is pinned to a core: four or five busy processes share the machine's cores,
the same way for every system. Figures: deliveries/s, p50/p99 delivery
latency (publisher's send to subscriber's receipt), CPU share of each node,
Redis and the generator; ratios to socketio-redis in the same round.

    python benchmarks/crossnode.py [--subscribers N] [--rounds R] [--duration S]
                                   [--window W] [--system NAME ...] [--json PATH]

Exit status 1 when a system failed to run (not for ratios below a target).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.build import build_loadgen
from benchmarks.procs import SOCKETIO_SERVER, BenchError, Pinning, Server, cpu_seconds
from benchmarks.report import jsonable, machine
from benchmarks.scenarios import FULL, Context, clients_for, run_fanout
from tests.redis_support import RedisServer

ROOT = Path(__file__).resolve().parent.parent
SYSTEMS = ("wshub-redis", "wshub-single", "socketio-redis")
BASELINE = "socketio-redis"
NO_PIN = Pinning(server=None, loadgen=None)


@dataclass(frozen=True)
class Options:
    subscribers: int  # per node (the single node gets twice as many)
    window: int
    size: int
    warmup: float
    duration: float
    max_rate: float | None = None  # publications per second (None: as fast as the window allows)


@dataclass
class CrossContext(Context):
    """run.py's scenario context, plus loadgen options of the cross-node runs."""

    extra: dict[str, Any] = field(default_factory=dict)

    def command(self, scenario: str, **options: Any) -> list[str]:
        return super().command(scenario, **{**options, **self.extra})


@dataclass
class Result:
    system: str
    round: int
    rate: float
    problems: list[str]
    details: dict[str, Any]


def node_args(redis: RedisServer | None, node: str) -> tuple[str, ...]:
    if redis is None:
        return ()
    return ("--redis", redis.url, "--node", node)


@contextmanager
def cluster(system: str, tokens: list[str]) -> Iterator[tuple[list[Server], RedisServer | None]]:
    """The nodes of ``system`` (and their private Redis), stopped on exit."""
    with ExitStack() as stack:
        redis = None if system == "wshub-single" else stack.enter_context(RedisServer())
        server_name = SOCKETIO_SERVER if system == BASELINE else "wshub"
        count = 1 if system == "wshub-single" else 2
        nodes = []
        for node in ("a", "b")[:count]:
            server = Server(
                server_name,
                echo=False,
                tokens=tokens,
                pinning=NO_PIN,
                wshub_src=ROOT,
                extra_args=node_args(redis, node),
            )
            nodes.append(stack.enter_context(server))
        yield nodes, redis


def run_system(system: str, opts: Options, binary: Path, round_no: int) -> Result:
    total = 2 * opts.subscribers
    tokens_needed, hosts = clients_for(total + 1)
    stamp = int(time.time() * 1000) % 100_000
    tokens = [f"crossnode-{i:03d}-{stamp}" for i in range(tokens_needed)]
    settings = replace(
        FULL,
        warmup=opts.warmup,
        duration=opts.duration,
        fanout_subscribers=total,
        fanout_window=opts.window,
        fanout_size=opts.size,
    )
    try:
        with cluster(system, tokens) as (nodes, redis):
            extra: dict[str, Any] = {"sub_port": [n.port for n in nodes], "max_rate": opts.max_rate}
            if system == BASELINE:
                extra.update(socketio=True, hub=False, subprotocol=False)
            ctx = CrossContext(binary, nodes[0], settings, tokens, hosts, NO_PIN, extra=extra)
            pids = {f"node_{n}": s.pid for n, s in zip("ab", nodes, strict=False)}
            if redis is not None:
                pids["redis"] = redis.pid
            before = {k: cpu_seconds(p) for k, p in pids.items()}
            wall = time.monotonic()
            m = run_fanout(ctx)
            wall = time.monotonic() - wall
            cpu = {k: round((cpu_seconds(p) - before[k]) / wall, 3) for k, p in pids.items()}
            for name, server in zip("ab", nodes, strict=False):
                if not server.alive():
                    m.problems.append(f"node {name} exited: {server.log_tail(5)}")
            loadgen = m.details.get("loadgen", {})
            details = {
                "p50_us": m.details.get("p50_us"),
                "p99_us": m.details.get("p99_us"),
                "cpu": {**cpu, "loadgen": m.details.get("loadgen_cpu")},
                "subscribers": loadgen.get("subscribers"),
                "messages_done": loadgen.get("messages_done"),
                "loadgen": loadgen,
            }
            return Result(system, round_no, m.value, m.problems, details)
    except BenchError as exc:
        return Result(system, round_no, math.nan, [str(exc)], {})


def median(values: list[float]) -> float:
    clean = [v for v in values if not math.isnan(v)]
    return statistics.median(clean) if clean else math.nan


def summarize(results: list[Result], systems: list[str]) -> dict[str, dict[str, Any]]:
    """Per system: median rate, p99, and median of the per-round ratios to the baseline."""
    by_round: dict[int, dict[str, Result]] = {}
    for r in results:
        by_round.setdefault(r.round, {})[r.system] = r
    summary = {}
    for system in systems:
        mine = [r for r in results if r.system == system]
        ratios = []
        for rnd in by_round.values():
            base = rnd.get(BASELINE)
            if system in rnd and base is not None and base.rate > 0 and not math.isnan(base.rate):
                ratios.append(rnd[system].rate / base.rate)
        summary[system] = {
            "rate": median([r.rate for r in mine]),
            "p50_us": median([float(r.details.get("p50_us") or math.nan) for r in mine]),
            "p99_us": median([float(r.details.get("p99_us") or math.nan) for r in mine]),
            "ratio": median(ratios) if ratios else math.nan,
            "ratios": [round(x, 2) for x in ratios],
            "problems": sorted({p for r in mine for p in r.problems}),
            "cpu": [r.details.get("cpu") for r in mine],
        }
    return summary


def table(summary: dict[str, dict[str, Any]], opts: Options) -> str:
    lines = [
        f"cross-node fan-out: 1 publisher on node A, {opts.subscribers} subscribers on each of"
        f" nodes A and B (single node: {2 * opts.subscribers} on A), window {opts.window},"
        f" {opts.size}-byte payloads",
        "",
        "| system | deliveries/s | p50 / p99 (ms) | ratio to socketio-redis | per round"
        " | CPU (last round) | problems |",
        "|---|---|---|---|---|---|---|",
    ]
    for system, s in summary.items():
        cpu = s["cpu"][-1] if s["cpu"] else None
        cpu_text = " ".join(f"{k} {v}" for k, v in (cpu or {}).items() if v is not None)
        rate = "failed" if math.isnan(s["rate"]) else f"{s['rate'] / 1000:.1f}k"
        latency = (
            "-"
            if math.isnan(s["p99_us"])
            else f"{s['p50_us'] / 1000:.1f} / {s['p99_us'] / 1000:.1f}"
        )
        ratio = "-" if math.isnan(s["ratio"]) else f"{s['ratio']:.2f}"
        per_round = " ".join(str(x) for x in s["ratios"])
        problems = "; ".join(s["problems"])
        lines.append(
            f"| {system} | {rate} | {latency} | {ratio} | {per_round} | {cpu_text} | {problems} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=500, help="per node (default 500)")
    parser.add_argument("--window", type=int, default=8, help="messages outstanding (default 8)")
    parser.add_argument("--size", type=int, default=64, help="payload bytes (default 64)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds (default 1)")
    parser.add_argument("--duration", type=float, default=4.0, help="measured seconds (4)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds (default 1)")
    parser.add_argument(
        "--max-rate",
        type=float,
        help="publications per second at most (default: unpaced; wshub's default limit of"
        " 1,000 messages/s per connection refuses a faster publisher: keep the"
        " subscribers many, or pace small runs)",
    )
    parser.add_argument("--system", action="append", choices=SYSTEMS, help="repeatable")
    parser.add_argument("--json", type=Path, help="write the results here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.subscribers < 1 or args.rounds < 1:
        print("crossnode: --subscribers and --rounds must be at least 1", file=sys.stderr)
        return 2
    opts = Options(
        args.subscribers, args.window, args.size, args.warmup, args.duration, args.max_rate
    )
    systems = args.system or list(SYSTEMS)
    binary = build_loadgen()
    load_before = os.getloadavg()
    started = time.monotonic()
    results = []
    for round_no in range(1, args.rounds + 1):
        shift = (round_no - 1) % len(systems)
        for system in systems[shift:] + systems[:shift]:
            result = run_system(system, opts, binary, round_no)
            results.append(result)
            state = "; ".join(result.problems) or "ok"
            print(f"round {round_no}: {system}: {result.rate:.0f}/s ({state})", file=sys.stderr)
    summary = summarize(results, systems)
    print(table(summary, opts))
    load_after = os.getloadavg()
    print(
        f"\n{args.rounds} round(s) in {time.monotonic() - started:.0f} s; load average"
        f" {load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    if args.json:
        document = {
            "options": vars(opts),
            "load_average": {"before": load_before, "after": load_after},
            "machine": machine(ROOT),
            "summary": summary,
            "results": [vars(r) for r in results],
        }
        args.json.write_text(json.dumps(jsonable(document), indent=2) + "\n")
    return 1 if any(r.problems for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
