"""Side-by-side benchmark: wshub vs the ``websockets`` library, ratios in one run.

Each server runs in its own subprocess (asyncio, one core each at most), and
both are driven by the same minimal client (pre-masked frames out, byte counts
in), so the only difference is the server under test. Figures are wall-clock seconds for a
fixed amount of work; the ratio is websockets / wshub (above 1: wshub faster).

    python bench/bench.py [--quick]

This is a measuring tool, not a test: nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

from wshub.core.frames import encode_frame

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


class RawClient:
    """A minimal client that costs the measurement almost nothing.

    It sends frames masked in advance and counts reply bytes instead of
    parsing frames (both servers answer with the same unmasked frame sizes),
    so the figures are the servers' speed, not a Python client's.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, url: str) -> RawClient:
        host, port = url.removeprefix("ws://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def expect(self, nbytes: int) -> None:
        await self.reader.readexactly(nbytes)

    def close(self) -> None:
        self.writer.write(encode_frame(0x8, b"\x03\xe8", mask=b"abcd"))
        self.writer.close()


def reply_size(payload: int) -> int:
    """Bytes of an unmasked server frame carrying ``payload`` bytes."""
    return payload + (2 if payload < 126 else 4 if payload < 1 << 16 else 10)


async def echo_small(url: str, n: int) -> None:
    client = await RawClient.open(url)
    frame = encode_frame(0x1, b"x" * 32, mask=b"abcd")
    client.writer.write(frame * n)
    await client.expect(reply_size(32) * n)
    client.close()


async def echo_large(url: str, n: int) -> None:
    client = await RawClient.open(url)
    size = 256 * 1024
    frame = encode_frame(0x2, b"y" * size, mask=b"abcd")
    for _ in range(n):
        client.writer.write(frame)
        await client.expect(reply_size(size))
    client.close()


async def fanout(url: str, n: int, clients: int = 50) -> None:
    conns = [await RawClient.open(url) for _ in range(clients)]
    conns[0].writer.write(encode_frame(0x1, f"fanout {n} 100".encode(), mask=b"abcd"))
    await asyncio.gather(*(c.expect(reply_size(100) * n) for c in conns))
    for c in conns:
        c.close()


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
