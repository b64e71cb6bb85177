"""Framing after the handshake (RFC 6455 §5, §7): messages, control frames,
protocol errors and the closing handshake, seen from the server."""

from __future__ import annotations

import pytest
from helpers import client_frame, close_payload, open_server
from hypothesis import given, settings
from hypothesis import strategies as st

from wshub.core import (
    BinaryMessage,
    Closed,
    ConnectionClosedError,
    PreparedMessage,
    ServerConnection,
    State,
    TextMessage,
)
from wshub.core.events import Side
from wshub.core.frames import Opcode, encode_frame, mask_payload

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


def parse_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Decode unmasked server frames (opcode, payload) independently of the core."""
    out = []
    i = 0
    while i < len(data):
        opcode = data[i] & 0x0F
        length = data[i + 1] & 0x7F
        assert not data[i + 1] & 0x80, "server frames must not be masked"
        i += 2
        if length == 126:
            length = int.from_bytes(data[i : i + 2], "big")
            i += 2
        elif length == 127:
            length = int.from_bytes(data[i : i + 8], "big")
            i += 8
        out.append((opcode, data[i : i + length]))
        i += length
    return out


def failed_with(conn: ServerConnection, code: int) -> Closed:
    """The server failed the connection with ``code``: close frame sent, one Closed."""
    events = conn.events_received()
    closed = [e for e in events if isinstance(e, Closed)]
    assert len(closed) == 1, events
    assert events[-1] is closed[0]
    assert closed[0].code == code, closed[0]
    assert closed[0].initiator is Side.LOCAL
    assert not closed[0].clean
    frames = parse_frames(conn.data_to_send())
    assert frames[-1][0] == CLOSE
    assert int.from_bytes(frames[-1][1][:2], "big") == code
    assert conn.state is State.CLOSED
    assert conn.should_close_transport()
    return closed[0]


def test_text_and_binary_messages() -> None:
    conn = open_server()
    conn.receive_data(client_frame(TEXT, "héllo".encode()) + client_frame(BINARY, b"\x00\xff"))
    assert conn.events_received() == [TextMessage(data="héllo"), BinaryMessage(data=b"\x00\xff")]


def test_empty_messages() -> None:
    conn = open_server()
    conn.receive_data(client_frame(TEXT, b"") + client_frame(BINARY, b""))
    assert conn.events_received() == [TextMessage(data=""), BinaryMessage(data=b"")]


def test_fragments_are_reassembled_with_control_frames_between() -> None:
    conn = open_server()
    conn.receive_data(
        client_frame(TEXT, b"hel", fin=False)
        + client_frame(PING, b"p1")
        + client_frame(CONT, b"l", fin=False)
        + client_frame(PONG, b"unsolicited")
        + client_frame(CONT, b"o")
        + client_frame(BINARY, b"a", fin=False)
        + client_frame(CONT, b"b")
    )
    assert conn.events_received() == [TextMessage(data="hello"), BinaryMessage(data=b"ab")]
    assert parse_frames(conn.data_to_send()) == [(PONG, b"p1")]


def test_ping_is_answered_with_same_payload() -> None:
    conn = open_server()
    conn.receive_data(client_frame(PING, b"") + client_frame(PING, b"x" * 125))
    assert conn.events_received() == []
    assert parse_frames(conn.data_to_send()) == [(PONG, b""), (PONG, b"x" * 125)]


def test_unsolicited_pong_is_ignored() -> None:
    conn = open_server()
    conn.receive_data(client_frame(PONG, b"whatever"))
    assert conn.events_received() == []
    assert conn.data_to_send() == b""
    assert conn.state is State.OPEN


def test_invalid_utf8_is_1007() -> None:
    conn = open_server()
    conn.receive_data(client_frame(TEXT, b"ok\xff"))
    failed_with(conn, 1007)


def test_utf8_character_split_across_fragments_is_fine() -> None:
    conn = open_server()
    euro = "€".encode()
    conn.receive_data(client_frame(TEXT, euro[:1], fin=False) + client_frame(CONT, euro[1:]))
    assert conn.events_received() == [TextMessage(data="€")]


def test_invalid_utf8_split_across_fragments_is_1007() -> None:
    conn = open_server()
    euro = "€".encode()
    conn.receive_data(client_frame(TEXT, b"a" + euro[:2], fin=False))
    assert conn.events_received() == []
    conn.receive_data(client_frame(CONT, b"b"))
    failed_with(conn, 1007)


def test_truncated_utf8_at_message_end_is_1007() -> None:
    conn = open_server()
    conn.receive_data(client_frame(TEXT, "€".encode()[:2]))
    failed_with(conn, 1007)


@pytest.mark.parametrize("first", [0xC1, 0xA1, 0x91])  # RSV1, RSV2, RSV3 set
def test_reserved_bits_are_1002(first: int) -> None:
    conn = open_server()
    conn.receive_data(bytes([first, 0x80 | 1]) + b"\x00\x00\x00\x00" + b"a")
    failed_with(conn, 1002)


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_reserved_opcodes_are_1002(opcode: int) -> None:
    conn = open_server()
    conn.receive_data(client_frame(opcode, b"a"))
    failed_with(conn, 1002)


def test_unmasked_client_frame_is_1002() -> None:
    conn = open_server()
    conn.receive_data(encode_frame(TEXT, b"hi"))
    failed_with(conn, 1002)


def test_continuation_without_start_is_1002() -> None:
    conn = open_server()
    conn.receive_data(client_frame(CONT, b"x"))
    failed_with(conn, 1002)


def test_new_message_inside_fragmented_one_is_1002() -> None:
    conn = open_server()
    conn.receive_data(client_frame(TEXT, b"a", fin=False) + client_frame(TEXT, b"b"))
    failed_with(conn, 1002)


def test_fragmented_control_frame_is_1002() -> None:
    conn = open_server()
    conn.receive_data(client_frame(PING, b"a", fin=False))
    failed_with(conn, 1002)


def test_long_control_frame_is_1002() -> None:
    conn = open_server()
    conn.receive_data(client_frame(PING, b"a" * 126))
    failed_with(conn, 1002)


def test_non_minimal_length_is_1002() -> None:
    conn = open_server()
    conn.receive_data(bytes([0x81, 0x80 | 126, 0, 5]) + b"\x00" * 4 + b"hello")
    failed_with(conn, 1002)


def test_close_with_code_and_reason_is_echoed() -> None:
    conn = open_server()
    conn.receive_data(client_frame(CLOSE, close_payload(1001, "bye ✓".encode())))
    assert conn.events_received() == [
        Closed(code=1001, reason="bye ✓", clean=True, initiator=Side.REMOTE)
    ]
    assert parse_frames(conn.data_to_send()) == [(CLOSE, close_payload(1001))]
    assert conn.should_close_transport()
    conn.receive_data(client_frame(TEXT, b"after close"))
    conn.receive_eof()
    assert conn.events_received() == []


def test_empty_close_is_1005_and_echoed_empty() -> None:
    conn = open_server()
    conn.receive_data(client_frame(CLOSE, b""))
    assert conn.events_received() == [Closed(code=1005, clean=True, initiator=Side.REMOTE)]
    assert parse_frames(conn.data_to_send()) == [(CLOSE, b"")]


@pytest.mark.parametrize("code", [3000, 4999, 1000, 1003, 1014])
def test_valid_close_codes(code: int) -> None:
    conn = open_server()
    conn.receive_data(client_frame(CLOSE, close_payload(code)))
    [closed] = conn.events_received()
    assert isinstance(closed, Closed)
    assert closed.code == code
    assert closed.clean


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535])
def test_invalid_close_codes_are_1002(code: int) -> None:
    conn = open_server()
    conn.receive_data(client_frame(CLOSE, close_payload(code)))
    failed_with(conn, 1002)


def test_one_byte_close_payload_is_1002() -> None:
    conn = open_server()
    conn.receive_data(client_frame(CLOSE, b"\x03"))
    failed_with(conn, 1002)


def test_close_reason_invalid_utf8_is_1007() -> None:
    conn = open_server()
    conn.receive_data(client_frame(CLOSE, close_payload(1000, b"\xc3")))
    failed_with(conn, 1007)


def test_local_close_then_peer_echo_is_clean() -> None:
    conn = open_server()
    conn.close(4000, "done")
    assert conn.state is State.CLOSING
    assert parse_frames(conn.data_to_send()) == [(CLOSE, close_payload(4000, b"done"))]
    with pytest.raises(ConnectionClosedError):
        conn.send_text("late")
    conn.close()  # already closing: no-op
    assert conn.data_to_send() == b""
    conn.receive_data(client_frame(TEXT, b"still flowing"))
    conn.receive_data(client_frame(CLOSE, close_payload(4000)))
    assert conn.events_received() == [
        TextMessage(data="still flowing"),
        Closed(code=4000, clean=True, initiator=Side.LOCAL),
    ]
    assert conn.should_close_transport()
    with pytest.raises(ConnectionClosedError):
        conn.send_binary(b"x")


def test_pings_are_not_answered_while_closing() -> None:
    conn = open_server()
    conn.close()
    conn.data_to_send()
    conn.receive_data(client_frame(PING, b"p"))
    assert conn.data_to_send() == b""


@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 2000, 5000])
def test_close_with_invalid_code_raises_and_changes_nothing(code: int) -> None:
    conn = open_server()
    with pytest.raises(ValueError, match="close code"):
        conn.close(code)
    assert conn.state is State.OPEN
    assert conn.data_to_send() == b""


def test_close_with_long_reason_raises() -> None:
    conn = open_server()
    with pytest.raises(ValueError, match="123"):
        conn.close(1000, "é" * 62)
    conn.close(1000, "a" * 123)
    assert conn.state is State.CLOSING


def test_eof_while_open_is_1006_remote() -> None:
    conn = open_server()
    conn.receive_eof()
    conn.receive_eof()
    assert conn.events_received() == [Closed(code=1006, reason="connection lost")]


def test_eof_while_closing_is_1006_local() -> None:
    conn = open_server()
    conn.close()
    conn.receive_eof()
    [closed] = conn.events_received()
    assert isinstance(closed, Closed)
    assert closed.code == 1006
    assert closed.initiator is Side.LOCAL
    assert not closed.clean


def test_prepared_message_is_framed_once_and_shared() -> None:
    message = PreparedMessage.text("broadcast")
    first, second = open_server(), open_server()
    assert first.send_prepared(message)
    assert second.send_prepared(message)
    a, b = first.data_to_send(), second.data_to_send()
    assert a == b
    assert parse_frames(a) == [(TEXT, b"broadcast")]


@settings(max_examples=200, deadline=None)
@given(
    mask=st.binary(min_size=4, max_size=4),
    data=st.one_of(st.binary(max_size=64), st.binary(min_size=2000, max_size=9000)),
)
def test_mask_payload_matches_bytewise_xor(mask: bytes, data: bytes) -> None:
    # Both the small (integer) and the large (translate) ways, and their border.
    assert mask_payload(mask, data) == bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    assert mask_payload(mask, b"") == b""


def test_encode_frame_lengths() -> None:
    for n in (0, 125, 126, 65535, 65536):
        frame = encode_frame(Opcode.BINARY, b"x" * n)
        assert parse_frames(frame) == [(BINARY, b"x" * n)]
