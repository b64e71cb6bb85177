"""The hub over real sockets, behind every front door: ``HubServer`` on asyncio
and trio, ``HubApp`` under uvicorn and Hypercorn (``hub_fronts``).

Clients are this library's own anyio client speaking JSON envelopes, plus
raw-socket clients where a test needs to misbehave (stop reading).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
import pytest
from hub_fronts import QUIET_LEGACY, Front, Served, front_params, serve

from wshub.adapters import (
    ClientSession,
    CommandContext,
    CommandError,
    ConnectionClosed,
    ConnectionContext,
    HandshakeRejected,
    connect,
)
from wshub.core import Closed, Limits
from wshub.core.auth import SUBPROTOCOL, AccessPolicy, Principal, StaticTokens
from wshub.core.frames import encode_frame
from wshub.core.hub_config import HubConfig
from wshub.core.registry import ConnectionInfo

pytestmark = [pytest.mark.anyio, *QUIET_LEGACY]

ALICE, BOB, ADMIN = "alice-token", "bob-token", "admin-token"
TOKENS = StaticTokens(
    {
        ALICE: Principal("alice"),
        BOB: Principal("bob"),
        ADMIN: Principal("root", frozenset({"admin"})),
    }
)


def policy() -> AccessPolicy:
    return AccessPolicy(tokens=TOKENS)


class Client:
    """A JSON-envelope client over ``connect``; remembers its welcome."""

    def __init__(self, ws: ClientSession) -> None:
        self.ws = ws
        self.conn_id = ""
        self.principal = ""

    async def send(self, **envelope: Any) -> None:
        await self.ws.send(json.dumps(envelope))

    async def recv(self) -> dict[str, Any]:
        message = await self.ws.recv()
        assert isinstance(message, str)
        value = json.loads(message)
        assert isinstance(value, dict)
        assert isinstance(value["timestamp"], int)
        return value

    async def request(self, message_type: str, id: Any, **fields: Any) -> dict[str, Any]:
        """Send a request; its reply must be the next message."""
        await self.send(message_type=message_type, id=id, **fields)
        reply = await self.recv()
        assert (reply["message_type"], reply["id"]) == ("reply", id), reply
        return reply

    async def marker(self, server: Served, text: str) -> None:
        """Prove nothing else is queued for us: a marker sent now arrives next."""
        assert server.send_to(self.conn_id, "marker", text) == 1
        message = await self.recv()
        assert (message["message_type"], message["payload"]) == ("marker", text)


@asynccontextmanager
async def client(server: Served, token: str) -> AsyncIterator[Client]:
    async with connect(server.url, token=token, subprotocols=(SUBPROTOCOL,)) as ws:
        assert ws.subprotocol == SUBPROTOCOL
        c = Client(ws)
        welcome = await c.recv()
        assert welcome["message_type"] == "welcome"
        c.conn_id = welcome["payload"]["conn_id"]
        c.principal = welcome["payload"]["principal"]
        yield c


@pytest.fixture(params=front_params())
def front(request: pytest.FixtureRequest) -> Front:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def anyio_backend(front: Front) -> str:
    return front.backend


@pytest.fixture
def running(front: Front) -> Callable[..., AbstractAsyncContextManager[Served]]:
    """``async with running(**kwargs) as server:`` a hub behind this test's front."""

    def start(**kwargs: Any) -> AbstractAsyncContextManager[Served]:
        return serve(front, kwargs.pop("auth", policy()), **kwargs)

    return start


async def closed_with(c: Client) -> Closed:
    """Read until the connection ends; how it ended."""
    while True:
        try:
            await c.recv()
        except ConnectionClosed as exc:
            return exc.event


# -- routing -----------------------------------------------------------------


async def test_topics_broadcast_send_to_principal_and_disconnect(running: Any) -> None:
    with anyio.fail_after(10):
        async with (
            running() as server,
            client(server, ALICE) as a,
            client(server, BOB) as b,
            client(server, ALICE) as a2,
        ):
            assert (a.principal, b.principal, a2.principal) == ("alice", "bob", "alice")
            assert len({a.conn_id, b.conn_id, a2.conn_id}) == 3
            # subscribe: replies carry the topic's last seq
            for c in (a, b, a2):
                reply = await c.request("subscribe", 1, topic="news")
                assert reply["ok"] is True
                assert reply["payload"] == {
                    "topic": "news",
                    "seq": 0,
                    "epoch": server.hub.topic_epoch("news"),
                }
            assert server.stats().subscriptions == {"news": 3}

            # server-side publish: every subscriber, seq 1
            assert server.publish("news", {"headline": "one"}) == 3
            for c in (a, b, a2):
                message = await c.recv()
                assert message["message_type"] == "message"
                assert (message["topic"], message["seq"]) == ("news", 1)
                assert message["payload"] == {"headline": "one"}

            # unsubscribe: a leaves, the others get seq 2, a gets nothing
            assert (await a.request("unsubscribe", "u", topic="news"))["payload"] == {
                "topic": "news"
            }
            assert server.publish("news", "two", message_type="headline") == 2
            for c in (b, a2):
                message = await c.recv()
                assert (message["message_type"], message["seq"], message["payload"]) == (
                    "headline",
                    2,
                    "two",
                )
            await a.marker(server, "after-unsubscribe")

            # client-side publish where policy allows subscribers to publish
            server.configure_topic("chat", publish="subscribers")
            forbidden = await a.request("publish", 7, topic="chat", payload="hi")
            assert forbidden["ok"] is False
            assert forbidden["error"]["code"] == "forbidden"
            await b.request("subscribe", 2, topic="chat")
            await a2.request("subscribe", 2, topic="chat")
            await b.send(message_type="publish", id=3, topic="chat", payload={"text": "hello"})
            # the publisher is a subscriber: its copy comes first, then the reply
            for c in (b, a2):
                message = await c.recv()
                assert (message["topic"], message["seq"], message["payload"]) == (
                    "chat",
                    1,
                    {"text": "hello"},
                )
            reply = await b.recv()
            assert (reply["id"], reply["ok"]) == (3, True)
            assert reply["payload"] == {"topic": "chat", "seq": 1, "delivered": 2}
            # default topic policy: clients may not publish
            refused = await b.request("publish", 4, topic="news", payload="x")
            assert refused["error"]["code"] == "forbidden"

            # broadcast with exclude
            assert server.broadcast("notice", {"n": 1}, exclude=b.conn_id) == 2
            for c in (a, a2):
                assert (await c.recv())["payload"] == {"n": 1}
            await b.marker(server, "not-broadcast-to-b")

            # send_to and send_to_principal
            assert server.send_to(b.conn_id, "private", "for bob") == 1
            assert (await b.recv())["payload"] == "for bob"
            assert server.send_to("no-such-connection", "private", "x") == 0
            assert server.send_to_principal("alice", "mail", {"unread": 3}) == 2
            for c in (a, a2):
                assert (await c.recv())["message_type"] == "mail"
            await b.marker(server, "alice-only")
            assert server.send_to_principal("nobody", "mail", {}) == 0

            # disconnect one connection
            assert server.disconnect(a2.conn_id, 1008, "go away") is True
            event = await closed_with(a2)
            assert (event.code, event.reason) == (1008, "go away")
            assert server.disconnect(a2.conn_id) is False
            await a.marker(server, "still-here")
        with anyio.fail_after(5):
            while server.stats().connections:
                await anyio.sleep(0.01)
        stats = server.stats()
        assert stats.connections == 0
        assert dict(stats.subscriptions) == {}
        assert server.hub.footprint() == dict.fromkeys(server.hub.footprint(), 0)


async def test_publisher_gets_its_own_copy_and_seq_keeps_counting(running: Any) -> None:
    with anyio.fail_after(10):
        async with running() as server, client(server, ALICE) as a, client(server, BOB) as b:
            server.configure_topic("room", publish="all")
            await b.request("subscribe", 1, topic="room")
            await a.send(message_type="publish", topic="room", payload=1)  # no id: no reply
            await a.send(message_type="publish", topic="room", payload=2, id="p")
            assert (await a.recv())["payload"] == {"topic": "room", "seq": 2, "delivered": 1}
            assert server.publish("room", 3) == 1
            seen = [await b.recv() for _ in range(3)]
            assert [(m["seq"], m["payload"]) for m in seen] == [(1, 1), (2, 2), (3, 3)]


async def test_presence_join_and_leave(running: Any) -> None:
    events: list[Any] = []
    with anyio.fail_after(10):
        async with running(on_event=events.append) as server:
            server.configure_topic("room", presence=True)
            async with client(server, ALICE) as a:
                reply = await a.request("subscribe", 1, topic="room")
                assert reply["payload"]["present"] == [{"conn_id": a.conn_id, "principal": "alice"}]
                assert (await a.recv())["payload"]["conn_id"] == a.conn_id  # its own join
                async with client(server, BOB) as b:
                    reply = await b.request("subscribe", 1, topic="room")
                    assert [m["principal"] for m in reply["payload"]["present"]] == ["alice", "bob"]
                    joined = await a.recv()
                    assert (joined["message_type"], joined["topic"]) == ("presence", "room")
                    assert joined["payload"] == {
                        "event": "join",
                        "conn_id": b.conn_id,
                        "principal": "bob",
                    }
                left = await a.recv()
                assert left["payload"] == {
                    "event": "leave",
                    "conn_id": b.conn_id,
                    "principal": "bob",
                }
    assert [(e.principal_id, e.joined) for e in events] == [
        ("alice", True),
        ("bob", True),
        ("bob", False),
        ("alice", False),
    ]


async def test_history_and_recovery_after_a_reconnect(running: Any) -> None:
    """A client that lost its connection subscribes with ``since`` and gets exactly
    what it missed (the envelopes as sent live), then live messages."""
    with anyio.fail_after(10):
        async with running() as server:
            server.configure_topic("prices", history_size=10)
            async with client(server, ALICE) as a:
                reply = await a.request("subscribe", 1, topic="prices")
                epoch = reply["payload"]["epoch"]
                assert isinstance(epoch, str)
                assert epoch
                assert server.publish("prices", {"n": 1}) == 1
                first = await a.recv()
                assert (first["seq"], first["payload"]) == (1, {"n": 1})
            # a's connection is gone; what it misses is kept
            for n in (2, 3):
                server.publish("prices", {"n": n})
            async with client(server, ALICE) as again:
                since = {"since": {"seq": 1, "epoch": epoch}}
                reply = await again.request("subscribe", 2, topic="prices", payload=since)
                assert reply["payload"] == {
                    "topic": "prices",
                    "seq": 3,
                    "epoch": epoch,
                    "recovered": True,
                }
                missed = [await again.recv() for _ in range(2)]
                assert [(m["seq"], m["payload"]) for m in missed] == [(2, {"n": 2}), (3, {"n": 3})]
                assert server.publish("prices", {"n": 4}) == 1
                assert (await again.recv())["seq"] == 4
                # another epoch (a restarted server) is never taken for this one
                stale = {"since": {"seq": 1, "epoch": "other"}}
                reply = await again.request("subscribe", 3, topic="prices", payload=stale)
                assert reply["payload"]["recovered"] is False
                await again.marker(server, "nothing replayed")
                page = await again.request("history", 4, topic="prices", payload={"limit": 2})
                kept = page["payload"]["messages"]
                assert [(m["seq"], m["payload"]) for m in kept] == [(3, {"n": 3}), (4, {"n": 4})]
                assert kept[0] == missed[1]  # exactly the envelope sent live


# -- commands ------------------------------------------------------------------


async def test_commands_reply_fail_time_out_and_the_server_keeps_serving(
    caplog: pytest.LogCaptureFixture,
    running: Any,
) -> None:
    cancelled = anyio.Event()
    calls: list[tuple[str, str, Any]] = []

    with anyio.fail_after(10):
        async with running(config=HubConfig(default_command_timeout=5.0)) as server:

            @server.command("add")
            async def add(ctx: CommandContext, payload: list[int]) -> int:
                calls.append((ctx.conn_id, ctx.principal.id, ctx.request_id))
                assert ctx.command == "add"
                assert ctx.deadline > anyio.current_time()
                return sum(payload)

            @server.command("boom")
            async def boom(ctx: CommandContext, payload: Any) -> None:
                raise RuntimeError("secret detail in a traceback")

            @server.command("slow", timeout=0.2)
            async def slow(ctx: CommandContext, payload: Any) -> None:
                try:
                    await anyio.sleep_forever()
                finally:
                    cancelled.set()

            @server.command("refuse")
            async def refuse(ctx: CommandContext, payload: Any) -> None:
                raise CommandError("not_found", "no such document")

            @server.command("not-json")
            async def not_json(ctx: CommandContext, payload: Any) -> object:
                return object()

            @server.command("sync")
            def sync(ctx: CommandContext, payload: str) -> str:
                return payload.upper()  # runs in a worker thread

            @server.command("admin-only", scope="admin")
            async def admin_only(ctx: CommandContext, payload: Any) -> str:
                return "granted"

            @server.command("tell-others")
            async def tell_others(ctx: CommandContext, payload: Any) -> int:
                return ctx.hub.broadcast("told", payload, exclude=ctx.conn_id)

            async with client(server, ALICE) as a, client(server, ADMIN) as root:
                reply = await a.request("add", 1, payload=[1, 2, 3])
                assert (reply["ok"], reply["payload"]) == (True, 6)
                assert calls == [(a.conn_id, "alice", 1)]

                with caplog.at_level(logging.ERROR, logger="wshub.hub"):
                    failed = await a.request("boom", "b")
                assert failed["ok"] is False
                assert failed["payload"] is None
                assert failed["error"]["code"] == "command_failed"
                assert "secret" not in json.dumps(failed)
                records = [r for r in caplog.records if "boom" in r.getMessage()]
                assert records, caplog.records
                assert records[0].conn_id == a.conn_id  # type: ignore[attr-defined]
                assert a.conn_id in records[0].getMessage()
                assert records[0].exc_info is not None

                timed_out = await a.request("slow", 2)
                assert timed_out["error"]["code"] == "command_timeout"
                await cancelled.wait()

                refused = await a.request("refuse", 3)
                assert refused["error"] == {"code": "not_found", "message": "no such document"}
                assert (await a.request("not-json", 4))["error"]["code"] == "command_failed"
                assert (await a.request("sync", 5, payload="quiet"))["payload"] == "QUIET"
                unknown = await a.request("no-such-command", 6)
                assert unknown["error"]["code"] == "unknown_command"
                assert (await a.request("admin-only", 7))["error"]["code"] == "forbidden"
                assert (await root.request("admin-only", 7))["payload"] == "granted"
                assert (await root.request("tell-others", 8, payload="psst"))["payload"] == 1
                assert (await a.recv())["payload"] == "psst"

                # after all that, the server still serves
                assert (await a.request("add", 9, payload=[40, 2]))["payload"] == 42
            stats = server.stats()
            assert stats.commands == 9  # unknown and forbidden ones never ran
            assert stats.errors_by_code["command_failed"] == 2
            assert stats.errors_by_code["command_timeout"] == 1


async def test_concurrent_commands_reply_out_of_order(running: Any) -> None:
    with anyio.fail_after(10):
        async with running() as server, client(server, ALICE) as a:
            release = anyio.Event()

            @server.command("wait")
            async def wait(ctx: CommandContext, payload: Any) -> str:
                await release.wait()
                return "waited"

            @server.command("now")
            async def now(ctx: CommandContext, payload: Any) -> str:
                release.set()
                return "now"

            await a.send(message_type="wait", id=1)
            await a.send(message_type="now", id=2)
            first, second = await a.recv(), await a.recv()
            assert (first["id"], first["payload"]) == (2, "now")
            assert (second["id"], second["payload"]) == (1, "waited")


async def test_closing_connection_cancels_its_commands(running: Any) -> None:
    started, cancelled = anyio.Event(), anyio.Event()
    with anyio.fail_after(10):
        async with running() as server:

            @server.command("hang")
            async def hang(ctx: CommandContext, payload: Any) -> None:
                started.set()
                try:
                    await anyio.sleep_forever()
                finally:
                    cancelled.set()

            async with client(server, ALICE) as a:
                await a.send(message_type="hang", id=1)
                await started.wait()
            await cancelled.wait()
            assert server.stats().pending_commands == 0


async def test_shutdown_answers_pending_commands_and_closes_1001(running: Any) -> None:
    started = anyio.Event()
    with anyio.fail_after(10):
        async with running() as server:

            @server.command("hang")
            async def hang(ctx: CommandContext, payload: Any) -> None:
                started.set()
                await anyio.sleep_forever()

            async with client(server, ALICE) as a, client(server, BOB) as b:
                await a.send(message_type="hang", id="h")
                await started.wait()
                server.shutdown()
                reply = await a.recv()
                assert reply["error"]["code"] == "shutting_down"
                for c in (a, b):
                    event = await closed_with(c)
                    assert event.code == 1001
            if not server.front.native:
                # The ASGI server goes on; the hub refuses new connections.
                with pytest.raises(HandshakeRejected) as refused:
                    async with connect(server.url, token=ALICE):
                        pass
                assert refused.value.status == 503
                return
        # serve returned: the task group ended by itself
        with pytest.raises(OSError, match="connection attempts failed"):
            async with connect(server.url, token=ALICE):
                pass


# -- abuse ---------------------------------------------------------------------


async def test_malformed_envelopes_get_error_codes_then_1008(running: Any) -> None:
    with anyio.fail_after(10):
        async with (
            running(config=HubConfig(max_errors=4)) as server,
            client(server, ALICE) as a,
            client(server, BOB) as b,
        ):
            await a.ws.send("{not json")
            assert (await a.recv())["error"]["code"] == "invalid_json"
            await a.ws.send("[1, 2]")
            error = await a.recv()
            assert (error["message_type"], error["error"]["code"]) == ("error", "invalid_envelope")
            await a.send(message_type="frobnicate")
            assert (await a.recv())["error"]["code"] == "unknown_message_type"
            await a.send(message_type="subscribe", id=1)  # no topic
            assert (await a.recv())["error"]["code"] == "invalid_envelope"
            await a.send(
                message_type="x",
                id=2,
                payload=[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],
            )
            assert (await a.recv())["error"]["code"] == "payload_too_deep"
            event = await closed_with(a)
            assert (event.code, event.reason) == (1008, "too many invalid messages")
            # other connections are not affected
            await b.marker(server, "unaffected")
            assert server.stats().policy_closes == 1


async def test_invalid_utf8_and_unmasked_frames_end_the_connection_alone(
    raw_client: Any, running: Any
) -> None:
    """Frames the hub never sees: invalid UTF-8 in a text frame and an unmasked
    client frame end that connection, with 1007 and 1002 where the parser
    sends a close frame (our core, uvicorn's websockets implementations), and
    without one behind the servers built on wsproto (README's table); the
    other connections go on."""
    auth = (("Authorization", f"Bearer {BOB}"),)
    bad = (
        (1007, encode_frame(0x1, b'"\xff"', mask=b"abcd")),
        (1002, encode_frame(0x1, b'"x"')),  # no mask
    )
    with anyio.fail_after(30):
        async with running() as server, client(server, ALICE) as a:
            for code, frame in bad:
                async with raw_client(server.port) as raw:
                    await raw.handshake(headers=auth)
                    await raw.send(frame)
                    if server.front.closes_protocol_errors:
                        assert (await raw.recv_close())[0] == code
                    else:
                        with pytest.raises(EOFError):
                            await raw.recv_close()
                await a.marker(server, f"after {code}")
            while server.stats().connections != 1:
                await anyio.sleep(0.01)


async def test_binary_without_handler_closes_1003(running: Any) -> None:
    with anyio.fail_after(10):
        async with running() as server, client(server, ALICE) as a, client(server, BOB) as b:
            await a.ws.send(b"\x00\x01")
            event = await closed_with(a)
            assert event.code == 1003
            await b.marker(server, "fine")


async def test_binary_handler_receives_bytes_in_order(running: Any) -> None:
    got: list[tuple[str, bytes]] = []
    with anyio.fail_after(10):
        async with running() as server:

            @server.binary
            async def on_binary(ctx: ConnectionContext, data: bytes) -> None:
                got.append((ctx.principal.id, data))
                ctx.hub.send_to(ctx.conn_id, "binary-ack", len(data))

            async with client(server, BOB) as b:
                for blob in (b"one", b"", b"\xff" * 1000):
                    await b.ws.send(blob)
                assert [(await b.recv())["payload"] for _ in range(3)] == [3, 0, 1000]
        assert got == [("bob", b"one"), ("bob", b""), ("bob", b"\xff" * 1000)]


# -- slow consumers --------------------------------------------------------------


async def test_slow_consumer_is_closed_1013_others_get_everything(
    raw_client: Any, running: Any
) -> None:
    cap = 128 * 1024
    blob = "x" * (16 * 1024)
    closed: dict[str, Closed] = {}

    def on_disconnect(info: ConnectionInfo, event: Closed) -> None:
        closed[info.conn_id] = event

    with anyio.fail_after(30):
        async with (
            running(
                limits=Limits(max_outbox_size=cap),
                slow_consumer_grace=0.2,
                on_disconnect=on_disconnect,
            ) as server,
            client(server, ALICE) as a,
            client(server, BOB) as b,
        ):
            async with raw_client(server.port) as slow:
                await slow.handshake(headers=(("Authorization", f"Bearer {BOB}"),))
                # ... and never reads again.
                sent = 0
                while server.stats().slow_consumer_closes == 0:
                    assert sent < 5000, "the slow consumer was never closed"
                    for _ in range(4):
                        count = server.broadcast("bulk", {"i": sent, "blob": blob})
                        assert count in (2, 3)
                        sent += 1
                    for c in (a, b):
                        for i in range(sent - 4, sent):
                            message = await c.recv()
                            assert message["payload"] == {"i": i, "blob": blob}
                    assert server.hub.stats().outbox_high_water <= cap
                # the others keep getting everything, the slow one is gone
                assert server.broadcast("after", None) == 2
                for c in (a, b):
                    assert (await c.recv())["message_type"] == "after"
                assert server.stats().connections == 2
                assert [e.code for e in closed.values()] == [1013]
                # its transport is dropped after the grace period: what the
                # kernel already holds drains, then EOF (no close frame: the
                # peer never read far enough to reach it). uvicorn's wsproto
                # and websockets-sansio wait 10 s for the peer's close frame.
                if not server.front.holds_closed_transport:
                    await slow.read_to_eof()
                if not server.front.native:
                    # The app is done with it (the socket is the ASGI server's).
                    while server.sessions != 2:
                        await anyio.sleep(0.01)
            stats = server.stats()
            assert stats.slow_consumer_closes == 1
            assert stats.outbox_high_water <= cap


async def test_drop_topic_skips_for_a_reader_that_stalls_and_announces_every_gap(
    raw_client: Any, running: Any
) -> None:
    """A ``drop`` topic: a subscriber that stops reading is skipped, not closed;
    once it reads again every missing ``seq`` is announced by a ``dropped``
    count before the next message it gets (never a silent gap)."""
    cap = 128 * 1024
    blob = "x" * (16 * 1024)
    with anyio.fail_after(60):
        async with running(limits=Limits(max_outbox_size=cap), slow_consumer_grace=0.2) as server:
            server.configure_topic("ticks", slow_consumer="drop")
            async with raw_client(server.port) as slow:
                await slow.handshake(headers=(("Authorization", f"Bearer {BOB}"),))
                request = {"message_type": "subscribe", "topic": "ticks", "id": 1}
                await slow.send_frame(0x1, json.dumps(request).encode())
                while True:  # the welcome, then the reply
                    _, _, opcode, data = await slow.recv_frame()
                    if opcode == 0x1 and json.loads(data)["message_type"] == "reply":
                        break
                # ... and it stops reading.
                sent = 0
                while server.stats().drops == 0:
                    assert sent < 5000, "nothing was ever dropped"
                    for _ in range(4):
                        server.publish("ticks", {"i": sent, "blob": blob}, droppable=True)
                        sent += 1
                    await anyio.sleep(0.001)
                assert server.stats().outbox_high_water <= cap
                assert server.stats().slow_consumer_closes == 0
                assert server.stats().connections == 1

                events: list[tuple[str, int]] = []  # ("message", seq) or ("dropped", count)
                seen_final = anyio.Event()

                async def read() -> None:
                    while True:
                        _, _, opcode, data = await slow.recv_frame()
                        assert opcode != 0x8, f"closed: {data!r}"
                        if opcode != 0x1:
                            continue  # a keepalive ping of the ASGI server
                        envelope = json.loads(data)
                        if envelope["message_type"] == "dropped":
                            assert envelope["topic"] == "ticks"
                            events.append(("dropped", envelope["payload"]["count"]))
                        else:
                            assert envelope["message_type"] == "message", envelope
                            events.append(("message", envelope["seq"]))
                            if envelope["payload"] == "final":
                                seen_final.set()
                                return

                async with anyio.create_task_group() as tg:
                    tg.start_soon(read)
                    while not seen_final.is_set():  # until one gets through with its notice
                        server.publish("ticks", "final", droppable=True)
                        with anyio.move_on_after(0.05):
                            await seen_final.wait()
            expected = 1
            for kind, value in events:
                if kind == "dropped":
                    assert value >= 1
                    expected += value
                else:
                    assert value == expected, events
                    expected += 1
            announced = sum(value for kind, value in events if kind == "dropped")
            assert 1 <= announced <= server.stats().drops
            assert server.stats().slow_consumer_closes == 0


# -- admission -----------------------------------------------------------------


async def test_connection_limits_refused_at_handshake(raw_client: Any, running: Any) -> None:
    config = HubConfig(max_connections=3, max_per_principal=2, retry_after=7)
    auth = [("Authorization", f"Bearer {ALICE}")]
    with anyio.fail_after(10):
        async with running(config=config) as server:
            async with client(server, ALICE), client(server, ALICE):
                async with raw_client(server.port) as raw:
                    headers = await raw.handshake(headers=tuple(auth), expect=429)
                    assert headers["retry-after"] == "7"
                async with client(server, BOB):
                    async with raw_client(server.port) as raw:
                        headers = await raw.handshake(
                            headers=(("Authorization", f"Bearer {ADMIN}"),), expect=503
                        )
                        assert headers["retry-after"] == "7"
                    with pytest.raises(HandshakeRejected) as rejected:
                        async with connect(server.url, token=BOB):
                            pass
                    assert rejected.value.status == 503
            # once they left, there is room again
            with anyio.fail_after(5):
                while server.stats().connections:
                    await anyio.sleep(0.01)
            async with client(server, ALICE), client(server, ALICE):
                pass


async def test_authentication_failures_and_async_authenticator(
    raw_client: Any, running: Any
) -> None:
    class Async:
        async def authenticate(self, request: Any) -> Principal:
            await anyio.sleep(0)
            return Principal(f"guest-{request.path}")

    with anyio.fail_after(10):
        async with running() as server:
            with pytest.raises(HandshakeRejected) as rejected:
                async with connect(server.url):
                    pass
            assert rejected.value.status == 401
            with pytest.raises(HandshakeRejected) as rejected:
                async with connect(server.url, token="wrong"):
                    pass
            assert rejected.value.status == 401
        async with running(auth=Async()) as server, client(server, "ignored") as c:
            assert c.principal == "guest-/"


# -- HTTP ----------------------------------------------------------------------


async def get(raw_client: Any, port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    async with raw_client(port) as raw:
        await raw.send(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        result: tuple[int, dict[str, str], bytes] = await raw.read_response()
        return result


async def test_metrics_health_and_426(raw_client: Any, running: Any) -> None:
    with anyio.fail_after(10):
        async with running(metrics=True) as server, client(server, ALICE) as a:
            await a.request("subscribe", 1, topic="news")
            status, headers, body = await get(raw_client, server.port, "/metrics")
            assert status == 200
            assert headers["content-type"].startswith("text/plain; version=0.0.4")
            text = body.decode()
            assert "# TYPE wshub_connections gauge" in text
            assert "\nwshub_connections 1\n" in text
            assert 'wshub_topic_subscribers{topic="news"} 1' in text
            assert (await get(raw_client, server.port, "/healthz"))[0] == 200
            assert (await get(raw_client, server.port, "/"))[0] == 426
        async with running() as server:  # metrics off by default
            assert (await get(raw_client, server.port, "/metrics"))[0] == 426
