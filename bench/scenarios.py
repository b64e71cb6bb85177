"""Quick side-by-side scenarios for profiling work: wshub vs websockets.

A stopgap until the benchmark suite (``benchmarks/``) lands: the issue-5
scenarios driven by a small asyncio client in this process (pinned to CPU 0,
servers to CPU 1). A Python client may be slower than the servers, so besides
wall-clock rates it reports each server's own CPU time per operation (from
/proc), which the client's speed does not change much; ratios are
websockets / wshub for costs and wshub / websockets for rates (above 1:
wshub better). Servers run with production defaults (auth on, keepalive,
limits); the hub's connection caps are raised so that 1,000 connections of
one principal from one host are admitted.

    python bench/scenarios.py [--scenario echo fanout memory handshake connections]
                              [--rounds 3] [--duration 4] [--profile DIR]

A measuring tool, not a test: nothing asserts on time.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

TOKEN = "bench-token"
SERVER_CPU = "1"
CLIENT_CPU = {0}

WSHUB_SERVER = r"""
import resource, sys
import anyio
from wshub.adapters import EchoHandler, HubServer, WebSocketServer
from wshub.core.auth import AccessPolicy, StaticTokens
from wshub.core.hub_config import HubConfig
from wshub.core.topics import TopicPolicy

_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (_hard, _hard))
policy = AccessPolicy(tokens=StaticTokens([sys.argv[2]]))
if sys.argv[1] == "echo":
    server = WebSocketServer(EchoHandler(policy), port=0)
else:
    server = HubServer(
        policy,
        port=0,
        default_topic=TopicPolicy(publish="all", subscribe="all"),
        config=HubConfig(max_connections=50_000, max_per_principal=50_000, max_per_host=50_000),
    )

async def main():
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)
        print(server.port, flush=True)

anyio.run(main)
"""

WEBSOCKETS_SERVER = r"""
import asyncio, hmac, json, resource, sys, time
from websockets.asyncio.server import broadcast, serve

_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (_hard, _hard))
MODE, TOKEN = sys.argv[1], sys.argv[2]
EXPECTED = f"Bearer {TOKEN}"
topics = {}
seqs = {}
ids = iter(range(1 << 62))

def dumps(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)

def process_request(connection, request):
    if not hmac.compare_digest(request.headers.get("Authorization", ""), EXPECTED):
        return connection.respond(401, "unauthorized\n")

async def echo(ws):
    async for message in ws:
        await ws.send(message)

async def hub(ws):
    conn_id = f"{next(ids):016x}"
    joined = set()
    await ws.send(dumps({"message_type": "welcome", "payload": {"conn_id": conn_id,
        "principal": "token-0"}, "timestamp": int(time.time() * 1000)}))
    try:
        async for message in ws:
            env = json.loads(message)
            kind, topic, rid = env.get("message_type"), env.get("topic"), env.get("id")
            if kind == "subscribe":
                topics.setdefault(topic, set()).add(ws)
                joined.add(topic)
                if rid is not None:
                    await ws.send(dumps({"message_type": "reply", "id": rid, "ok": True,
                        "payload": {"topic": topic, "seq": seqs.get(topic, 0)},
                        "timestamp": int(time.time() * 1000)}))
            elif kind == "publish":
                seq = seqs[topic] = seqs.get(topic, 0) + 1
                broadcast(topics.get(topic, ()), dumps({"message_type": "message",
                    "topic": topic, "seq": seq, "payload": env.get("payload"),
                    "timestamp": int(time.time() * 1000)}))
    finally:
        for topic in joined:
            topics[topic].discard(ws)

async def main():
    async with serve(echo if MODE == "echo" else hub, "127.0.0.1", 0,
                     process_request=process_request) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()

asyncio.run(main())
"""

SERVERS = {"wshub": WSHUB_SERVER, "websockets": WEBSOCKETS_SERVER}


def mask_frame(opcode: int, payload: bytes, mask: bytes = b"\x01\x02\x03\x04") -> bytes:
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        header = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    key = (mask * (n // 4 + 1))[:n]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return header + mask + body


CLOSE_FRAME = mask_frame(0x8, (1000).to_bytes(2, "big"))


class Client(asyncio.Protocol):
    """Upgrade with a bearer token, then hand every text frame to ``on_text``."""

    def __init__(self, host: str, port: int, on_text: Callable[[Client, bytes], None]) -> None:
        self.on_text = on_text
        self.host, self.port = host, port
        self.buf = b""
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.is_open = False
        self.transport: asyncio.Transport | None = None
        self.count = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            f"GET / HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
        )

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if not self.is_open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.opened.set_exception(RuntimeError(buf[:end].decode()))
                return
            self.is_open = True
            self.opened.set_result(None)
            buf = buf[end + 4 :]
        pos, end = 0, len(buf)
        while end - pos >= 2:
            opcode = buf[pos] & 0x0F
            n = buf[pos + 1] & 0x7F
            start = pos + 2
            if n == 126:
                if end - start < 2:
                    break
                n = int.from_bytes(buf[start : start + 2], "big")
                start += 2
            elif n == 127:
                if end - start < 8:
                    break
                n = int.from_bytes(buf[start : start + 8], "big")
                start += 8
            if start + n > end:
                break
            if opcode == 1:
                self.on_text(self, buf[start : start + n])
            elif opcode == 9:
                assert self.transport is not None
                self.transport.write(mask_frame(0xA, buf[start : start + n]))
            pos = start + n
        self.buf = buf[pos:]

    def connection_lost(self, _exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("lost before open"))
        if not self.lost.done():
            self.lost.set_result(None)

    def send(self, frame: bytes) -> None:
        assert self.transport is not None
        self.transport.write(frame)


async def open_client(port: int, on_text: Callable[[Client, bytes], None]) -> Client:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(
        lambda: Client("127.0.0.1", port, on_text), "127.0.0.1", port
    )
    await client.opened
    return client


async def open_many(port: int, n: int, on_text: Callable[[Client, bytes], None]) -> list[Client]:
    clients: list[Client] = []
    for i in range(0, n, 100):
        clients += await asyncio.gather(
            *(open_client(port, on_text) for _ in range(min(100, n - i)))
        )
    return clients


def ignore(_client: Client, _data: bytes) -> None:
    pass


# -- server process ----------------------------------------------------------


class Server:
    def __init__(self, name: str, mode: str, profile: str | None = None) -> None:
        # "wshub@DIR" runs the wshub server from another checkout (before/after runs).
        name, _, cwd = name.partition("@")
        cmd = [sys.executable, "-c", SERVERS[name], mode, TOKEN]
        spy = os.path.join(os.path.dirname(sys.executable), "py-spy")
        if profile:  # py-spy starts the server: attaching is not allowed here
            cmd = [spy, "record", "-r", "250", "-f", "raw", "-o", profile, "--", *cmd]
        self.proc = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, *cmd],
            stdout=subprocess.PIPE,
            text=True,
            cwd=cwd or None,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        while not line.strip().isdigit():  # py-spy talks first
            line = self.proc.stdout.readline()
        self.port = int(line)
        self.pid = self.proc.pid
        if profile:
            with open(f"/proc/{self.pid}/task/{self.pid}/children") as f:
                self.pid = int(f.read().split()[0])

    def cpu(self) -> float:
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_kib(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        if self.pid != self.proc.pid:
            os.kill(self.pid, 15)  # py-spy writes its profile when its child exits
            assert self.proc.stdout is not None
            self.proc.stdout.read()
        else:
            self.proc.terminate()
        self.proc.wait()


# -- scenarios ---------------------------------------------------------------

Result = dict[str, float]


async def echo(server: Server, duration: float) -> Result:
    frame = mask_frame(0x1, b"e" * 64)
    done = 0

    def on_text(client: Client, _data: bytes) -> None:
        nonlocal done
        done += 1
        client.send(frame)

    clients = await open_many(server.port, 100, on_text)
    await asyncio.sleep(0.2)
    cpu0, t0, n0 = server.cpu(), time.perf_counter(), done
    for c in clients:
        c.send(frame)
    await asyncio.sleep(duration)
    cpu1, t1, n1 = server.cpu(), time.perf_counter(), done
    for c in clients:
        c.on_text = ignore
        c.send(CLOSE_FRAME)
    await asyncio.gather(*(c.lost for c in clients))
    n = n1 - n0
    return {"rate": n / (t1 - t0), "cpu_us": (cpu1 - cpu0) / n * 1e6}


async def fanout(
    server: Server, duration: float, subscribers: int = 1000, window: int = 8
) -> Result:
    remaining: collections.deque[int] = collections.deque()
    first = 0  # index of remaining[0]
    delivered = 0
    sent = 0
    wake = asyncio.Event()
    received: dict[Client, int] = {}
    subscribed = 0

    def on_text(client: Client, data: bytes) -> None:
        nonlocal delivered, first, subscribed
        k = received.get(client)
        if k is None:
            if b'"reply"' in data:
                received[client] = 0
                subscribed += 1
                if subscribed == subscribers:
                    wake.set()
            return
        received[client] = k + 1
        i = k - first
        remaining[i] -= 1
        delivered += 1
        if i == 0:
            while remaining and remaining[0] == 0:
                remaining.popleft()
                first += 1
            wake.set()

    subs = await open_many(server.port, subscribers, on_text)
    publisher = await open_client(server.port, ignore)
    subscribe = mask_frame(
        0x1, b'{"message_type":"subscribe","topic":"bench","payload":null,"id":1}'
    )
    for c in subs:
        c.send(subscribe)
    await wake.wait()
    pad = "p" * 40
    t_end = time.perf_counter() + duration
    cpu0, t0 = server.cpu(), time.perf_counter()
    while time.perf_counter() < t_end:
        while sent - first < window:
            payload = f'{{"n":{sent},"pad":"{pad}"}}'
            publisher.send(
                mask_frame(
                    0x1,
                    f'{{"message_type":"publish","topic":"bench","payload":{payload}}}'.encode(),
                )
            )
            remaining.append(subscribers)
            sent += 1
        wake.clear()
        await wake.wait()
    cpu1, t1 = server.cpu(), time.perf_counter()
    n = delivered
    for c in [*subs, publisher]:
        c.on_text = ignore
        c.send(CLOSE_FRAME)
    await asyncio.gather(*(c.lost for c in [*subs, publisher]))
    return {"rate": n / (t1 - t0), "cpu_us": (cpu1 - cpu0) / n * 1e6}


async def memory(server: Server, _duration: float, n: int = 5000) -> Result:
    warm = await open_many(server.port, 10, ignore)
    await asyncio.sleep(0.5)
    before = server.rss_kib()
    clients = await open_many(server.port, n, ignore)
    await asyncio.sleep(2.0)
    after = server.rss_kib()
    for c in [*clients, *warm]:
        c.send(CLOSE_FRAME)
    await asyncio.gather(*(c.lost for c in [*clients, *warm]))
    return {"kib_per_conn": (after - before) / n}


async def handshake(server: Server, duration: float, concurrency: int = 50) -> Result:
    loop = asyncio.get_running_loop()
    done = 0
    t_end = time.perf_counter() + duration

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < t_end:
            _, client = await loop.create_connection(
                lambda: Client("127.0.0.1", server.port, ignore), "127.0.0.1", server.port
            )
            await client.opened
            client.send(CLOSE_FRAME)
            await client.lost
            done += 1

    cpu0, t0 = server.cpu(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu1, t1 = server.cpu(), time.perf_counter()
    return {"rate": done / (t1 - t0), "cpu_us": (cpu1 - cpu0) / done * 1e6}


async def connections(server: Server, _duration: float, n: int = 19_900) -> Result:
    def count(client: Client, _data: bytes) -> None:
        client.count += 1

    clients = await open_many(server.port, n, count)
    await asyncio.sleep(1.0)
    # Alive: still connected and served (both servers greet each client with a welcome).
    alive = sum(1 for c in clients if not c.lost.done() and c.count)
    rss = server.rss_kib()
    for c in clients:
        c.send(CLOSE_FRAME)
    await asyncio.gather(*(c.lost for c in clients))
    return {"held": alive, "rss_mib": rss / 1024}


SCENARIOS: dict[str, tuple[str, Callable[..., Any]]] = {
    "echo": ("echo", echo),
    "fanout": ("hub", fanout),
    "memory": ("hub", memory),
    "handshake": ("hub", handshake),
    "connections": ("hub", connections),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenario", nargs="*", default=["echo", "fanout", "memory", "handshake"])
    parser.add_argument("--servers", nargs="*", default=list(SERVERS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--profile", help="directory for py-spy raw profiles of each server")
    args = parser.parse_args()
    os.sched_setaffinity(0, CLIENT_CPU)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    for scenario in args.scenario:
        mode, func = SCENARIOS[scenario]
        results: dict[str, list[Result]] = {name: [] for name in args.servers}
        for r in range(args.rounds):
            for name in args.servers:
                profile = None
                if args.profile:
                    os.makedirs(args.profile, exist_ok=True)
                    profile = f"{args.profile}/{scenario}-{name}-{r}.txt"
                server = Server(name, mode, profile)
                try:
                    results[name].append(asyncio.run(func(server, args.duration)))
                finally:
                    server.stop()
        print(f"## {scenario}")
        for key in results[args.servers[0]][0]:
            row = {name: statistics.median(x[key] for x in rs) for name, rs in results.items()}
            text = "  ".join(f"{name}={value:,.2f}" for name, value in row.items())
            for name, value in row.items():
                if name == "websockets" or "websockets" not in row or not value:
                    continue
                ratio = row["websockets"] / value
                if key in {"rate", "held"}:
                    ratio = 1 / ratio if ratio else 0.0
                text += f"  {name}:ratio(better>1)={ratio:.2f}"
            print(f"{key:14s} {text}", flush=True)


if __name__ == "__main__":
    main()
