"""How long a HubClient takes to get back what it missed while disconnected.

    python benchmarks/recovery.py [--messages 10000] [--size 100] [--rounds 5]
                                  [--backend asyncio|trio] [--no-pin]

A hub runs in its own process (this script with ``--serve``, pinned to core
1; the client to core 0) with history for the topic ``bench``. The client
follows ``bench``. Each round, a control connection asks the server (command
``gap``) to drop the client's connection (close 1012) and, in the same step,
publish ``--messages`` messages with a payload of ``--size`` bytes, so the
client misses every one of them. The client reconnects by itself (no backoff
delay: the jitter source returns 0), resubscribes with ``since`` and the
server replays the missed messages. Measured from the ``gap`` command to the
last missed message delivered by the subscription, from the moment the
server finished publishing (it is busy until then, and the client's
reconnection waits for it), with the reconnection (until the subscribe
reply) and the recovery after it apart. Every round checks that each
message arrived once, in order, without a gap.

A tool, not a test: nothing asserts on time. Figures go to stdout (and
``--json``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio

TOKEN = "recovery-bench"
TOPIC = "bench"


def serve(args: argparse.Namespace) -> None:
    """The server process: a hub with history on ``bench`` and the ``gap`` command."""
    from wshub.adapters import CommandContext, HubServer
    from wshub.core.auth import AccessPolicy, StaticTokens
    from wshub.core.hub_config import HubConfig

    logging.getLogger("wshub").setLevel(logging.ERROR)  # the 1012 closes are the point
    keep = args.messages * 2
    config = HubConfig(
        history_topic_bytes=keep * (args.size + 200),
        max_history_bytes=keep * (args.size + 200),
    )
    server = HubServer(AccessPolicy(tokens=StaticTokens([TOKEN])), port=0, config=config)
    server.configure_topic(TOPIC, history_size=keep, history_ttl=math.inf)

    @server.command("gap")
    async def gap(_: CommandContext, payload: dict[str, Any]) -> int:
        # One step of the event loop: the client is gone before the first publish.
        server.disconnect(payload["conn_id"], 1012, "benchmark gap")
        text = "x" * payload["size"]
        for _ in range(payload["messages"]):
            server.publish(TOPIC, text)
        return server.hub.topic_seq(TOPIC)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(server.serve)
            print(f"listening on {server.url}", flush=True)
            await anyio.sleep_forever()

    anyio.run(main, backend=args.backend)


async def measure(url: str, args: argparse.Namespace) -> list[dict[str, float]]:
    from wshub.adapters import Backoff, ConnectionState, HubClient, StateChange, Unrecovered

    opened: list[float] = []

    def on_state(change: StateChange) -> None:
        if change.state is ConnectionState.OPEN:
            opened.append(time.perf_counter())

    rounds = []
    backoff = Backoff(base=0.001, cap=0.001)
    async with (
        HubClient(url, token=TOKEN, backoff=backoff, random=lambda: 0.0, on_state=on_state) as c,
        HubClient(url, token=TOKEN) as control,
        c.subscribe(TOPIC) as sub,
    ):
        for n in range(args.rounds + 1):  # round 0 warms up
            first = (sub.position.seq if sub.position else 0) + 1
            request = {"conn_id": c.conn_id, "messages": args.messages, "size": args.size}
            sent = time.perf_counter()
            last = await control.call("gap", request, timeout=60)
            start = time.perf_counter()  # the server published everything: it is free again
            expected = first
            try:
                async for message in sub:
                    if message.seq != expected or len(message.payload) != args.size:
                        raise SystemExit(f"round {n}: got seq {message.seq}, expected {expected}")
                    expected += 1
                    if message.seq == last:
                        break
            except Unrecovered as exc:
                raise SystemExit(f"round {n}: not recovered: {exc.gap}") from None
            end = time.perf_counter()
            if n:
                rounds.append(
                    {
                        "total": end - start,
                        "reconnect": max(0.0, opened[-1] - start),
                        "replay": end - max(opened[-1], start),
                        "publish": start - sent,
                    }
                )
    return rounds


def pinned(command: list[str], cpu: int, pin: bool) -> list[str]:
    if not pin or shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        return command
    return ["taskset", "-c", str(cpu), *command]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=100, help="payload bytes per message")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    parser.add_argument("--json", type=Path, help="write the rounds here too")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args)
        return
    command = [sys.executable, __file__, "--serve", "--messages", str(args.messages)]
    command += ["--size", str(args.size), "--backend", args.backend]
    with subprocess.Popen(
        pinned(command, 1, args.pin), stdout=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            if not line.startswith("listening on "):
                raise SystemExit(f"the server did not start: {line!r}")
            url = line.split()[2]
            if args.pin and shutil.which("taskset") is not None:
                os.sched_setaffinity(0, {0})
            rounds = anyio.run(measure, url, args, backend=args.backend)
        finally:
            process.terminate()
    totals = [r["total"] for r in rounds]
    print(
        f"{args.messages} missed messages of {args.size} bytes, {args.backend}, "
        f"{len(rounds)} rounds: recovered in median {statistics.median(totals) * 1000:.0f} ms "
        f"(min {min(totals) * 1000:.0f}, max {max(totals) * 1000:.0f})"
    )
    for i, r in enumerate(rounds, 1):
        print(
            f"  round {i}: {r['total'] * 1000:.0f} ms = reconnect "
            f"{r['reconnect'] * 1000:.0f} ms + recovery {r['replay'] * 1000:.0f} ms "
            f"(the server published for {r['publish'] * 1000:.0f} ms before)"
        )
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": None}, "rounds": rounds}))


if __name__ == "__main__":
    main()
