"""Core bugs found by the fuzz harnesses, each as its minimal input.

Every test here is a strict xfail until the core is fixed: then it passes,
strict xfail turns that into a failure, and the fix must also drop the
marker and the bug's entry in ``fuzz/_checks.py:TOLERATED`` (which lets the
harnesses step around a reported bug to find the next one).
"""

from __future__ import annotations

import h11
import pytest
from fuzz_support import harness

from wshub.core import HttpRequest, ServerConnection

HEAD_BUG = "bug: the server's own error answers to a HEAD request carry a body (RFC 9110 §9.3.2)"


def _head_answer(answer: str) -> bytes:
    conn = ServerConnection(clock=lambda: 0.0)
    conn.receive_data(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert [type(e) for e in conn.events_received()] == [HttpRequest]
    if answer == "timeout":
        conn.handle_timer(100.0)  # the application never decided: 503
    else:
        conn.refuse(503, "shutting down")
    return conn.data_to_send()


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=HEAD_BUG)
@pytest.mark.parametrize("answer", ["timeout", "refuse"])
def test_error_answer_to_head_has_no_body(answer: str) -> None:
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="HEAD", target="/", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(_head_answer(answer))
    assert isinstance(client.next_event(), h11.Response)
    assert isinstance(client.next_event(), h11.EndOfMessage)
    assert client.trailing_data == (b"", False)  # a body would be left over here


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=HEAD_BUG)
def test_server_harness_head_decision_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    # fuzz_server_bytes: prefix 6 (HEAD /), application never decides (0x30);
    # the clock moves 25 s per read (0xC0).
    monkeypatch.setattr(harness("_checks"), "TOLERATED", set())
    harness("fuzz_server_bytes").test_one_input(b"\x36\xc0")


def test_the_head_bug_input_passes_as_the_harness_runs() -> None:
    """With the bug tolerated (or fixed), the input is fine: fuzzing goes on."""
    harness("fuzz_server_bytes").test_one_input(b"\x36\xc0")
