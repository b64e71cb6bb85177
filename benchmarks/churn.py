"""Churn: connections that come and go for minutes, and what stays behind.

Clients loop: connect, upgrade, 1-4 echoes of 1 B to 64 KiB, then leave in
one of four ways (a closing handshake, a plain TCP close, a reset, or
halfway through a frame), while steady clients keep echoing. The server runs
in echo mode (``wshub serve --echo``; the websockets echo server beside it).
Every few seconds the probe reads the server's RSS and open descriptors; the
figure is the slope of RSS against connections served over the second half
of the run (KiB per 1,000 connections), after the warm-up has filled the
allocator's pools. A server that returns what each connection used stays
near zero; fragmentation or a leak shows as a steady climb.

    python benchmarks/churn.py [--seconds 300] [--server wshub --server websockets]

Clients run in ``--workers`` processes (asyncio, raw sockets), on the core
the server is not pinned to. ``MALLOC_MMAP_THRESHOLD_=65536`` is set for the
servers, as in the run that found the climb (it keeps 64 KiB buffers on the
heap, where fragmentation shows).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import random
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.procs import Pinning, Server
from benchmarks.rawclient import frame

TOKEN = "churn-probe-token-0123456789abcdef"
ROOT = Path(__file__).resolve().parent.parent
ENDINGS = ("close", "eof", "reset", "mid-frame")


async def _upgrade(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
        ).encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise ConnectionError(head.split(b"\r\n", 1)[0].decode())
    return reader, writer


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        length = struct.unpack("!H", await reader.readexactly(2))[0]
    elif length == 127:
        length = struct.unpack("!Q", await reader.readexactly(8))[0]
    return first & 0x0F, await reader.readexactly(length)


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, size: int) -> None:
    payload = os.urandom(size)
    writer.write(frame(0x2, payload))
    while True:
        opcode, data = await _read_frame(reader)
        if opcode == 0x2:
            if data != payload:
                raise RuntimeError("echo differs")
            return
        if opcode == 0x9:
            writer.write(frame(0xA, data))


async def _churner(host: str, port: int, counts: dict[str, int], stop: float) -> None:
    rng = random.Random()
    while time.monotonic() < stop:
        try:
            reader, writer = await _upgrade(host, port)
            for _ in range(rng.randint(1, 4)):
                await _echo(reader, writer, rng.randint(1, 65536))
            ending = rng.choice(ENDINGS)
            if ending == "close":
                writer.write(frame(0x8, struct.pack("!H", 1000)))
                while (await _read_frame(reader))[0] != 0x8:
                    pass
            elif ending == "reset":
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif ending == "mid-frame":
                writer.write(frame(0x2, os.urandom(rng.randint(100, 65536)))[:-37])
                await writer.drain()
            writer.close()
            counts[ending] += 1
        except (OSError, asyncio.IncompleteReadError, ConnectionError):
            counts["errors"] += 1


async def _steady(host: str, port: int, counts: dict[str, int], stop: float) -> None:
    reader, writer = await _upgrade(host, port)
    rng = random.Random()
    while time.monotonic() < stop:
        await _echo(reader, writer, rng.randint(1, 4096))
        counts["steady_echoes"] += 1
        await asyncio.sleep(0.01)
    writer.close()


def _worker(address: tuple[str, int], churners: int, steady: int, seconds: float, out: Any) -> None:
    host, port = address
    counts = dict.fromkeys((*ENDINGS, "errors", "steady_echoes"), 0)

    async def main() -> None:
        stop = time.monotonic() + seconds
        tasks = [_churner(host, port, counts, stop) for _ in range(churners)]
        tasks += [_steady(host, port, counts, stop) for _ in range(steady)]
        await asyncio.gather(*tasks)

    asyncio.run(main())
    out.put(counts)


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _slope(points: list[tuple[int, int]]) -> float:
    """Least-squares slope of RSS (KiB) against connections, per 1,000 connections."""
    n = len(points)
    mx = sum(c for c, _ in points) / n
    my = sum(r for _, r in points) / n
    sxx = sum((c - mx) ** 2 for c, _ in points)
    sxy = sum((c - mx) * (r - my) for c, r in points)
    return 1000 * sxy / sxx if sxx else float("nan")


def probe(server: Server, *, seconds: float, workers: int, sample: float) -> dict[str, Any]:
    queue: Any = multiprocessing.Queue()
    per = max(1, 50 // workers)
    steady = max(1, 20 // workers)
    fds_before = _fds(server.pid)
    procs = [
        multiprocessing.Process(
            target=_worker, args=((server.host, server.port), per, steady, seconds, queue)
        )
        for _ in range(workers)
    ]
    for proc in procs:
        proc.start()
    start = time.monotonic()
    samples: list[tuple[float, int]] = []  # (time, rss)
    while any(proc.is_alive() for proc in procs):
        samples.append((time.monotonic() - start, server.rss_kib()))
        time.sleep(sample)
    results = [queue.get(timeout=30) for _ in procs]
    for proc in procs:
        proc.join()
    totals = {key: sum(r[key] for r in results) for key in results[0]}
    connections = sum(totals[e] for e in ENDINGS)
    elapsed = time.monotonic() - start
    time.sleep(1.0)
    rate = connections / elapsed
    # Connections served by each sample's time, at the run's average rate.
    points = [(int(t * rate), rss) for t, rss in samples if t <= elapsed]
    second_half = [p for p in points if p[0] >= connections / 2]
    return {
        "seconds": round(elapsed, 1),
        "connections": connections,
        "connections_per_s": round(rate, 1),
        "endings": {e: totals[e] for e in ENDINGS},
        "client_errors": totals["errors"],
        "steady_echoes": totals["steady_echoes"],
        "rss_start_kib": samples[0][1],
        "rss_end_kib": server.rss_kib(),
        "rss_slope_kib_per_1000": round(_slope(second_half), 2) if len(second_half) > 2 else None,
        "rss_slope_whole_run": round(_slope(points), 2) if len(points) > 2 else None,
        "fds_before": fds_before,
        "fds_after": _fds(server.pid),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", action="append", choices=("wshub", "websockets"))
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sample", type=float, default=2.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--no-pin", action="store_true")
    args = parser.parse_args(argv)
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
    pinning = Pinning(None, None) if args.no_pin else Pinning(server=1, loadgen=None)
    if not args.no_pin:
        os.sched_setaffinity(0, {0})  # the clients, away from the server's core
    results: dict[str, Any] = {}
    for name in args.server or ["wshub", "websockets"]:
        with Server(name, echo=True, tokens=[TOKEN], pinning=pinning, wshub_src=ROOT) as srv:
            results[name] = probe(
                srv, seconds=args.seconds, workers=args.workers, sample=args.sample
            )
        print(name, json.dumps(results[name]), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
