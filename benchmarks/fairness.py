"""Fairness under one client's burst: what the other connections feel.

Two probes, each against a fresh server (wshub's real CLI in hub mode, and
the websockets hub of ``servers/websockets_server.py`` beside it):

``burst``: two subscribers set ``SO_RCVBUF`` to 4 MiB and do not read while
a publisher writes 48 publishes of 32,000 bytes **in one write** (1.5 MB),
then they read. Their kernel buffers can hold the whole burst, so a fair
server delivers 48 of 48 to each and closes nobody; an unfair one fills the
subscribers' outboxes before it writes any of it and closes them 1013.

``stall``: watchers send a ping every 14 ms between them and time each pong while
another client writes 1,000 publishes of 100 KB (95 MiB) to a topic nobody
is subscribed to. The longest pong wait during the burst is how long one
client's burst kept the server from the others (the figure of issue 10:
at most 50 ms); the same probe without the burst gives the baseline.

    python benchmarks/fairness.py [--server wshub --server websockets] [--json PATH]

Nothing here asserts on time; the tests check fairness by counting turns.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.procs import Pinning, Server
from benchmarks.rawclient import RawClient, frame

TOKEN = "fairness-probe-token-0123456789abcdef"
ROOT = Path(__file__).resolve().parent.parent


def _hub_client(server: Server, **kwargs: Any) -> RawClient:
    client = RawClient(server.host, server.port, TOKEN, **kwargs)
    client.upgrade()
    return client


def _await_reply(client: RawClient, request_id: int) -> dict[str, Any]:
    while True:
        envelope = client.recv_json()
        if envelope.get("message_type") == "reply" and envelope.get("id") == request_id:
            return envelope


def publish_frames(topic: str, count: int, size: int, *, first_id: int | None = None) -> bytes:
    """``count`` publish envelopes of ``size`` payload characters, framed and masked."""
    frames = []
    for i in range(count):
        envelope: dict[str, Any] = {
            "message_type": "publish",
            "topic": topic,
            "payload": {"i": i, "pad": "x" * size},
        }
        if first_id is not None:
            envelope["id"] = first_id + i
        frames.append(frame(0x1, json.dumps(envelope).encode()))
    return b"".join(frames)


def probe_burst(server: Server, *, messages: int = 48, size: int = 32_000) -> dict[str, Any]:
    subscribers = [_hub_client(server, rcvbuf=4 << 20) for _ in range(2)]
    for sub in subscribers:
        sub.send_json({"message_type": "subscribe", "topic": "burst", "id": 1})
        _await_reply(sub, 1)
    publisher = _hub_client(server)
    publisher.send(publish_frames("burst", messages, size))  # one write
    time.sleep(3.0)  # the subscribers do not read meanwhile
    results = []
    for sub in subscribers:
        got, ended = 0, "open"
        try:
            while got < messages:
                if sub.recv_json().get("message_type") == "message":
                    got += 1
        except (ConnectionError, EOFError, TimeoutError) as exc:
            ended = str(exc) or type(exc).__name__
        results.append({"delivered": got, "ended": ended, "rcvbuf": sub.rcvbuf})
        sub.close()
    publisher.close()
    return {"messages": messages, "size": size, "subscribers": results}


class _Watcher:
    """Pings every ``interval`` seconds; records (sent_at, wait) for each pong.

    Servers bound how often a peer may ping (wshub: 10/s by default), so a
    probe spreads its pings over several watchers started ``offset`` apart.
    """

    def __init__(self, client: RawClient, interval: float = 0.11, offset: float = 0.0) -> None:
        self.client = client
        self.interval = interval
        self.offset = offset
        self.samples: list[tuple[float, float]] = []
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._ping, daemon=True),
            threading.Thread(target=self._read, daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._threads[0].join()

    def _ping(self) -> None:
        time.sleep(self.offset)
        while not self._stop.is_set():
            with self._lock:
                self.client.send(frame(0x9, struct.pack("!d", time.perf_counter())))
            time.sleep(self.interval)

    def _read(self) -> None:
        try:
            while True:
                opcode, payload = self.client.recv_frame()
                now = time.perf_counter()
                if opcode == 0xA and len(payload) == 8:
                    sent = struct.unpack("!d", payload)[0]
                    self.samples.append((sent, now - sent))
                elif opcode == 0x9:
                    with self._lock:
                        self.client.send(frame(0xA, payload))
        except (OSError, EOFError) as exc:
            self.error = exc


def worst_wait(watchers: list[_Watcher], start: float, end: float) -> float:
    """The longest pong wait of the pings sent in [start, end], over all watchers."""
    waits = [wait for w in watchers for sent, wait in w.samples if start <= sent <= end]
    lost = [w.error for w in watchers if w.error is not None]
    if lost:
        raise RuntimeError(f"a watcher lost its connection: {lost[0]!r}")
    return max(waits) if waits else float("nan")


def probe_stall(
    server: Server, *, messages: int = 1000, size: int = 100_000, watchers: int = 8
) -> dict[str, Any]:
    interval = 0.11
    probes = [
        _Watcher(_hub_client(server), interval, offset=i * interval / watchers)
        for i in range(watchers)
    ]
    publisher = _hub_client(server)
    data = publish_frames("nobody-listens", messages, size)
    done = publish_frames("nobody-listens", 1, 10, first_id=1)
    for probe in probes:
        probe.start()
    time.sleep(1.0)
    quiet_end = time.perf_counter()
    publisher.send(data + done)
    _await_reply(publisher, 1)  # the server has handled the whole burst
    burst_end = time.perf_counter()
    time.sleep(0.3)  # the pongs of the last pings
    for probe in probes:
        probe.stop()
    baseline = worst_wait(probes, quiet_end - 0.9, quiet_end)
    worst = worst_wait(probes, quiet_end, burst_end)
    publisher.close()
    for probe in probes:
        probe.client.close()
    return {
        "burst_bytes": len(data),
        "burst_seconds": round(burst_end - quiet_end, 3),
        "pings_during_burst": sum(
            1 for p in probes for sent, _ in p.samples if quiet_end <= sent <= burst_end
        ),
        "baseline_worst_pong_ms": round(baseline * 1000, 2),
        "burst_worst_pong_ms": round(worst * 1000, 2),
    }


def run(servers: list[str], pin: bool) -> dict[str, Any]:
    pinning = Pinning(server=1, loadgen=None) if pin else Pinning(None, None)
    results: dict[str, Any] = {}
    for name in servers:
        entry: dict[str, Any] = {}
        for probe in (probe_burst, probe_stall):
            with Server(name, echo=False, tokens=[TOKEN], pinning=pinning, wshub_src=ROOT) as srv:
                entry[probe.__name__.removeprefix("probe_")] = probe(srv)
        results[name] = entry
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", action="append", choices=("wshub", "websockets"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--no-pin", action="store_true")
    args = parser.parse_args(argv)
    results = run(args.server or ["wshub", "websockets"], pin=not args.no_pin)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
