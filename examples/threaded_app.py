"""A synchronous program with a WebSocket hub: it has no async code of its own.

The hub runs in a background thread (``ThreadedHub``); the main thread and a
worker thread use its blocking, thread-safe methods. Clients may call the
``add`` command and subscribe to ``ticks``, which the worker publishes to.

    python examples/threaded_app.py --port 8765 --token s3cret
    python -m wshub connect ws://127.0.0.1:8765 --token s3cret
    {"message_type": "subscribe", "topic": "ticks", "id": 1}
    {"message_type": "add", "payload": [1, 2, 3], "id": 2}

It stops on Ctrl-C (or SIGTERM), or after ``--seconds`` when given: clients
are closed with 1001.
"""

from __future__ import annotations

import argparse
import secrets
import signal
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

from wshub.adapters import CommandContext, HubServer, ThreadedHub
from wshub.core.auth import AccessPolicy, StaticTokens


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--token", help="bearer token clients must send (default: random)")
    parser.add_argument("--seconds", type=float, help="stop after this many seconds")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between ticks")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    return parser.parse_args(argv)


def ticker(hub: ThreadedHub, stop: threading.Event, interval: float) -> None:
    """A worker thread publishing to the ``ticks`` topic until told to stop."""
    n = 0
    while not stop.wait(interval):
        n += 1
        hub.publish("ticks", {"n": n, "time": time.time()})


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    token = args.token or secrets.token_urlsafe(16)
    server = HubServer(AccessPolicy(tokens=StaticTokens([token])), host=args.host, port=args.port)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    hub = ThreadedHub(server, backend=args.backend)
    hub.configure_topic("ticks")  # keeps its seq even while nobody listens

    @hub.command("add")  # before launch: in place before the first client
    def add(ctx: CommandContext, payload: Any) -> int:
        # A plain function: the hub runs it in a worker thread, where
        # ctx.threadsafe_hub (or this ThreadedHub) is the way to the hub.
        total = sum(int(x) for x in payload)
        ctx.threadsafe_hub.send_to(
            ctx.conn_id, "note", {"text": f"you added {len(payload)} numbers"}
        )
        return total

    with hub:  # launches; returns once the server listens
        print(f"token: {token}", flush=True)
        print(f"listening on {hub.url}", flush=True)
        worker = threading.Thread(target=ticker, args=(hub, stop, args.interval), daemon=True)
        worker.start()
        stop.wait(args.seconds)  # None: until a signal sets it
        stop.set()
        worker.join()
        print(f"stopping: {hub.stats().connections} client(s) connected", flush=True)
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
