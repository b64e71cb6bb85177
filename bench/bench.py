"""Side-by-side benchmark: wshub vs the ``websockets`` library, ratios in one run.

Each server runs in its own subprocess (asyncio, one core each at most), and
both are driven by the same client (the ``websockets`` asyncio client), so the
only difference is the server under test. Figures are wall-clock seconds for a
fixed amount of work; the ratio is websockets / wshub (above 1: wshub faster).

    python bench/bench.py [--quick]

This is a measuring tool, not a test: nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import websockets

SERVER_CODE = {
    "wshub": r"""
import sys, anyio
from wshub.core import Limits, PreparedMessage
from wshub.core.auth import AccessPolicy
from wshub.adapters import EchoHandler, WebSocketServer

class Bench(EchoHandler):
    async def on_message(self, session, message):
        if message == "fanout":
            return
        if isinstance(message, str) and message.startswith("fanout "):
            _, count, size = message.split()
            for i in range(int(count)):
                prepared = PreparedMessage.text(f"{i:08d}".ljust(int(size), "x"))
                for other in self.server.sessions:
                    other.send_prepared(prepared)
                    other.notify()
            return
        await super().on_message(session, message)

async def main():
    handler = Bench(AccessPolicy(require_auth=False))
    limits = Limits(max_message_size=1 << 24, max_outbox_size=1 << 26, ping_interval=None)
    server = WebSocketServer(handler, port=0, limits=limits)
    handler.server = server
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)
        print(server.port, flush=True)
        await anyio.sleep_forever()

anyio.run(main)
""",
    "websockets": r"""
import asyncio, websockets
from websockets.asyncio.server import serve, broadcast

async def handler(ws):
    async for message in ws:
        if isinstance(message, str) and message.startswith("fanout "):
            _, count, size = message.split()
            for i in range(int(count)):
                broadcast(ws.server.connections, f"{i:08d}".ljust(int(size), "x"))
                await asyncio.sleep(0)
            continue
        await ws.send(message)

async def main():
    async with serve(handler, "127.0.0.1", 0, max_size=1 << 24, compression=None,
                     ping_interval=None, write_limit=1 << 26) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()

asyncio.run(main())
""",
}


async def echo_small(url: str, n: int) -> None:
    async with websockets.connect(url, max_size=None, compression=None) as ws:
        message = "x" * 32
        for _ in range(n):
            await ws.send(message)
        for _ in range(n):
            await ws.recv()


async def echo_large(url: str, n: int) -> None:
    async with websockets.connect(url, max_size=None, compression=None) as ws:
        message = b"y" * (256 * 1024)
        for _ in range(n):
            await ws.send(message)
            await ws.recv()


async def fanout(url: str, n: int, clients: int = 50) -> None:
    conns = [await websockets.connect(url, max_size=None, compression=None) for _ in range(clients)]
    try:
        await conns[0].send(f"fanout {n} 100")

        async def drain(ws: websockets.ClientConnection) -> None:
            for _ in range(n):
                await ws.recv()

        await asyncio.gather(*(drain(ws) for ws in conns))
    finally:
        await asyncio.gather(*(ws.close() for ws in conns))


SCENARIOS: dict[str, tuple[Callable[[str, int], Awaitable[None]], int]] = {
    "echo 32 B x N (pipelined)": (echo_small, 20_000),
    "echo 256 KiB x N (request/reply)": (echo_large, 200),
    "fan-out 100 B x N to 50 clients": (fanout, 2_000),
}


def start(name: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER_CODE[name]], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    port = proc.stdout.readline().strip()
    return proc, f"ws://127.0.0.1:{port}"


def timed(url: str, scenario: Callable[[str, int], Awaitable[None]], n: int) -> float:
    start_time = time.perf_counter()
    asyncio.run(scenario(url, n))
    return time.perf_counter() - start_time


def measure_pair(
    urls: tuple[str, str], scenario: Callable[[str, int], Awaitable[None]], n: int, runs: int
) -> tuple[float, float]:
    """Medians of ``runs`` alternated runs, so drift on the machine hits both sides."""
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(runs):
        ours.append(timed(urls[0], scenario, n))
        theirs.append(timed(urls[1], scenario, n))
    return statistics.median(ours), statistics.median(theirs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one run per scenario, less work")
    args = parser.parse_args()
    runs = 1 if args.quick else 7
    scale = 0.2 if args.quick else 1.0
    servers = {name: start(name) for name in SERVER_CODE}
    try:
        print("| scenario | wshub (s) | websockets (s) | ratio websockets/wshub |")
        print("|---|---|---|---|")
        for label, (scenario, n) in SCENARIOS.items():
            count = max(1, int(n * scale))
            urls = (servers["wshub"][1], servers["websockets"][1])
            ours, theirs = measure_pair(urls, scenario, count, runs)
            print(
                f"| {label.replace('N', str(count))} | {ours:.3f} | {theirs:.3f} "
                f"| {theirs / ours:.2f} |",
                flush=True,
            )
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
