"""Client side of the opening handshake (RFC 6455 §4.1 / §4.2.2)."""

from __future__ import annotations

import pytest
from helpers import CountingRandom, FakeClock, closed_events, expected_accept

from wshub.core import (
    ClientConnection,
    Closed,
    Limits,
    LocalProtocolError,
    Opened,
    Rejected,
    State,
    TextMessage,
)
from wshub.core.events import Side
from wshub.core.frames import encode_frame


def client(**kwargs: object) -> tuple[ClientConnection, str]:
    conn = ClientConnection(
        host="example.com",
        target="/ws?x=1",
        clock=FakeClock(),
        random=CountingRandom(),
        **kwargs,  # type: ignore[arg-type]
    )
    request = conn.data_to_send().decode("latin-1")
    key = next(
        line.split(":", 1)[1].strip()
        for line in request.split("\r\n")
        if line.lower().startswith("sec-websocket-key:")
    )
    return conn, key


def switching(key: str, *extra: str, accept: str | None = None) -> bytes:
    lines = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept if accept is not None else expected_accept(key)}",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def aborted(conn: ClientConnection) -> Closed:
    events = conn.events_received()
    assert len(events) == 1, events
    [closed] = events
    assert isinstance(closed, Closed)
    assert closed.code == 1006
    assert not closed.clean
    assert closed.initiator is Side.LOCAL
    assert conn.state is State.CLOSED
    assert conn.should_close_transport()
    return closed


def test_request_is_a_valid_upgrade() -> None:
    conn = ClientConnection(
        host="example.com",
        target="/ws?x=1",
        subprotocols=("a", "b"),
        headers=(("Authorization", "Bearer t"),),
        compression=True,
        clock=FakeClock(),
        random=CountingRandom(),
    )
    request = conn.data_to_send().decode("latin-1")
    assert request.startswith("GET /ws?x=1 HTTP/1.1\r\n")
    lines = request.split("\r\n")
    for expected in (
        "Host: example.com",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Protocol: a, b",
        "Authorization: Bearer t",
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
    ):
        assert expected in lines
    assert request.endswith("\r\n\r\n")


def test_key_comes_from_the_random_source() -> None:
    _, key1 = client()
    _, key2 = client()
    assert key1 == key2  # same seed, same key: no hidden randomness


def test_valid_101_opens_and_trailing_frames_are_read() -> None:
    conn, key = client(subprotocols=("chat",))
    conn.receive_data(switching(key, "Sec-WebSocket-Protocol: chat") + encode_frame(0x1, b"hi"))
    assert conn.events_received() == [
        Opened(subprotocol="chat", extensions=()),
        TextMessage(data="hi"),
    ]
    assert conn.subprotocol == "chat"


def test_101_split_byte_by_byte_opens() -> None:
    conn, key = client()
    data = switching(key)
    for i in range(len(data)):
        conn.receive_data(data[i : i + 1])
    assert conn.events_received() == [Opened(subprotocol=None, extensions=())]


def test_wrong_accept_key_aborts() -> None:
    conn, key = client()
    conn.receive_data(switching(key, accept=expected_accept("x" + key)))
    assert "Accept" in aborted(conn).reason


def test_missing_upgrade_header_aborts() -> None:
    conn, key = client()
    data = switching(key).replace(b"Upgrade: websocket\r\n", b"")
    conn.receive_data(data)
    aborted(conn)


def test_unexpected_subprotocol_aborts() -> None:
    conn, key = client(subprotocols=("chat",))
    conn.receive_data(switching(key, "Sec-WebSocket-Protocol: other"))
    aborted(conn)


def test_subprotocol_when_none_offered_aborts() -> None:
    conn, key = client()
    conn.receive_data(switching(key, "Sec-WebSocket-Protocol: chat"))
    aborted(conn)


def test_unexpected_extension_aborts() -> None:
    conn, key = client()
    conn.receive_data(switching(key, "Sec-WebSocket-Extensions: permessage-deflate"))
    aborted(conn)


@pytest.mark.parametrize(
    "value",
    [
        "x-unknown",
        "permessage-deflate; foo",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; server_max_window_bits=99",
        "permessage-deflate; client_max_window_bits=8",
        "permessage-deflate, permessage-deflate",
    ],
)
def test_unacceptable_deflate_response_aborts(value: str) -> None:
    conn, key = client(compression=True)
    conn.receive_data(switching(key, f"Sec-WebSocket-Extensions: {value}"))
    aborted(conn)


def test_accepted_deflate_response_sets_params() -> None:
    conn, key = client(compression=True)
    value = "permessage-deflate; server_no_context_takeover; client_max_window_bits=10"
    conn.receive_data(switching(key, f"Sec-WebSocket-Extensions: {value}"))
    assert conn.events_received() == [Opened(subprotocol=None, extensions=(value,))]
    assert conn.deflate is not None
    assert conn.deflate.client_max_window_bits == 10
    assert conn.deflate.server_no_context_takeover


@pytest.mark.parametrize("status", [200, 400, 401, 403, 503])
def test_non_101_is_rejected_then_closed(status: int) -> None:
    conn, _ = client()
    body = b"go away"
    conn.receive_data(
        f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\nX-A: b\r\n\r\n".encode() + body
    )
    events = conn.events_received()
    assert len(events) == 2, events
    rejected, closed = events
    assert isinstance(rejected, Rejected)
    assert rejected.status == status
    assert rejected.body == body
    assert ("x-a", "b") in rejected.headers
    assert isinstance(closed, Closed)
    assert closed.code == 1006
    conn.receive_eof()
    assert conn.events_received() == []


def test_rejection_body_until_eof() -> None:
    conn, _ = client()
    conn.receive_data(b"HTTP/1.1 403 Forbidden\r\n\r\nno ")
    conn.receive_data(b"entry")
    assert conn.events_received() == []
    conn.receive_eof()
    conn.receive_eof()
    events = conn.events_received()
    assert isinstance(events[0], Rejected)
    assert events[0].body == b"no entry"
    assert len(closed_events(events)) == 1


def test_garbage_response_aborts() -> None:
    conn, _ = client()
    conn.receive_data(b"\x00\x01garbage\r\n\r\n")
    aborted(conn)


def test_oversized_response_head_aborts() -> None:
    conn, key = client(limits=Limits(max_head_size=200))
    conn.receive_data(switching(key, "X-Pad: " + "a" * 300))
    aborted(conn)


def test_oversized_response_head_aborts_byte_by_byte() -> None:
    conn, key = client(limits=Limits(max_head_size=200))
    data = switching(key, "X-Pad: " + "a" * 300)
    for i in range(len(data)):
        conn.receive_data(data[i : i + 1])
    aborted(conn)


def test_eof_before_response_closes_once() -> None:
    conn, _ = client()
    conn.receive_data(b"HTTP/1.1 1")
    conn.receive_eof()
    conn.receive_eof()
    assert conn.events_received() == [
        Closed(code=1006, reason="connection lost during handshake", initiator=Side.REMOTE)
    ]


def test_informational_before_101_is_skipped() -> None:
    conn, key = client()
    conn.receive_data(b"HTTP/1.1 100 Continue\r\n\r\n" + switching(key))
    assert conn.events_received() == [Opened(subprotocol=None, extensions=())]


def test_send_before_open_raises() -> None:
    conn, _ = client()
    with pytest.raises(LocalProtocolError):
        conn.send_text("x")
    with pytest.raises(LocalProtocolError):
        conn.close()
    assert conn.state is State.CONNECTING


def test_client_frames_are_masked_with_the_random_source() -> None:
    conn, key = client()
    conn.receive_data(switching(key))
    conn.events_received()
    conn.send_binary(b"abc")
    frame = conn.data_to_send()
    assert frame[0] == 0x82
    assert frame[1] == 0x80 | 3
    mask = frame[2:6]
    assert bytes(b ^ mask[i % 4] for i, b in enumerate(frame[6:])) == b"abc"


def test_masked_frame_from_server_fails_1002() -> None:
    conn, key = client()
    conn.receive_data(switching(key) + encode_frame(0x1, b"hi", mask=b"abcd"))
    events = conn.events_received()
    assert isinstance(events[0], Opened)
    assert events[1] == Closed(code=1002, reason=events[1].reason, initiator=Side.LOCAL)
