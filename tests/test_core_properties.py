"""Properties of the connection core, checked with hypothesis:

* chunking invariance: how the input bytes are split never changes the events
  nor the bytes written back;
* round trip: any message sequence, either way, fragmented and compressed or
  not, arrives whole and in order, and a close from either side ends both
  ends with matching ``Closed`` events;
* robustness: arbitrary bytes and actions in any state never raise anything
  but the documented misuse errors, and yield at most one ``Closed`` (exactly
  one once EOF is fed).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from helpers import (
    ConnectionPair,
    CountingRandom,
    FakeClock,
    client_frame,
    close_payload,
    closed_events,
    upgrade_request,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wshub.core import (
    BinaryMessage,
    Closed,
    Event,
    HandshakeRequest,
    HttpRequest,
    Limits,
    LocalProtocolError,
    Opened,
    ServerConnection,
    State,
    TextMessage,
)
from wshub.core.deflate import DeflateParams, compress_message
from wshub.core.events import Side
from wshub.core.frames import Opcode, encode_frame

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

DEFLATE_OFFER = ("Sec-WebSocket-Extensions", "permessage-deflate")


@dataclass(frozen=True)
class Msg:
    text: bool
    payload: bytes
    fragments: int
    compressed: bool

    @property
    def event(self) -> Event:
        if self.text:
            return TextMessage(data=self.payload.decode("utf-8"))
        return BinaryMessage(data=self.payload)


@st.composite
def messages(draw: st.DrawFn, *, compressed: bool) -> Msg:
    text = draw(st.booleans())
    if text:
        payload = draw(st.text(max_size=300)).encode("utf-8")
        payload *= draw(st.sampled_from([1, 1, 10]))
    else:
        payload = draw(st.binary(max_size=3000))
    return Msg(
        text=text,
        payload=payload,
        fragments=draw(st.integers(1, 4)),
        compressed=compressed and draw(st.booleans()),
    )


def frames_of(
    msg: Msg,
    *,
    mask: bytes | None,
    params: DeflateParams | None,
    client: bool,
) -> bytes:
    """Wire frames for ``msg``, split into ``msg.fragments`` frames."""
    data = msg.payload
    if msg.compressed:
        assert params is not None
        data = compress_message(data, params, client=client)
    n = msg.fragments
    size = -(-len(data) // n) if data else 0
    pieces = [data[i * size : (i + 1) * size] for i in range(n)] if size else [b""] * n
    out = b""
    for i, piece in enumerate(pieces):
        opcode = (Opcode.TEXT if msg.text else Opcode.BINARY) if i == 0 else Opcode.CONTINUATION
        out += encode_frame(
            opcode, piece, fin=i == n - 1, rsv1=msg.compressed and i == 0, mask=mask
        )
    return out


def drive(
    chunks: list[bytes], *, compression: bool, limits: Limits | None = None
) -> tuple[list[Event], bytes]:
    """Feed ``chunks`` to a fresh server that accepts any upgrade; return all
    events and all bytes it wrote."""
    server = ServerConnection(
        compression=compression, limits=limits, clock=FakeClock(), random=CountingRandom()
    )
    events: list[Event] = []
    out = b""
    for chunk in chunks:
        server.receive_data(chunk)
        new = server.events_received()
        events += new
        if any(isinstance(e, HandshakeRequest) for e in new) and server.state is State.DECIDING:
            server.accept("p")
            events += server.events_received()
        out += server.data_to_send()
    server.receive_eof()
    events += server.events_received()
    out += server.data_to_send()
    return events, out


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@st.composite
def client_streams(draw: st.DrawFn) -> tuple[bytes, bool]:
    compression = draw(st.booleans())
    msgs = draw(st.lists(messages(compressed=compression), max_size=6))
    params = DeflateParams() if compression else None
    stream = upgrade_request(extra=[DEFLATE_OFFER] if compression else [])
    for msg in msgs:
        if draw(st.booleans()):
            stream += client_frame(0x9, draw(st.binary(max_size=20)))
        stream += frames_of(msg, mask=b"\x11\x22\x33\x44", params=params, client=True)
    ending = draw(st.sampled_from(["none", "close", "junk", "text"]))
    if ending == "text":  # a text message of arbitrary bytes: often invalid UTF-8
        payload = (
            draw(st.text(max_size=20)).encode("utf-8")
            + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xe2\x82", b""]))
            + draw(st.binary(max_size=20))
        )
        bad = Msg(text=True, payload=payload, fragments=draw(st.integers(1, 3)), compressed=False)
        stream += frames_of(bad, mask=b"\x01\x02\x03\x04", params=None, client=True)
    elif ending == "close":
        stream += client_frame(0x8, close_payload(1000, b"bye"))
    elif ending == "junk":
        stream += draw(st.binary(min_size=1, max_size=64))
    return stream, compression


@SETTINGS
@given(client_streams(), st.lists(st.integers(0, 1 << 16), max_size=12))
def test_chunking_invariance(stream_and_mode: tuple[bytes, bool], cuts: list[int]) -> None:
    stream, compression = stream_and_mode
    limits = Limits(max_message_size=4000)
    whole = drive([stream], compression=compression, limits=limits)
    assert drive(split(stream, cuts), compression=compression, limits=limits) == whole
    assert whole[0][0].__class__ is HandshakeRequest
    assert len(closed_events(whole[0])) == 1


@settings(SETTINGS, max_examples=25)
@given(client_streams())
def test_chunking_invariance_byte_by_byte(stream_and_mode: tuple[bytes, bool]) -> None:
    stream, compression = stream_and_mode
    limits = Limits(max_message_size=4000)
    whole = drive([stream], compression=compression, limits=limits)
    bytewise = [stream[i : i + 1] for i in range(len(stream))]
    assert drive(bytewise, compression=compression, limits=limits) == whole


@SETTINGS
@given(st.binary(max_size=600), st.lists(st.integers(0, 1000), max_size=8), st.booleans())
def test_chunking_invariance_on_arbitrary_bytes(
    junk: bytes, cuts: list[int], after_handshake: bool
) -> None:
    stream = (upgrade_request() if after_handshake else b"") + junk
    whole = drive([stream], compression=True, limits=Limits(max_head_size=300))
    assert drive(split(stream, cuts), compression=True, limits=Limits(max_head_size=300)) == whole


@st.composite
def conversations(draw: st.DrawFn) -> tuple[bool, list[tuple[str, Msg]], str, int]:
    compression = draw(st.booleans())
    ops = draw(
        st.lists(
            st.tuples(st.sampled_from(["c2s", "s2c"]), messages(compressed=compression)),
            max_size=8,
        )
    )
    closer = draw(st.sampled_from(["client", "server"]))
    code = draw(st.sampled_from([1000, 1001, 1011, 1013, 3000, 4999]))
    return compression, ops, closer, code


@SETTINGS
@given(conversations(), st.text(max_size=40))
def test_round_trip_in_memory(
    conversation: tuple[bool, list[tuple[str, Msg]], str, int], reason: str
) -> None:
    compression, ops, closer, code = conversation
    pair = ConnectionPair(compression=compression)
    assert (pair.server.deflate is not None) == compression
    assert (pair.client.deflate is not None) == compression
    assert [type(e) for e in pair.client_events + pair.server_events] == [Opened, Opened]
    pair.client_events.clear()
    pair.server_events.clear()
    expected_client: list[Event] = []
    expected_server: list[Event] = []
    masks = CountingRandom(3)
    for direction, msg in ops:
        sender, receiver = (
            (pair.client, pair.server) if direction == "c2s" else (pair.server, pair.client)
        )
        if msg.fragments == 1 and msg.compressed == compression:
            # The public API: one frame, compressed when negotiated.
            if msg.text:
                assert sender.send_text(msg.payload.decode("utf-8"))
            else:
                assert sender.send_binary(msg.payload)
        else:
            # Hand-made fragments (the API does not fragment) go on the wire
            # after whatever the sender has queued.
            pair.pump()
            frames = frames_of(
                msg,
                mask=masks(4) if direction == "c2s" else None,
                params=sender.deflate,
                client=direction == "c2s",
            )
            receiver.receive_data(frames)
        (expected_server if direction == "c2s" else expected_client).append(msg.event)
    reason = reason.encode("utf-8")[:123].decode("utf-8", "ignore")
    (pair.client if closer == "client" else pair.server).close(code, reason)
    pair.pump()
    client_closed = closed_events(pair.client_events)
    server_closed = closed_events(pair.server_events)
    assert pair.server_events[:-1] == expected_server
    assert pair.client_events[:-1] == expected_client
    assert len(client_closed) == len(server_closed) == 1
    local, remote = (
        (client_closed[0], server_closed[0])
        if closer == "client"
        else (server_closed[0], client_closed[0])
    )
    assert remote == Closed(code=code, reason=reason, clean=True, initiator=Side.REMOTE)
    assert local.code == code
    assert local.clean
    assert local.initiator is Side.LOCAL
    assert pair.client.state is State.CLOSED
    assert pair.server.state is State.CLOSED


# -- arbitrary input and actions ------------------------------------------

_frame_bits = st.one_of(
    st.binary(max_size=40),
    st.builds(
        client_frame,
        st.sampled_from([0x0, 0x1, 0x2, 0x8, 0x9, 0xA, 0x3]),
        st.binary(max_size=30),
        fin=st.booleans(),
        rsv1=st.booleans(),
    ),
    st.builds(lambda c: client_frame(0x8, close_payload(c)), st.integers(0, 5000)),
    st.just(upgrade_request()),
    st.just(upgrade_request(extra=[DEFLATE_OFFER])),
    st.just(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"),
)

_actions = st.one_of(
    st.tuples(st.just("data"), _frame_bits),
    st.tuples(st.just("eof"), st.none()),
    st.tuples(st.just("timer"), st.floats(0, 30)),
    st.tuples(st.just("accept"), st.sampled_from([None, "chat"])),
    st.tuples(st.just("reject"), st.sampled_from([400, 403, 101])),
    st.tuples(st.just("respond"), st.sampled_from([200, 404])),
    st.tuples(st.just("send"), st.sampled_from(["text", "binary", "big"])),
    st.tuples(st.just("close"), st.sampled_from([1000, 1005, 4000])),
    st.tuples(st.just("drain"), st.none()),
)

_MISUSE = (LocalProtocolError, ValueError)


def _act(conn: ServerConnection, clock: FakeClock, action: str, arg: object) -> None:
    if action == "data":
        assert isinstance(arg, bytes)
        conn.receive_data(arg)
    elif action == "eof":
        conn.receive_eof()
    elif action == "timer":
        assert isinstance(arg, float)
        clock.advance(arg)
        conn.handle_timer(clock.now)
    elif action == "accept":
        conn.accept("p", subprotocol=arg)  # type: ignore[arg-type]
    elif action == "reject":
        conn.reject(arg, "no")  # type: ignore[arg-type]
    elif action == "respond":
        conn.respond(arg, body=b"ok")  # type: ignore[arg-type]
    elif action == "send":
        if arg == "text":
            conn.send_text("hello")
        elif arg == "binary":
            conn.send_binary(b"\x00" * 100)
        else:
            conn.send_binary(b"\x01" * 3000)
    elif action == "close":
        conn.close(arg, "bye")  # type: ignore[arg-type]
    else:
        conn.data_to_send()


@settings(SETTINGS, max_examples=300)
@given(st.lists(_actions, max_size=25), st.booleans())
def test_any_sequence_ends_in_at_most_one_closed(
    actions: list[tuple[str, object]], compression: bool
) -> None:
    clock = FakeClock()
    limits = Limits(
        max_message_size=2000,
        max_outbox_size=4000,
        ping_interval=5,
        ping_timeout=5,
        handshake_timeout=20,
        close_timeout=5,
        idle_timeout=25,
        max_head_size=400,
    )
    conn = ServerConnection(
        limits=limits, compression=compression, clock=clock, random=CountingRandom()
    )
    events: list[Event] = []
    for action, arg in actions:
        before = (conn.state, conn.outbox_size)
        try:
            _act(conn, clock, action, arg)
        except _MISUSE:
            # Misuse raises at once and changes nothing.
            assert (conn.state, conn.outbox_size) == before
            assert conn.events_received() == []
        new = conn.events_received()
        if events and isinstance(events[-1], Closed):
            assert new == [], "events after Closed"
        events += new
        assert len(closed_events(events)) <= 1
        if conn.state is State.CLOSED:
            assert conn.next_deadline() is None
            assert len(closed_events(events)) == 1
            assert isinstance(events[-1], Closed)
    conn.receive_eof()
    conn.receive_eof()
    events += conn.events_received()
    assert len(closed_events(events)) == 1
    assert isinstance(events[-1], Closed)
    assert conn.state is State.CLOSED
    assert conn.should_close_transport()
    handshake = [e for e in events if isinstance(e, HandshakeRequest | HttpRequest)]
    assert len(handshake) <= 1


@settings(SETTINGS, max_examples=200)
@given(
    st.sampled_from(["fresh", "deciding", "open", "open-deflate", "closing", "http"]),
    st.lists(st.binary(), max_size=5),
)
def test_server_never_raises_on_arbitrary_bytes(phase: str, chunks: list[bytes]) -> None:
    conn = ServerConnection(compression=True, clock=FakeClock(), random=CountingRandom())
    if phase == "http":
        conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    elif phase != "fresh":
        conn.receive_data(upgrade_request(extra=[DEFLATE_OFFER] if phase == "open-deflate" else []))
        if phase != "deciding":
            conn.accept()
        if phase == "closing":
            conn.close()
    conn.events_received()
    for chunk in chunks:
        conn.receive_data(chunk)
    conn.receive_eof()
    events = conn.events_received()
    assert len(closed_events(events)) == 1
    assert isinstance(events[-1], Closed)


@st.composite
def compressed_text_streams(draw: st.DrawFn) -> bytes:
    """Compressed text messages of arbitrary bytes (often invalid UTF-8, often
    too big), sometimes with a new message started inside a fragmented one."""
    params = DeflateParams()
    stream = upgrade_request(extra=[DEFLATE_OFFER])
    for _ in range(draw(st.integers(1, 3))):
        payload = draw(st.binary(max_size=200)) * draw(st.sampled_from([1, 5, 40]))
        msg = Msg(text=True, payload=payload, fragments=draw(st.integers(1, 3)), compressed=True)
        frames = frames_of(msg, mask=b"\x0f\x0e\x0d\x0c", params=params, client=True)
        if draw(st.booleans()):
            frames = frames[: draw(st.integers(0, len(frames)))]  # cut: next one interleaves
        stream += frames
    return stream


@SETTINGS
@given(compressed_text_streams(), st.lists(st.integers(0, 1 << 16), max_size=12))
def test_chunking_invariance_compressed_text(stream: bytes, cuts: list[int]) -> None:
    limits = Limits(max_message_size=1000)
    whole = drive([stream], compression=True, limits=limits)
    assert drive(split(stream, cuts), compression=True, limits=limits) == whole


@settings(SETTINGS, max_examples=150)
@given(
    st.sampled_from(["raw", "open", "open-deflate"]),
    st.lists(st.binary(max_size=200), max_size=5),
    st.booleans(),
)
def test_client_never_raises_on_arbitrary_bytes(
    phase: str, chunks: list[bytes], close_first: bool
) -> None:
    pair = ConnectionPair(compression=phase == "open-deflate", accept=phase != "raw")
    client = pair.client
    events = list(pair.client_events)
    if phase != "raw" and close_first:
        client.close(1000)
    for chunk in chunks:
        client.receive_data(chunk)
        events += client.events_received()
    client.receive_eof()
    events += client.events_received()
    assert len(closed_events(events)) == 1
    assert isinstance(events[-1], Closed)
