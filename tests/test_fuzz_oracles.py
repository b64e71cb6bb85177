"""The fuzz oracles are live: each rule they check rejects a break of it.

A harness whose checks cannot fail proves nothing, so every check of
fuzz/_checks.py (the independent frame and HTTP readers) and
fuzz/_contract.py (the connection contract) is shown here to reject a
hand-made violation, and the whole harnesses are shown to catch connections
that were altered to break one rule each (subclasses of the real ones).
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import pytest
from fuzz_support import harness
from hypothesis import given, settings
from hypothesis import strategies as st

from wshub.core import (
    ClientConnection,
    Closed,
    Event,
    ServerConnection,
    State,
    TextMessage,
)
from wshub.core.connection import _TRANSITIONS

checks = harness("_checks")
contract = harness("_contract")
ContractError = checks.ContractError
MASK = b"\x11\x22\x33\x44"


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = None,
    wide: int | None = None,
) -> bytes:
    """One frame, written here (not by wshub); ``wide`` forces a 2 or 8 byte length."""
    first = (0x80 if fin else 0) | rsv | opcode
    n = len(payload)
    bit = 0x80 if mask else 0
    if wide == 2 or (wide is None and 126 <= n < 1 << 16):
        head = struct.pack("!BBH", first, bit | 126, n)
    elif wide == 8 or (wide is None and n >= 1 << 16):
        head = struct.pack("!BBQ", first, bit | 127, n)
    else:
        head = bytes([first, bit | n])
    if mask is None:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def deflate(data: bytes, compressor: Any = None) -> bytes:
    c = compressor or zlib.compressobj(6, zlib.DEFLATED, -15)
    out: bytes = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    return out[:-4]


def server_reader(**kwargs: Any) -> Any:
    return checks.FrameReader(masked=False, deflate=kwargs.get("deflate"))


# -- FrameReader ---------------------------------------------------------------

BAD_SERVER_STREAMS = {
    "masked": frame(1, b"hi", mask=MASK),
    "rsv2": frame(1, b"x", rsv=0x20),
    "rsv3": frame(2, b"x", rsv=0x10),
    "rsv1 without deflate": frame(1, b"x", rsv=0x40),
    "reserved data opcode": frame(3, b"x"),
    "reserved control opcode": frame(11),
    "fragmented ping": frame(9, b"p", fin=False),
    "ping of 126 bytes": frame(9, b"p" * 126),
    "rsv1 on a pong": frame(10, b"", rsv=0x40),
    "close with 1 byte": frame(8, b"\x03"),
    "close 1005": frame(8, b"\x03\xed"),
    "close 1006": frame(8, b"\x03\xee"),
    "close 999": frame(8, b"\x03\xe7"),
    "close 1015": frame(8, b"\x03\xf7"),
    "close 2999": frame(8, b"\x0b\xb7"),
    "close 5000": frame(8, b"\x13\x88"),
    "close reason not utf-8": frame(8, b"\x03\xe8\xff"),
    "frame after close": frame(8, b"\x03\xe8") + frame(9),
    "non-minimal 16-bit length": frame(1, b"x" * 10, wide=2),
    "non-minimal 64-bit length": frame(1, b"x" * 200, wide=8),
    "64-bit length with top bit": b"\x82\x7f\x80" + bytes(7),
    "continuation outside a message": frame(0, b"x"),
    "message inside a fragmented one": frame(1, b"a", fin=False) + frame(1, b"b"),
    "text not utf-8": frame(1, b"\xc3"),
    "text split into invalid utf-8": frame(1, b"\xe2\x82", fin=False) + frame(0, b"A"),
}


@pytest.mark.parametrize("stream", BAD_SERVER_STREAMS.values(), ids=BAD_SERVER_STREAMS.keys())
def test_frame_reader_rejects(stream: bytes) -> None:
    reader = server_reader()
    with pytest.raises(ContractError):
        reader.feed(stream)


def test_frame_reader_rejects_unmasked_client_frames() -> None:
    reader = checks.FrameReader(masked=True, deflate=None)
    with pytest.raises(ContractError):
        reader.feed(frame(1, b"hi"))


def test_frame_reader_rejects_a_truncated_frame_at_the_end() -> None:
    reader = server_reader()
    reader.feed(frame(1, b"hello")[:-1])
    with pytest.raises(ContractError):
        reader.finish()


def test_frame_reader_reads_valid_traffic_in_any_split() -> None:
    stream = (
        frame(1, b"h\xc3", fin=False)
        + frame(9, b"ping")
        + frame(0, b"\xa9llo")
        + frame(2, bytes(300))
        + frame(10, b"")
        + frame(8, b"\x0f\xa0bye")
    )
    for size in (1, 2, 7, len(stream)):
        reader = server_reader()
        for i in range(0, len(stream), size):
            reader.feed(stream[i : i + size])
        reader.finish()
        assert reader.messages == ["h\u00e9llo", bytes(300)]
        assert reader.pings == [b"ping"]
        assert reader.pongs == [b""]
        assert reader.close == (4000, "bye")


def test_frame_reader_inflates_and_checks_context_takeover() -> None:
    shared = zlib.compressobj(6, zlib.DEFLATED, -15)
    first, second = deflate(b"hello hello", shared), deflate(b"hello hello", shared)
    stream = frame(1, first, rsv=0x40) + frame(1, second, rsv=0x40)
    with_context = server_reader(deflate=checks.DeflateTerms(no_context_takeover=False))
    with_context.feed(stream)
    assert with_context.messages == ["hello hello", "hello hello"]
    # Announced without context takeover, the second message must inflate alone.
    fresh = server_reader(deflate=checks.DeflateTerms(no_context_takeover=True))
    with pytest.raises(ContractError):
        fresh.feed(stream)


def test_frame_reader_rejects_rsv1_on_a_continuation() -> None:
    reader = server_reader(deflate=checks.DeflateTerms(no_context_takeover=True))
    with pytest.raises(ContractError):
        reader.feed(frame(1, deflate(b"ab"), rsv=0x40, fin=False) + frame(0, b"", rsv=0x40))


def test_frame_reader_rejects_a_compressed_message_that_does_not_inflate() -> None:
    reader = server_reader(deflate=checks.DeflateTerms(no_context_takeover=True))
    with pytest.raises(ContractError):
        reader.feed(frame(2, b"\xff\xff\xff", rsv=0x40))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([1, 2, 9, 10]), st.binary(max_size=300), st.integers(1, 3)),
        max_size=6,
    ),
    st.booleans(),
)
def test_frame_reader_accepts_what_wshub_frames(
    items: list[tuple[int, bytes, int]], masked: bool
) -> None:
    """Cross-check against wshub's own writer: its frames read back whole."""
    from wshub.core.frames import encode_frame

    reader = checks.FrameReader(masked=masked, deflate=None)
    expected: list[str | bytes] = []
    for opcode, raw, parts in items:
        if opcode >= 8:
            reader.feed(encode_frame(opcode, raw[:125], mask=MASK if masked else None))
            continue
        payload = raw.decode("latin-1").encode("utf-8") if opcode == 1 else raw
        cut = [len(payload) * k // parts for k in range(parts + 1)]
        for k in range(parts):
            reader.feed(
                encode_frame(
                    opcode if k == 0 else 0,
                    payload[cut[k] : cut[k + 1]],
                    fin=k == parts - 1,
                    mask=MASK if masked else None,
                )
            )
        expected.append(payload.decode("utf-8") if opcode == 1 else payload)
    reader.finish()
    assert reader.messages == expected


# -- HTTP heads ----------------------------------------------------------------

KEY = "AAECAwQFBgcICQoLDA0ODw=="
GOOD_101 = (
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    f"Sec-WebSocket-Accept: {checks.accept_for(KEY)}\r\n"
)


def server_output(*, decided: int | None = 101, subprotocol: str | None = None) -> Any:
    out = checks.ServerOutput(compression=True)
    out.upgrade_requested(KEY, ("chat",), ("permessage-deflate",))
    if decided is not None:
        out.decide(decided, subprotocol)
    return out


def test_accept_token_is_rfc_6455_example() -> None:
    # RFC 6455 §1.3 gives this key and its answer.
    assert checks.accept_for("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_server_output_reads_a_101_then_frames() -> None:
    out = server_output()
    out.feed((GOOD_101 + "\r\n").encode() + frame(1, b"hi")[:2])
    out.feed(b"hi")
    out.finish()
    assert out.status == 101
    assert out.frames.messages == ["hi"]


BAD_RESPONSES = {
    "wrong accept": GOOD_101.replace("Accept: ", "Accept: x") + "\r\n",
    "no upgrade": GOOD_101.replace("Upgrade: websocket\r\n", "") + "\r\n",
    "subprotocol not accepted": GOOD_101 + "Sec-WebSocket-Protocol: chat\r\n\r\n",
    "unknown extension": GOOD_101 + "Sec-WebSocket-Extensions: x-foo\r\n\r\n",
    "deflate without server_no_context_takeover": GOOD_101
    + "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
    "bad window bits": GOOD_101
    + "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover;"
    + " server_max_window_bits=7\r\n\r\n",
    "100 continue": "HTTP/1.1 100 Continue\r\n\r\n",
    "not http": "SSH-2.0-OpenSSH\r\n\r\n",
}


@pytest.mark.parametrize("response", BAD_RESPONSES.values(), ids=BAD_RESPONSES.keys())
def test_server_output_rejects_a_bad_101(response: str) -> None:
    with pytest.raises(ContractError):
        server_output().feed(response.encode())


def test_server_output_checks_the_decision() -> None:
    with pytest.raises(ContractError):  # 101 nobody accepted
        server_output(decided=None).feed((GOOD_101 + "\r\n").encode())
    with pytest.raises(ContractError):  # a success nobody decided
        server_output(decided=None).feed(
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
    with pytest.raises(ContractError):  # another status than the one chosen
        server_output(decided=403).feed(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
    accepted = server_output(subprotocol="chat")
    accepted.feed((GOOD_101 + "Sec-WebSocket-Protocol: chat\r\n\r\n").encode())
    assert accepted.status == 101


def test_server_output_checks_error_responses() -> None:
    ok = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno"
    out = server_output(decided=None)
    out.feed(ok)
    out.finish()
    assert out.status == 400
    with pytest.raises(ContractError):  # the connection must close after it
        server_output(decided=None).feed(ok.replace(b"Connection: close", b"X: y"))
    with pytest.raises(ContractError):
        server_output(decided=None).feed(ok + b"more")
    partial = server_output(decided=None)
    partial.feed(ok[:-1])
    with pytest.raises(ContractError):
        partial.finish()


REQUEST = (
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: " + KEY.encode() + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
BAD_REQUESTS = {
    "post": REQUEST.replace(b"GET", b"POST"),
    "http/1.0": REQUEST.replace(b"1.1", b"1.0"),
    "no key": REQUEST.replace(b"Sec-WebSocket-Key", b"X-Key"),
    "short key": REQUEST.replace(KEY.encode(), b"AAAA"),
    "version 8": REQUEST.replace(b"Version: 13", b"Version: 8"),
    "no upgrade": REQUEST.replace(b"Upgrade: websocket\r\n", b""),
    "frames before opening": REQUEST + frame(1, b"x", mask=MASK),
}


@pytest.mark.parametrize("request_bytes", BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
def test_client_output_rejects(request_bytes: bytes) -> None:
    with pytest.raises(ContractError):
        checks.ClientOutput().feed(request_bytes)


def test_client_output_reads_masked_frames_after_opening_only() -> None:
    out = checks.ClientOutput()
    out.feed(REQUEST)
    out.opened(())
    out.feed(frame(1, b"hi", mask=MASK))
    out.finish()
    assert out.frames.messages == ["hi"]
    with pytest.raises(ContractError):
        out.feed(frame(1, b"hi"))
    unoffered = checks.ClientOutput()
    unoffered.feed(REQUEST)
    with pytest.raises(ContractError):
        unoffered.opened(("permessage-deflate",))


# -- the contract tables ---------------------------------------------------------


def test_call_rules_stay_inside_the_core_table() -> None:
    """Every move a call may make is one the core's table documents."""
    for rule, moves in contract.CALL_RULES.items():
        for before, afters in moves.items():
            for after in afters - {before}:
                assert after in _TRANSITIONS[before], (rule, before, after)


def test_reachable_follows_the_table() -> None:
    assert contract.reachable(State.CONNECTING, State.CLOSING)
    assert contract.reachable(State.OPEN, State.OPEN)
    assert not contract.reachable(State.OPEN, State.DECIDING)
    assert not contract.reachable(State.CLOSED, State.OPEN)


# -- whole harnesses against altered connections -----------------------------------

server_bytes = harness("fuzz_server_bytes")
client_bytes = harness("fuzz_client_bytes")


def server_seed(name: str) -> bytes:
    data: bytes = server_bytes.seeds()[name]
    return data


def client_seed(name: str) -> bytes:
    data: bytes = client_bytes.seeds()[name]
    return data


class ClosedTwice(ServerConnection):
    def events_received(self) -> list[Event]:
        events = super().events_received()
        return events + [e for e in events if isinstance(e, Closed)]


class TalksAfterClosed(ServerConnection):
    def events_received(self) -> list[Event]:
        events = super().events_received()
        if self.state is State.CLOSED and not events:
            return [TextMessage(data="late")]
        return events


class NeverClosed(ServerConnection):
    def events_received(self) -> list[Event]:
        return [e for e in super().events_received() if not isinstance(e, Closed)]


class OpensAlone(ServerConnection):
    """Reports OPEN while it waits for the application's decision."""

    @property
    def state(self) -> State:
        real = super().state
        return State.OPEN if real is State.DECIDING else real


class ClosesWith1005(ServerConnection):
    def data_to_send(self) -> bytes:
        return super().data_to_send().replace(b"\x88\x02\x03\xe8", b"\x88\x02\x03\xed")


class LosesMessages(ServerConnection):
    def send_text(self, text: str) -> bool:
        return super().send_text("") or True


class WrongStatus(ServerConnection):
    def reject(self, status: int, reason: str = "", **kwargs: Any) -> None:
        super().reject(status + 1, reason, **kwargs)


class LaxAccept(ServerConnection):
    def accept(self, principal: object = None, **kwargs: Any) -> None:
        if self.state is State.DECIDING:
            super().accept(principal, **kwargs)


class StuckDeadline(ServerConnection):
    def next_deadline(self) -> float | None:
        real = super().next_deadline()
        return 0.5 if real is not None else None


class WritesAfterTheEnd(ServerConnection):
    def data_to_send(self) -> bytes:
        data = super().data_to_send()
        return data or (b"late" if self.state is State.CLOSED else b"")


class StaysOpenAfterEof(ServerConnection):
    def receive_eof(self) -> None:
        if self.state is not State.OPEN:
            super().receive_eof()


MUTANTS = {
    "two Closed": (ClosedTwice, "open_close"),
    "event after Closed": (TalksAfterClosed, "open_close"),
    "no Closed": (NeverClosed, "raw_garbage"),
    "skips DECIDING": (OpensAlone, "raw_upgrade_echo"),
    "close 1005 on the wire": (ClosesWith1005, "open_close"),
    "message lost": (LosesMessages, "raw_upgrade_echo"),
    "status not the one chosen": (WrongStatus, "reject"),
    "misuse accepted": (LaxAccept, "open_text"),
    "deadline survives": (StuckDeadline, "keepalive"),
    "open after EOF": (StaysOpenAfterEof, "open_text"),
    "bytes after the response": (WritesAfterTheEnd, "raw_garbage"),
    "bytes after the close frame": (WritesAfterTheEnd, "open_close"),
}


@pytest.mark.parametrize(("mutant", "seed"), MUTANTS.values(), ids=MUTANTS.keys())
def test_server_harness_catches(mutant: type[ServerConnection], seed: str) -> None:
    server_bytes.run(server_seed(seed), ServerConnection)  # the real one passes
    with pytest.raises(ContractError):
        server_bytes.run(server_seed(seed), mutant)


class UnmaskedClient(ClientConnection):
    def data_to_send(self) -> bytes:
        data = super().data_to_send()
        return data + b"\x81\x00" if data and self.state is State.OPEN else data


class OpensOnAnything(ClientConnection):
    """Skips the Sec-WebSocket-Accept check."""

    def receive_data(self, data: bytes) -> None:
        super().receive_data(data.replace(b"Accept: x", b"Accept: "))


CLIENT_MUTANTS = {
    "unmasked frame": (UnmaskedClient, "open_text_ping"),
    "opens on a wrong accept": (OpensOnAnything, "raw_bad_accept"),
}


@pytest.mark.parametrize(("mutant", "seed"), CLIENT_MUTANTS.values(), ids=CLIENT_MUTANTS.keys())
def test_client_harness_catches(mutant: type[ClientConnection], seed: str) -> None:
    client_bytes.run(client_seed(seed), ClientConnection)
    with pytest.raises(ContractError):
        client_bytes.run(client_seed(seed), mutant)


class DropsOneByteReads(ServerConnection):
    """Loses input that arrives one byte at a time: the outcome depends on the split."""

    def receive_data(self, data: bytes) -> None:
        if len(data) != 1 or self.state is not State.OPEN:
            super().receive_data(data)


def test_frames_harness_catches_a_read_size_dependence() -> None:
    frames = harness("fuzz_frames")
    seed = frames.seeds()["text"]
    frames.run(seed, ServerConnection)
    with pytest.raises(ContractError):
        frames.run(seed, DropsOneByteReads)


# -- envelope and hub oracles ------------------------------------------------------


def test_envelope_oracles_are_live() -> None:
    from wshub.core.envelope import EnvelopeError, ErrorCode

    envelope = harness("fuzz_envelope")
    with pytest.raises(AssertionError):
        envelope.check_error(EnvelopeError(code=ErrorCode.FORBIDDEN, message="not a parse code"))
    with pytest.raises(AssertionError):
        envelope.check_error(EnvelopeError(code=ErrorCode.INVALID_JSON, message="x", request_id=1))
    envelope.check_error(EnvelopeError(code=ErrorCode.INVALID_ENVELOPE, message="x", request_id=1))
    envelope.check_error_answer(EnvelopeError(code=ErrorCode.INVALID_JSON, message="\ud800"))


def test_hub_oracles_are_live() -> None:
    ops = harness("fuzz_hub_ops")
    reader = harness("_hub_common").ByteReader(b"")
    world = ops._make_world(reader)
    ops._op_add(world, reader)
    ops.check_invariants(world)
    [peer] = world.peers.values()
    peer.registered = False  # the harness believes it removed it, the hub did not
    with pytest.raises(AssertionError):
        ops.check_invariants(world)
    peer.registered = True
    peer.smon.state = State.CLOSED  # a move back to OPEN is on no path of the table
    with pytest.raises(ContractError):
        ops.check_invariants(world)
