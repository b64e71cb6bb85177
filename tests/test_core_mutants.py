"""Behaviours that surviving mutants of the core showed no test stated
(tools/mutate_core.py finds them; each test here kills one, and says what
the code must do rather than how)."""

from __future__ import annotations

import dataclasses

import pytest
from helpers import FakeClock, client_frame, open_server, upgrade_request
from hypothesis import given, settings
from hypothesis import strategies as st
from test_core_client import client, switching
from test_core_framing import parse_frames

from wshub.core import Closed, Limits, Opened, Rejected, ServerConnection, State, TextMessage
from wshub.core.auth import Principal
from wshub.core.frames import encode_frame


def test_a_principal_is_immutable() -> None:
    """Principals are shared by every connection of a user and cached by
    verifiers: nobody may change one in place (frozen=True)."""
    principal = Principal("alice", frozenset({"read"}))
    with pytest.raises(dataclasses.FrozenInstanceError):
        principal.id = "mallory"  # type: ignore[misc]
    assert hash(principal) == hash(Principal("alice", frozenset({"read"})))


def test_frames_after_a_head_at_the_size_limit_do_not_count_as_head() -> None:
    """The response head limit counts the head, not the frames that arrived
    with it in the same read (client.py: head bytes minus h11's trailing data)."""
    frames = encode_frame(0x1, b"x" * 300)  # far more than the room left
    for room in (0, 1):
        conn, key = client(limits=Limits(max_head_size=400))
        head = switching(key)
        padded = switching(key, "X-Pad: " + "a" * (400 - len(head) - 9 - room))
        assert len(padded) == 400 - room
        conn.receive_data(padded + frames)
        assert conn.events_received() == [
            Opened(subprotocol=None, extensions=()),
            TextMessage(data="x" * 300),
        ]


def test_prepared_messages_frame_as_their_kind() -> None:
    """PreparedMessage.binary frames binary (opcode 2), .text frames text (1),
    with or without compression."""
    from wshub.core.deflate import DeflateParams
    from wshub.core.frames import Opcode, PreparedMessage

    binary = PreparedMessage.binary(bytearray(b"\x00\xff"))
    assert binary.opcode is Opcode.BINARY
    assert binary.frame() == encode_frame(0x2, b"\x00\xff")
    assert binary.frame(DeflateParams())[0] == 0x80 | 0x40 | 0x2  # FIN, RSV1, binary
    text = PreparedMessage.text("é")
    assert text.opcode is Opcode.TEXT
    assert text.frame() == encode_frame(0x1, "é".encode())
    assert text.frame(DeflateParams())[0] == 0x80 | 0x40 | 0x1


outbox_ops = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["text", "binary"]), st.integers(0, 700)),
        st.tuples(st.just("drain"), st.just(0)),
        st.tuples(st.just("close"), st.just(0)),
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(ops=outbox_ops, drain_handshake=st.booleans())
def test_outbox_accounting_holds_through_overflow_and_close(
    ops: list[tuple[str, int]], drain_handshake: bool
) -> None:
    """At every moment ``bytes_queued`` (every byte queued for the peer: the
    handshake response, messages, close frames) equals what ``data_to_send``
    handed over, plus the messages a 1013 dropped, plus ``outbox_size`` (the
    bytes ``data_to_send`` returns next). The cap counts messages only: a
    message is refused when the messages queued plus it exceed
    ``max_outbox_size``, unless no message is queued."""
    cap = 1000
    conn = ServerConnection(limits=Limits(max_outbox_size=cap), clock=FakeClock())
    conn.receive_data(upgrade_request())
    conn.events_received()
    conn.accept(None)
    handed = dropped = messages = 0
    if drain_handshake:
        handed += len(conn.data_to_send())
    assert conn.bytes_queued == handed + conn.outbox_size > 0
    for op, size in ops:
        if op == "drain":
            expected = conn.outbox_size
            data = conn.data_to_send()
            assert len(data) == expected
            handed += len(data)
            messages = 0
        elif op == "close":
            if conn.state is State.OPEN:
                conn.close(1000)
        elif conn.state is State.OPEN:
            frame = len(encode_frame(0x1 if op == "text" else 0x2, b"x" * size))
            sent = conn.send_text("x" * size) if op == "text" else conn.send_binary(b"x" * size)
            assert sent == (not messages or messages + frame <= cap)
            if sent:
                messages += frame
            else:  # closed 1013: the queued messages are gone, the close frame queued
                assert conn.state is State.CLOSED
                dropped += messages
                messages = 0
        assert conn.bytes_queued == handed + dropped + conn.outbox_size
    handed += len(conn.data_to_send())
    assert conn.outbox_size == 0
    assert conn.bytes_queued == handed + dropped


def test_a_rejection_keeps_the_first_64_kib_of_its_body() -> None:
    """A server's refusal is reported with its body, of which the client keeps
    64 KiB at most: a hostile server cannot make it hold more."""
    body = bytes(range(256)) * 400  # 100 KiB
    conn, _ = client()
    head = f"HTTP/1.1 403 Forbidden\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    conn.receive_data(head + body[:70_000])
    conn.receive_data(body[70_000:])
    [rejected, _closed] = conn.events_received()
    assert isinstance(rejected, Rejected)
    assert rejected.body == body[: 64 * 1024]


#: Limits' defaults as its docstring documents them.
DOCUMENTED_LIMITS = {
    "max_message_size": 1 << 20,
    "max_head_size": 16 * 1024,
    "max_request_line": 8 * 1024,
    "max_header_size": 8 * 1024,
    "max_header_count": 100,
    "max_outbox_size": 1 << 20,
    "handshake_timeout": 10.0,
    "ping_interval": 20.0,
    "ping_timeout": 20.0,
    "close_timeout": 10.0,
    "idle_timeout": None,
    "ping_rate": 10.0,
    "ping_burst": 50,
}


def test_limits_defaults_are_the_documented_ones() -> None:
    limits = Limits()
    assert {f.name: getattr(limits, f.name) for f in dataclasses.fields(limits)} == (
        DOCUMENTED_LIMITS
    )


def test_a_server_may_answer_with_the_smallest_window_for_its_own_messages() -> None:
    """RFC 7692 §7.1.2.1: server_max_window_bits may be 8 to 15. Our client
    inflates what the server sends with any of them; only its own compressor
    cannot use 8 (zlib), so client_max_window_bits=8 is declined."""
    from wshub.core.deflate import parse_server_response

    for bits in range(8, 16):
        params = parse_server_response([f"permessage-deflate; server_max_window_bits={bits}"])
        assert params is not None
        assert params.server_max_window_bits == bits
    for bits in ("7", "16", "08x"):
        assert parse_server_response([f"permessage-deflate; server_max_window_bits={bits}"]) is None
    assert parse_server_response(["permessage-deflate; client_max_window_bits=8"]) is None
    params = parse_server_response(["permessage-deflate; client_max_window_bits=9"])
    assert params is not None
    assert params.client_max_window_bits == 9


@settings(max_examples=200, deadline=None)
@given(
    mask=st.binary(min_size=4, max_size=4),
    code=st.sampled_from([1000, 1001, 1008, 3000, 4999]),
    reason=st.text(max_size=30).filter(lambda r: len(r.encode()) <= 123),
)
def test_a_close_frame_reads_the_same_under_any_mask(mask: bytes, code: int, reason: str) -> None:
    """RFC 6455 §5.3: the client picks any mask; the close code and reason
    the server reads are those the client sent, whatever it picked."""
    server = open_server()
    server.receive_data(client_frame(0x8, code.to_bytes(2, "big") + reason.encode(), mask=mask))
    [closed] = server.events_received()
    assert isinstance(closed, Closed)
    assert (closed.code, closed.reason, closed.clean) == (code, reason, True)


@settings(max_examples=100, deadline=None)
@given(opcode=st.sampled_from([0x1, 0x2, 0x8, 0x9, 0xA]), size=st.integers(0, 40))
def test_an_unmasked_frame_from_a_client_is_1002(opcode: int, size: int) -> None:
    """RFC 6455 §5.1: a server closes the connection on an unmasked frame,
    whatever its kind and length."""
    server = open_server()
    payload = (1000).to_bytes(2, "big") + b"r" * size if opcode == 0x8 else b"p" * size
    after = client_frame(0x1, b"never read")  # nothing after it counts
    server.receive_data(client_frame(opcode, payload, mask=None) + after)
    [closed] = server.events_received()
    assert isinstance(closed, Closed)
    assert closed.code == 1002
    frames = parse_frames(server.data_to_send())  # the close, and nothing before it
    assert [opcode for opcode, _ in frames] == [0x8]
    assert frames[0][1][:2] == (1002).to_bytes(2, "big")


def _closed_of(conn: ServerConnection) -> Closed:
    [closed] = [e for e in conn.events_received() if isinstance(e, Closed)]
    return closed


def test_the_servers_own_http_answers_end_uncleanly_with_1006() -> None:
    """A handshake the server itself refuses (a major version it does not
    speak: 505; no decision in time: 503; no request in time: 408) ends with
    Closed(1006, "HTTP <status>: <body>", clean=False): no WebSocket close
    was exchanged."""
    clock = FakeClock()
    http2 = ServerConnection(clock=clock)
    http2.receive_data(upgrade_request(version="2.0"))
    undecided = ServerConnection(clock=clock, limits=Limits(handshake_timeout=1))
    undecided.receive_data(upgrade_request())
    undecided.events_received()
    silent = ServerConnection(clock=clock, limits=Limits(handshake_timeout=1))
    clock.advance(1)
    for conn in (undecided, silent):
        conn.handle_timer()
    for conn, status in ((http2, 505), (undecided, 503), (silent, 408)):
        closed = _closed_of(conn)
        assert (closed.code, closed.clean) == (1006, False), status
        assert closed.reason.startswith(f"HTTP {status}: ")
        assert conn.data_to_send().startswith(f"HTTP/1.1 {status} ".encode())


def test_a_rejection_takes_a_final_status_and_reports_80_characters_of_its_body() -> None:
    for status in (199, 600):
        conn = ServerConnection(clock=FakeClock())
        conn.receive_data(upgrade_request())
        conn.events_received()
        with pytest.raises(ValueError, match="200-599"):
            conn.reject(status, "no")
        assert conn.state is State.DECIDING
    conn = ServerConnection(clock=FakeClock())
    conn.receive_data(upgrade_request())
    conn.events_received()
    conn.reject(599, "x" * 100)
    closed = _closed_of(conn)
    assert closed.reason == "HTTP 599: " + "x" * 80
    assert (closed.code, closed.clean) == (1006, True)
