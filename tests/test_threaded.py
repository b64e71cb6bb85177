"""``ThreadedHub``: the hub in a background thread, driven from plain threads.

The test bodies are synchronous (no event loop of their own); the hub's loop
runs on asyncio or trio in its thread. Clients are the ``websockets``
library's threaded (sync) client, which needs no event loop either.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from wshub.adapters import CommandContext, HubServer, HubStoppedError, ThreadedHub
from wshub.core.auth import SUBPROTOCOL, AccessPolicy, Principal, StaticTokens

TOKEN = "threaded-token"
THREADS = 8
PER_THREAD = 150


@pytest.fixture(params=["asyncio", "trio"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def make_server() -> HubServer:
    return HubServer(AccessPolicy(tokens=StaticTokens({TOKEN: Principal("carol")})))


@contextmanager
def ws_client(hub: ThreadedHub) -> Iterator[tuple[ClientConnection, dict[str, Any]]]:
    with ws_connect(
        hub.url,
        additional_headers={"Authorization": f"Bearer {TOKEN}"},
        subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
        open_timeout=5,
    ) as ws:
        welcome = recv(ws)
        assert welcome["message_type"] == "welcome"
        yield ws, welcome["payload"]


def recv(ws: ClientConnection) -> dict[str, Any]:
    value = json.loads(ws.recv(timeout=10))
    assert isinstance(value, dict)
    return value


def request(ws: ClientConnection, **envelope: Any) -> dict[str, Any]:
    ws.send(json.dumps(envelope))
    reply = recv(ws)
    assert (reply["message_type"], reply.get("id")) == ("reply", envelope["id"]), reply
    return reply


def test_eight_threads_publish_whole_and_in_order_then_stop_closes_1001(backend: str) -> None:
    hub = ThreadedHub.start(make_server(), backend=backend)
    try:
        assert hub.running
        assert hub.url == f"ws://127.0.0.1:{hub.port}"
        assert hub.port > 0
        hub.configure_topic("load")
        with ws_client(hub) as (ws, _):
            assert request(ws, message_type="subscribe", topic="load", id=1)["ok"] is True
            start = threading.Barrier(THREADS)
            counts: list[int] = [0] * THREADS
            errors: list[BaseException] = []

            def sender(t: int) -> None:
                try:
                    start.wait()
                    for n in range(PER_THREAD):
                        # distinct, checkable content: a torn message would not parse
                        payload = {"t": t, "n": n, "body": f"{t}:{n}:" + "ab" * (n % 50)}
                        counts[t] += hub.publish("load", payload)
                except BaseException as exc:  # reported below, in the main thread
                    errors.append(exc)

            threads = [threading.Thread(target=sender, args=(t,)) for t in range(THREADS)]
            for thread in threads:
                thread.start()
            next_n = [0] * THREADS
            seqs = []
            for _ in range(THREADS * PER_THREAD):
                message = recv(ws)
                assert message["message_type"] == "message"
                payload = message["payload"]
                t, n = payload["t"], payload["n"]
                assert payload["body"] == f"{t}:{n}:" + "ab" * (n % 50)
                assert n == next_n[t], f"thread {t}: got {n}, expected {next_n[t]}"
                next_n[t] += 1
                seqs.append(message["seq"])
            for thread in threads:
                thread.join(10)
            assert not errors
            assert counts == [PER_THREAD] * THREADS
            assert seqs == list(range(1, THREADS * PER_THREAD + 1))
            assert hub.stats().connections == 1

            hub.stop()
            assert not hub.running
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1001
    finally:
        hub.stop()
    with pytest.raises(HubStoppedError):
        hub.publish("load", "late")
    with pytest.raises(HubStoppedError):
        hub.stats()
    hub.stop()  # idempotent


def test_every_operation_from_a_thread_and_sync_commands(backend: str) -> None:
    with ThreadedHub.start(make_server, backend=backend) as hub:
        # a plain function registered from this (non-loop) thread
        seen_threads: list[int] = []

        @hub.command("shout", timeout=5)
        def shout(ctx: CommandContext, payload: str) -> str:
            seen_threads.append(threading.get_ident())
            # the handle is usable from the worker thread the command runs in
            hub.send_to(ctx.conn_id, "aside", "working on it")
            return payload.upper()

        with ws_client(hub) as (ws1, w1), ws_client(hub) as (ws2, w2):
            ws1.send(json.dumps({"message_type": "shout", "id": 1, "payload": "hey"}))
            assert recv(ws1)["payload"] == "working on it"
            assert recv(ws1)["payload"] == "HEY"
            assert seen_threads
            assert threading.get_ident() not in seen_threads

            assert hub.broadcast("all", 1) == 2
            assert recv(ws1)["message_type"] == recv(ws2)["message_type"] == "all"
            assert hub.broadcast("not-2", 2, exclude=[w2["conn_id"]]) == 1
            assert recv(ws1)["message_type"] == "not-2"
            assert hub.send_to(w2["conn_id"], "direct", 3) == 1
            assert recv(ws2)["message_type"] == "direct"
            assert hub.send_to_principal("carol", "both", 4) == 2
            assert recv(ws1)["message_type"] == recv(ws2)["message_type"] == "both"

            hub.subscribe(w1["conn_id"], "side")
            assert hub.publish("side", 5) == 1
            assert recv(ws1)["topic"] == "side"
            hub.unsubscribe(w1["conn_id"], "side")
            assert hub.publish("side", 6) == 0

            infos = hub.connections()
            assert {i.conn_id for i in infos} == {w1["conn_id"], w2["conn_id"]}
            assert hub.stats().connections == 2

            assert hub.disconnect(w2["conn_id"], 1008, "enough") is True
            with pytest.raises(ConnectionClosed) as closed:
                ws2.recv(timeout=10)
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "enough")
    with pytest.raises(HubStoppedError):
        hub.broadcast("x", None)


def test_start_errors_are_raised_and_the_thread_is_joined(backend: str) -> None:
    with ThreadedHub.start(make_server, backend=backend) as first:
        taken = HubServer(AccessPolicy(require_auth=False), port=first.port)
        before = threading.active_count()
        with pytest.raises(OSError, match=r"[Aa]ddress already in use"):
            ThreadedHub.start(taken, backend=backend)
        assert threading.active_count() == before
        # the first hub is untouched and refuses bad tokens as usual
        with pytest.raises(InvalidStatus) as refused:
            ws_connect(first.url, additional_headers={"Authorization": "Bearer nope"}).close()
        assert refused.value.response.status_code == 401


def test_stop_from_inside_the_loop_is_refused(backend: str) -> None:
    with ThreadedHub.start(make_server, backend=backend) as hub:
        outcome: list[str] = []

        @hub.command("stop-me")
        async def stop_me(ctx: CommandContext, payload: Any) -> str:
            try:
                hub.stop()
            except RuntimeError as exc:
                outcome.append(str(exc))
            # operations called on the loop thread run directly
            return f"{hub.stats().connections} connection(s)"

        with ws_client(hub) as (ws, _):
            reply = request(ws, message_type="stop-me", id=1)
            assert reply["payload"] == "1 connection(s)"
        assert outcome
        assert "outside" in outcome[0]
        assert hub.running


def test_commands_and_topics_registered_before_launch_serve_the_first_client(
    backend: str,
) -> None:
    """Registered before ``launch``: in place before the server accepts anyone,
    so no client can meet ``unknown_command``; a factory gets them too."""
    for source in (make_server(), make_server):
        hub = ThreadedHub(source, backend=backend)
        assert not hub.running
        with pytest.raises(HubStoppedError, match="not launched"):
            hub.publish("ticks", 1)
        if source is make_server:
            with pytest.raises(HubStoppedError, match="factory"):
                _ = hub.url

        @hub.command("add")
        def add(ctx: CommandContext, payload: list[int]) -> int:
            # a plain function in a worker thread: the context's thread-safe handle
            ctx.threadsafe_hub.send_to(ctx.conn_id, "note", "adding")
            return sum(payload)

        hub.configure_topic("ticks", publish="all")  # default "none": clients could not
        with hub:  # launches
            assert hub.running
            with ws_client(hub) as (ws, _):
                ws.send(json.dumps({"message_type": "add", "id": 1, "payload": [1, 2, 3]}))
                note = recv(ws)
                assert (note["message_type"], note["payload"]) == ("note", "adding")
                reply = recv(ws)
                assert (reply["id"], reply["ok"], reply["payload"]) == (1, True, 6)
                ws.send(json.dumps({"message_type": "publish", "topic": "ticks", "id": 2}))
                reply = recv(ws)
                assert (reply["id"], reply["ok"]) == (2, True), reply
        assert not hub.running
        with pytest.raises(RuntimeError, match="launches once"):
            hub.launch()


def test_a_hub_stopped_before_launch_never_launches(backend: str) -> None:
    hub = ThreadedHub(make_server(), backend=backend)
    hub.stop()  # nothing to stop yet
    with pytest.raises(RuntimeError, match="launches once"):
        hub.launch()
    with pytest.raises(HubStoppedError):
        hub.stats()
