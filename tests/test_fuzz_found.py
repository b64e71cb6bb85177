"""Core bugs found by the fuzz harnesses, each kept as its minimal input.

A bug the harnesses find is written here first as a strict xfail and
tolerated in ``fuzz/_checks.py:TOLERATED`` (so fuzzing can go on); the fix
drops both, and the test stays as a regression test.
"""

from __future__ import annotations

import h11
import pytest
from fuzz_support import harness

from wshub.core import HttpRequest, ServerConnection

# Fixed bug: the server's own error answers to a HEAD request carried a body
# (RFC 9110 §9.3.2 allows none).


def _head_answer(answer: str) -> bytes:
    conn = ServerConnection(clock=lambda: 0.0)
    conn.receive_data(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert [type(e) for e in conn.events_received()] == [HttpRequest]
    if answer == "timeout":
        conn.handle_timer(100.0)  # the application never decided: 503
    else:
        conn.refuse(503, "shutting down")
    return conn.data_to_send()


@pytest.mark.parametrize("answer", ["timeout", "refuse"])
def test_error_answer_to_head_has_no_body(answer: str) -> None:
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="HEAD", target="/", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(_head_answer(answer))
    assert isinstance(client.next_event(), h11.Response)
    assert isinstance(client.next_event(), h11.EndOfMessage)
    assert client.trailing_data == (b"", False)  # a body would be left over here


def test_server_harness_head_decision_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    # fuzz_server_bytes: prefix 6 (HEAD /), application never decides (0x30);
    # the clock moves 25 s per read (0xC0).
    monkeypatch.setattr(harness("_checks"), "TOLERATED", set())
    harness("fuzz_server_bytes").test_one_input(b"\x36\xc0")


def test_the_head_bug_input_passes_as_the_harness_runs() -> None:
    """With the bug tolerated (or fixed), the input is fine: fuzzing goes on."""
    harness("fuzz_server_bytes").test_one_input(b"\x36\xc0")
