"""Timeouts driven by a fake clock: handshake, keepalive, close, idle."""

from __future__ import annotations

from helpers import ConnectionPair, FakeClock, client_frame, open_server, upgrade_request
from test_core_framing import parse_frames

from wshub.core import ClientConnection, Closed, Limits, ServerConnection, State
from wshub.core.events import Side

PING, PONG, CLOSE = 0x9, 0xA, 0x8


def test_server_handshake_timeout_while_reading_is_408() -> None:
    clock = FakeClock()
    conn = ServerConnection(limits=Limits(handshake_timeout=5), clock=clock)
    conn.receive_data(b"GET / HTTP/1.1\r\n")
    assert conn.next_deadline() == clock.now + 5
    conn.handle_timer(clock.advance(4.999))
    assert conn.state is State.CONNECTING
    assert conn.data_to_send() == b""
    conn.handle_timer(clock.advance(0.001))
    assert conn.data_to_send().startswith(b"HTTP/1.1 408 ")
    [closed] = conn.events_received()
    assert isinstance(closed, Closed)
    assert closed.initiator is Side.LOCAL
    assert conn.next_deadline() is None
    conn.handle_timer(clock.advance(100))
    assert conn.events_received() == []


def test_server_handshake_timeout_while_deciding_is_503() -> None:
    clock = FakeClock()
    conn = ServerConnection(limits=Limits(handshake_timeout=5), clock=clock)
    conn.receive_data(upgrade_request())
    conn.events_received()
    clock.advance(5)
    conn.handle_timer()  # reads the injected clock
    assert conn.data_to_send().startswith(b"HTTP/1.1 503 ")
    assert isinstance(conn.events_received()[0], Closed)
    assert conn.state is State.CLOSED


def test_client_handshake_timeout() -> None:
    clock = FakeClock()
    conn = ClientConnection(host="h", limits=Limits(handshake_timeout=3), clock=clock)
    assert conn.next_deadline() == clock.now + 3
    conn.handle_timer(clock.advance(3))
    [closed] = conn.events_received()
    assert isinstance(closed, Closed)
    assert closed.code == 1006
    assert conn.should_close_transport()


def test_keepalive_ping_pong_cycle() -> None:
    clock = FakeClock()
    limits = Limits(ping_interval=10, ping_timeout=5)
    pair = ConnectionPair(limits=limits, clock=clock)
    server = pair.server
    assert server.next_deadline() == clock.now + 10
    server.handle_timer(clock.advance(9))
    assert server.data_to_send() == b""
    server.handle_timer(clock.advance(1))
    frames = parse_frames(server.data_to_send())
    assert [f[0] for f in frames] == [PING]
    ping_payload = frames[0][1]
    assert len(ping_payload) == 4
    assert server.next_deadline() == clock.now + 5
    # Deliver the ping to the client, whose pong goes back to the server.
    pair.client.receive_data(frames_to_bytes(frames))
    pair.pump()
    assert server.state is State.OPEN
    assert server.next_deadline() == clock.now + 10  # pong cleared the timeout
    server.handle_timer(clock.advance(10))
    assert [f[0] for f in parse_frames(server.data_to_send())] == [PING]


def frames_to_bytes(frames: list[tuple[int, bytes]]) -> bytes:
    from wshub.core.frames import encode_frame

    return b"".join(encode_frame(op, payload) for op, payload in frames)


def test_pong_with_other_payload_does_not_clear_timeout() -> None:
    clock = FakeClock()
    conn = open_server(limits=Limits(ping_interval=10, ping_timeout=5), clock=clock)
    conn.handle_timer(clock.advance(10))
    [(_, payload)] = parse_frames(conn.data_to_send())
    conn.receive_data(client_frame(PONG, payload + b"x"))
    conn.handle_timer(clock.advance(5))
    [closed] = conn.events_received()
    assert isinstance(closed, Closed)
    assert closed.code == 1011
    assert closed.initiator is Side.LOCAL
    [(opcode, body)] = parse_frames(conn.data_to_send())
    assert opcode == CLOSE
    assert body[:2] == (1011).to_bytes(2, "big")


def test_no_pong_is_1011() -> None:
    clock = FakeClock()
    pair = ConnectionPair(limits=Limits(ping_interval=10, ping_timeout=5), clock=clock)
    pair.server.handle_timer(clock.advance(10))
    pair.server.data_to_send()  # the ping is lost
    pair.server.handle_timer(clock.advance(5))
    client_events, server_events = pair.pump()
    assert next(e for e in server_events if isinstance(e, Closed)).code == 1011
    assert next(e for e in client_events if isinstance(e, Closed)).code == 1011


def test_keepalive_disabled() -> None:
    clock = FakeClock()
    conn = open_server(limits=Limits(ping_interval=None), clock=clock)
    assert conn.next_deadline() is None
    conn.handle_timer(clock.advance(10_000))
    assert conn.data_to_send() == b""


def test_close_timeout_is_1006() -> None:
    clock = FakeClock()
    conn = open_server(limits=Limits(close_timeout=2, ping_interval=None), clock=clock)
    conn.close(1000)
    conn.data_to_send()
    assert conn.next_deadline() == clock.now + 2
    conn.handle_timer(clock.advance(2))
    [closed] = conn.events_received()
    assert closed == Closed(code=1006, reason="close timed out", initiator=Side.LOCAL)
    assert conn.should_close_transport()
    conn.receive_data(client_frame(CLOSE, b""))
    conn.receive_eof()
    assert conn.events_received() == []


def test_idle_timeout_closes_with_1001() -> None:
    clock = FakeClock()
    limits = Limits(idle_timeout=30, ping_interval=None, close_timeout=2)
    conn = open_server(limits=limits, clock=clock)
    assert conn.next_deadline() == clock.now + 30
    clock.advance(20)
    conn.receive_data(client_frame(0x1, b"alive"))
    conn.handle_timer(clock.advance(20))
    assert conn.state is State.OPEN
    conn.handle_timer(clock.advance(10))
    assert conn.state is State.CLOSING
    [(opcode, body)] = parse_frames(conn.data_to_send())
    assert opcode == CLOSE
    assert body[:2] == (1001).to_bytes(2, "big")
    conn.handle_timer(clock.advance(2))
    assert isinstance(conn.events_received()[-1], Closed)


def test_ping_payloads_come_from_random_source() -> None:
    clock = FakeClock()
    calls: list[int] = []

    def rand(n: int) -> bytes:
        calls.append(n)
        return b"\x01" * n

    conn = ServerConnection(clock=clock, random=rand, limits=Limits(ping_interval=1))
    conn.receive_data(upgrade_request())
    conn.accept()
    conn.data_to_send()
    conn.handle_timer(clock.advance(1))
    assert parse_frames(conn.data_to_send()) == [(PING, b"\x01" * 4)]
    assert calls == [4]
