"""The five scenarios: how each drives a server and what it reports.

Every scenario starts from a fresh server process, so one scenario's garbage
never weighs on the next. Clients are spread over several tokens (principals)
and source addresses (127.0.0.x) when there are many of them: wshub's
production defaults admit at most 100 connections per principal and 200 per
address, and a thousand subscribers are a thousand users, not one. Every
server gets the same clients.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .procs import BenchError, Hold, Pinning, Server, loadgen_command, run_loadgen

PER_TOKEN = 90  # below wshub's max_per_principal (100)
PER_HOST = 180  # below wshub's max_per_host (200)


@dataclass(frozen=True)
class Settings:
    """Sizes and durations of a run (``FULL`` or ``QUICK``)."""

    warmup: float
    duration: float
    echo_conns: int
    echo_inflight: int
    echo_size: int
    fanout_subscribers: int
    fanout_window: int
    fanout_size: int
    idle_conns: int
    idle_settle: float
    idle_ping_interval: float
    handshake_concurrency: int
    connections_target: int
    ramp_concurrency: int = 64
    # Fan-out's publisher paces itself to this many publishes/s (None: as fast
    # as the window allows). wshub refuses more than 1,000 messages/s from one
    # connection by default (bursts of 2,000); with few subscribers a quiet
    # machine's publisher outruns that and the run measures the limit instead.
    fanout_max_rate: float | None = None


FULL = Settings(
    warmup=1.0,
    duration=4.0,
    echo_conns=100,
    echo_inflight=1,
    echo_size=64,
    fanout_subscribers=1000,
    fanout_window=8,
    fanout_size=64,
    idle_conns=5000,
    idle_settle=1.0,
    idle_ping_interval=2.0,
    handshake_concurrency=50,
    connections_target=20_000,
)

QUICK = Settings(
    warmup=0.1,
    duration=0.4,
    echo_conns=10,
    echo_inflight=1,
    echo_size=64,
    fanout_subscribers=50,
    fanout_window=4,
    fanout_size=64,
    idle_conns=200,
    idle_settle=0.1,
    idle_ping_interval=0.2,
    handshake_concurrency=10,
    connections_target=500,
    fanout_max_rate=800,  # 50 subscribers would need 6,000 publishes/s at 300k deliveries/s
)


@dataclass
class Context:
    """What a scenario needs to run against one server."""

    loadgen: Path
    server: Server
    settings: Settings
    tokens: list[str]
    hosts: int
    pinning: Pinning
    busy_poll: bool = False

    def command(self, scenario: str, **options: Any) -> list[str]:
        options.setdefault("token", self.tokens)
        options.setdefault("busy_poll", self.busy_poll)
        if self.hosts > 1:
            options.setdefault("hosts", self.hosts)
        return loadgen_command(self.loadgen, scenario, self.server, options, self.pinning)


@dataclass
class Measurement:
    """One scenario on one server in one round."""

    value: float
    problems: list[str]
    details: dict[str, Any]


@dataclass(frozen=True)
class Scenario:
    name: str
    label: str  # column heading
    unit: str
    higher_is_better: bool
    echo_mode: bool  # servers in --echo mode (else hub mode)
    conns: Callable[[Settings], int]  # clients, for tokens and source addresses
    run: Callable[[Context], Measurement]
    every_round: bool = True  # False: a capacity, measured in the first round only
    short_keepalive: bool = False  # servers ping every ``idle_ping_interval`` (else: 20 s)


def clients_for(conns: int) -> tuple[int, int]:
    """Tokens and source addresses that keep ``conns`` clients within wshub's defaults."""
    return max(1, math.ceil(conns / PER_TOKEN)), max(1, math.ceil(conns / PER_HOST))


def connection_problems(result: dict[str, Any], expected: int) -> list[str]:
    problems = []
    if result["opened"] < expected:
        problems.append(f"{result['opened']}/{expected} connections open")
    for key in ("status_401", "status_429", "status_503", "status_other", "timeouts"):
        if result.get(key):
            problems.append(f"{key}={result[key]}")
    if result.get("server_closes"):
        problems.append(
            f"server closed {result['server_closes']} (last code {result['last_close_code']})"
        )
    if result.get("protocol_errors"):
        problems.append(f"protocol_errors={result['protocol_errors']}")
    return problems


def latency(result: dict[str, Any]) -> dict[str, Any]:
    """Percentiles, and how busy the generator's core was (near 1.0: it is the limit)."""
    return {
        "p50_us": result["p50_us"],
        "p99_us": result["p99_us"],
        "loadgen_cpu": result.get("loadgen_cpu"),
        "server_cpu": result.get("server_cpu"),
    }


def budget(s: Settings, ramp: float = 30.0) -> float:
    return ramp + s.warmup + s.duration + 30.0


def timed_run(ctx: Context, command: list[str]) -> dict[str, Any]:
    """Run the generator; add how busy the server's core was over the whole run.

    A server well below 1.0 was starved (another process on its core) or
    waited on the generator: either way that figure is suspect.
    """
    cpu, wall = ctx.server.cpu_seconds(), time.monotonic()
    result = run_loadgen(command, budget(ctx.settings))
    wall = time.monotonic() - wall
    result["server_cpu"] = round((ctx.server.cpu_seconds() - cpu) / wall, 3) if wall else None
    return result


def run_echo(ctx: Context) -> Measurement:
    s = ctx.settings
    result = timed_run(
        ctx,
        ctx.command(
            "echo",
            conns=s.echo_conns,
            inflight=s.echo_inflight,
            size=s.echo_size,
            warmup=s.warmup,
            duration=s.duration,
            concurrency=s.ramp_concurrency,
        ),
    )
    problems = connection_problems(result, s.echo_conns)
    if result["round_trips"] == 0:
        problems.append("no round trip measured")
    return Measurement(result["rate"], problems, {**latency(result), "loadgen": result})


def run_echo_busy(ctx: Context) -> Measurement:
    """The echo scenario with a generator that spins instead of sleeping in
    epoll_wait: no wakeup of the generator in each round trip."""
    return run_echo(replace(ctx, busy_poll=True))


def run_fanout(ctx: Context) -> Measurement:
    s = ctx.settings
    result = timed_run(
        ctx,
        ctx.command(
            "fanout",
            conns=s.fanout_subscribers,
            window=s.fanout_window,
            size=s.fanout_size,
            warmup=s.warmup,
            duration=s.duration,
            concurrency=s.ramp_concurrency,
            hub=True,
            subprotocol=True,
            max_rate=s.fanout_max_rate,
        ),
    )
    problems = connection_problems(result, s.fanout_subscribers + 1)
    if result["subscribers"] < s.fanout_subscribers:
        problems.append(f"{result['subscribers']}/{s.fanout_subscribers} subscribed")
    if result["stalled"]:
        problems.append("deliveries stalled")
    if result["publish_errors"]:
        problems.append(f"publish_errors={result['publish_errors']}")
    if result["deliveries"] == 0:
        problems.append("no delivery measured")
    return Measurement(result["rate"], problems, {**latency(result), "loadgen": result})


def hold(ctx: Context, conns: int, *, timeout: float) -> Hold:
    return Hold(
        ctx.command(
            "hold",
            conns=conns,
            concurrency=ctx.settings.ramp_concurrency,
            timeout=timeout,
            subprotocol=True,
            hold_stdin=True,
        )
    )


def hold_problems(ready: dict[str, Any], final: dict[str, Any]) -> list[str]:
    problems = connection_problems(ready, ready["requested"])
    if final["alive"] < final["open_at_verify"]:
        problems.append(f"only {final['alive']}/{final['open_at_verify']} answered the ping")
    return problems


def run_idle(ctx: Context) -> Measurement:
    """RSS growth of the server for idle connections, per connection (KiB).

    Measured twice: ``idle_settle`` after the last connection opened, and
    again after two more keepalive rounds (the servers ping every
    ``idle_ping_interval`` seconds here, and the generator answers), which is
    the figure: what a connection costs once it has been pinged, as every
    long-lived connection will be.
    """
    s = ctx.settings
    warm = hold(ctx, 10, timeout=5)  # first connections load lazily imported code
    try:
        warm.ready(30)
        warm.finish()
    finally:
        warm.kill()
    time.sleep(min(0.5, s.idle_settle))
    before = ctx.server.rss_kib()
    session = hold(ctx, s.idle_conns, timeout=5)
    try:
        ready = session.ready(120)
        time.sleep(s.idle_settle)
        settled = ctx.server.rss_kib()
        time.sleep(2 * s.idle_ping_interval + s.idle_settle)
        after = ctx.server.rss_kib()
        final = session.finish()
    finally:
        session.kill()
    held = max(1, ready["opened"])
    problems = hold_problems(ready, final)
    return Measurement(
        (after - before) / held,
        problems,
        {
            "rss_before_kib": before,
            "rss_settled_kib": settled,
            "rss_after_pings_kib": after,
            "kib_per_conn_before_pings": round((settled - before) / held, 3),
            "ping_interval_s": s.idle_ping_interval,
            "connections": ready["opened"],
            "loadgen": final,
        },
    )


def run_handshakes(ctx: Context) -> Measurement:
    s = ctx.settings
    result = timed_run(
        ctx,
        ctx.command(
            "handshakes",
            conns=s.handshake_concurrency,
            warmup=s.warmup,
            duration=s.duration,
            subprotocol=True,
            timeout=5,
        ),
    )
    problems = connection_problems(result, 0)
    if result["handshakes"] == 0:
        problems.append("no handshake measured")
    return Measurement(result["rate"], problems, {**latency(result), "loadgen": result})


def run_connections(ctx: Context) -> Measurement:
    """Open up to the target, verify each alive with a ping; how many held."""
    s = ctx.settings
    session = hold(ctx, s.connections_target, timeout=5)
    try:
        ready = session.ready(300)
        rss = ctx.server.rss_kib() if ctx.server.alive() else 0
        final = session.finish(60)
    finally:
        session.kill()
    problems = []
    if not ctx.server.alive():
        problems.append("server died")
    if final["alive"] == 0:
        problems.append("no connection held")
    if final["alive"] < final["open_at_verify"]:
        problems.append(f"only {final['alive']}/{final['open_at_verify']} answered the ping")
    refused = {
        k: ready[k]
        for k in ("status_429", "status_503", "status_other", "timeouts", "connect_errors")
        if ready.get(k)
    }
    return Measurement(
        final["alive"],
        problems,
        {
            "requested": s.connections_target,
            "attempted": ready["requested"],
            "opened": ready["opened"],
            "ramp_s": ready["ramp_s"],
            "refused": refused,
            "rss_kib": rss,
            "loadgen": final,
        },
    )


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("echo", "echo round trips/s", "/s", True, True, lambda s: s.echo_conns, run_echo),
        Scenario(
            "echo_busy",
            "echo (busy-poll) round trips/s",
            "/s",
            True,
            True,
            lambda s: s.echo_conns,
            run_echo_busy,
        ),
        Scenario(
            "fanout",
            "fan-out deliveries/s",
            "/s",
            True,
            False,
            lambda s: s.fanout_subscribers + 1,
            run_fanout,
        ),
        Scenario(
            "idle",
            "idle memory KiB/conn",
            "KiB",
            False,
            False,
            lambda s: s.idle_conns,
            run_idle,
            short_keepalive=True,
        ),
        Scenario(
            "handshakes",
            "handshakes/s",
            "/s",
            True,
            False,
            lambda s: s.handshake_concurrency,
            run_handshakes,
        ),
        Scenario(
            "connections",
            "connections held",
            "",
            True,
            False,
            lambda s: s.connections_target,
            run_connections,
            every_round=False,
        ),
    )
}


def check_error(exc: BenchError) -> Measurement:
    return Measurement(math.nan, [str(exc)], {})
