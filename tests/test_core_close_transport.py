"""How the transport ends: at once after a completed closing handshake on the
server (RFC 6455 §7.1.1), by draining in every other case."""

from __future__ import annotations

from helpers import (
    ConnectionPair,
    FakeClock,
    client_frame,
    close_payload,
    open_server,
    upgrade_request,
)

from wshub.core import Closed, ServerConnection


def test_server_closes_at_once_when_the_client_closed_cleanly() -> None:
    server = open_server()
    assert server.should_drain_before_close()  # nothing is closing yet
    server.receive_data(client_frame(0x8, close_payload(1000)))
    [closed] = server.events_received()
    assert isinstance(closed, Closed)
    assert closed.clean
    assert server.should_close_transport()
    assert not server.should_drain_before_close()


def test_server_closes_at_once_when_its_own_close_was_answered() -> None:
    server = open_server()
    server.close(1001, "bye")
    assert server.should_drain_before_close()  # still waiting for the answer
    server.receive_data(client_frame(0x8, close_payload(1001)))
    assert server.events_received()[0].clean
    assert not server.should_drain_before_close()


def test_the_client_always_waits_for_the_server_to_close_first() -> None:
    pair = ConnectionPair()
    pair.client.close(1000)
    pair.pump(eof=False)
    assert pair.client.should_close_transport()
    assert pair.client.should_drain_before_close()
    assert not pair.server.should_drain_before_close()


def test_failures_and_http_answers_drain() -> None:
    unmasked = open_server()
    unmasked.receive_data(b"\x81\x01a")  # a client frame must be masked: 1002
    assert unmasked.should_close_transport()
    assert unmasked.should_drain_before_close()

    refused = ServerConnection(clock=FakeClock())
    refused.receive_data(upgrade_request())
    refused.events_received()
    refused.reject(401, "no")
    assert refused.should_close_transport()
    assert refused.should_drain_before_close()

    lost = open_server()
    lost.receive_eof()
    assert lost.should_drain_before_close()

    closing_then_lost = open_server()
    closing_then_lost.close(1000)
    closing_then_lost.receive_eof()
    assert closing_then_lost.should_drain_before_close()
