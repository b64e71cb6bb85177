"""The atheris harnesses as hypothesis properties, for where atheris is absent.

Each property calls a harness's own body (``test_one_input``) with inputs
built in that harness's layout: valid and broken requests and responses,
frames with every opcode, RSV bit and close code, deflated payloads,
envelopes, hub operation streams. The oracles are the harnesses' (see
fuzz/_contract.py and fuzz/_checks.py): any contract break raises. Runtime
stays modest; the long searches are atheris' job (fuzz/README.md).
"""

from __future__ import annotations

import json
import struct
import zlib

from fuzz_support import harness
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

server_bytes = harness("fuzz_server_bytes")
client_bytes = harness("fuzz_client_bytes")
frames = harness("fuzz_frames")
envelope = harness("fuzz_envelope")
hub_ops = harness("fuzz_hub_ops")

FUZZ = settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MASK = b"\x0f\xf0\x55\xaa"
CLOSE_CODES = (1000, 1001, 1002, 1005, 1006, 1012, 1013, 1015, 999, 2999, 3000, 4999, 5000)


def rarely(n: int) -> st.SearchStrategy[bool]:
    """True about once in ``n`` draws (hypothesis favours small integers, so
    ``integers(0, n) == 0`` would be True far more often than that)."""
    return st.sampled_from([False] * (n - 1) + [True])


def _deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return (c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]


def _frame(first: int, payload: bytes, mask: bytes | None) -> bytes:
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        head = bytes([first, bit | n])
    elif n < 1 << 16:
        head = struct.pack("!BBH", first, bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, bit | 127, n)
    if mask is None:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


data_payloads = st.one_of(
    st.text(max_size=30).map(str.encode),
    st.text(max_size=30).map(str.encode),
    st.binary(max_size=40),
    st.binary(max_size=1100),  # sometimes past the harnesses' 1024-byte limit
)
close_payloads = st.one_of(
    st.just(b""),
    st.binary(max_size=3),
    st.tuples(st.sampled_from(CLOSE_CODES), st.text(max_size=10)).map(
        lambda c: c[0].to_bytes(2, "big") + c[1].encode()
    ),
)


def _frame_of(first: int, payload: bytes, masked: bool, flip: bool) -> bytes:
    return _frame(first, payload, MASK if masked is not flip else None)


@st.composite
def message_frames(draw: st.DrawFn, *, masked: bool, deflate: bool) -> bytes:
    """One message as a peer may send it: a single frame, or fragments with
    control frames between them; compressed (RSV1 on the first frame) mostly
    only where deflate was agreed."""
    opcode = draw(st.sampled_from([0x1, 0x2]))
    compressed = draw(st.booleans() if deflate else rarely(20))
    payload = draw(data_payloads)
    if compressed:
        payload = _deflate(payload)
    parts = draw(st.integers(1, 4))
    cut = sorted(
        draw(st.lists(st.integers(0, len(payload)), min_size=parts - 1, max_size=parts - 1))
    )
    bounds = [0, *cut, len(payload)]
    out = b""
    for k in range(parts):
        first = (0x80 if k == parts - 1 else 0) | (opcode if k == 0 else 0)
        if k == 0 and compressed:
            first |= 0x40
        flip = draw(rarely(50))
        out += _frame_of(first, payload[bounds[k] : bounds[k + 1]], masked, flip)
        if k < parts - 1 and draw(rarely(4)):
            out += _frame_of(0x89, draw(st.binary(max_size=8)), masked, flip=False)
    return out


@st.composite
def odd_frame(draw: st.DrawFn, *, masked: bool) -> bytes:
    """A control frame or any first byte at all."""
    first = draw(st.one_of(st.sampled_from([0x88, 0x89, 0x8A, 0x09]), st.integers(0, 255)))
    payload = draw(close_payloads if first & 0x0F == 0x8 else data_payloads)
    return _frame_of(first, payload, masked, flip=draw(rarely(10)))


def frame_bytes(*, masked: bool, deflate: bool) -> st.SearchStrategy[bytes]:
    message = message_frames(masked=masked, deflate=deflate)
    return st.one_of(*[message] * 9, odd_frame(masked=masked))


garbage = st.binary(min_size=1, max_size=6)
# A hint most of the time: accept at once, move the clock slowly.
BIASES = st.sampled_from([0x00, 0x00, 0x00, 0xFF])


@st.composite
def upgrade_request(draw: st.DrawFn) -> bytes:
    """An upgrade request, valid or broken in one place; or a plain request."""
    broken = draw(
        st.sampled_from([None] * 8 + ["method", "http", "host", "upgrade", "key", "version"])
    )
    method = draw(st.sampled_from(["POST", "HEAD", "PUT"])) if broken == "method" else "GET"
    version = draw(st.sampled_from(["1.0", "2.0"])) if broken == "http" else "1.1"
    path = draw(st.sampled_from(["", "ws", "ws?t=1", "healthz"]))
    lines = [f"{method} /{path} HTTP/{version}"]
    if broken != "host":
        lines.append("Host: fuzz.test")
    if broken != "upgrade":
        lines += ["Upgrade: websocket", "Connection: keep-alive, Upgrade"]
    key = "AAECAwQFBgcICQoLDA0ODw=="
    if broken == "key":
        key = draw(st.sampled_from(["AAECAwQFBgcICQoLDA0ODw=", "", "!", key + ", " + key]))
    lines.append(f"Sec-WebSocket-Key: {key}")
    if broken != "version" or draw(st.booleans()):
        lines.append(f"Sec-WebSocket-Version: {'8' if broken == 'version' else '13'}")
    if draw(st.booleans()):
        lines.append(
            "Sec-WebSocket-Extensions: "
            + draw(
                st.sampled_from(
                    [
                        "permessage-deflate",
                        "permessage-deflate; client_max_window_bits",
                        "permessage-deflate; server_max_window_bits=9",
                        "permessage-deflate; server_max_window_bits=7",
                        "x-unknown, permessage-deflate; client_no_context_takeover",
                    ]
                )
            )
        )
    if draw(st.booleans()):
        protocols = draw(st.lists(st.sampled_from(["chat", "wshub.v1", "wshub.bearer.abc"])))
        lines.append("Sec-WebSocket-Protocol: " + ", ".join(protocols[:3]))
    if draw(st.booleans()):
        lines.append(f"Origin: {draw(st.sampled_from(['http://localhost:5173', 'null']))}")
    if draw(rarely(20)):
        lines.append("X-Big: " + "a" * 2100)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@st.composite
def server_input(draw: st.DrawFn) -> bytes:
    options = draw(st.integers(0, 255)) & (0xDF | draw(BIASES))  # mostly accept
    if draw(BIASES) == 0 and options & 7 in (5, 6):
        options &= 0xF8  # mostly an upgrade, not a plain HTTP request
    pace = draw(st.integers(0, 255)) & (0x7F | draw(BIASES))  # mostly 0 or 1 s steps
    parts = [draw(upgrade_request())] if options & 7 == 0 else []
    deflate = bool(options & 0x08) and options & 7 in (0, 2, 4, 7)
    frames = frame_bytes(masked=True, deflate=deflate)
    parts += draw(st.lists(st.one_of(*[frames] * 9, garbage), min_size=1, max_size=8))
    return bytes([options, pace]) + b"".join(parts)


@given(server_input())
@FUZZ
def test_server_core_keeps_its_contract(data: bytes) -> None:
    server_bytes.test_one_input(data)


@st.composite
def handshake_response(draw: st.DrawFn) -> bytes:
    """A response to the client's upgrade: valid 101s, broken ones, refusals."""
    status = draw(st.sampled_from(["101 Switching Protocols"] * 6 + ["403 Forbidden", "100 OK"]))
    lines = [f"HTTP/1.1 {status}"]
    if not draw(rarely(10)):
        lines += ["Upgrade: websocket", "Connection: Upgrade"]
    accept = client_bytes.ACCEPT.decode()
    lines.append(f"Sec-WebSocket-Accept: {draw(st.sampled_from([accept] * 8 + ['x', '']))}")
    if draw(st.booleans()):
        lines.append(
            "Sec-WebSocket-Extensions: "
            + draw(
                st.sampled_from(
                    [
                        "permessage-deflate; server_no_context_takeover",
                        "permessage-deflate",
                        "permessage-deflate; client_max_window_bits=8",
                        "permessage-deflate; server_max_window_bits=16",
                        "x-other",
                    ]
                )
            )
        )
    if draw(st.booleans()):
        lines.append(f"Sec-WebSocket-Protocol: {draw(st.sampled_from(['chat', 'other']))}")
    if status.startswith("403"):
        lines.append("Content-Length: 3")
        return ("\r\n".join(lines) + "\r\n\r\nno!").encode()
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@st.composite
def client_input(draw: st.DrawFn) -> bytes:
    options = draw(st.integers(0, 255)) & (0xBF | draw(BIASES))  # mostly no close at open
    options |= 0x18 & ~draw(BIASES)  # mostly offer deflate and subprotocols
    pace = draw(st.integers(0, 255)) & (0x7F | draw(BIASES))
    parts = [draw(handshake_response())] if options & 7 == 0 else []
    deflate = bool(options & 0x08) and options & 7 in (0, 2, 3, 7)
    frames = frame_bytes(masked=False, deflate=deflate)
    parts += draw(st.lists(st.one_of(*[frames] * 9, garbage), min_size=1, max_size=8))
    return bytes([options, pace]) + b"".join(parts)


@given(client_input())
@FUZZ
def test_client_core_keeps_its_contract(data: bytes) -> None:
    client_bytes.test_one_input(data)


FRAME_FIRST_BYTES = st.one_of(
    st.sampled_from([0x81, 0x82, 0x01, 0x02, 0x00, 0x80, 0x88, 0x89, 0x8A, 0xC1, 0xC2, 0x41]),
    st.integers(0, 255),
)


@st.composite
def frame_spec(draw: st.DrawFn) -> bytes:
    """fuzz_frames' layout: options, then (first byte, length byte, payload)*."""
    out = bytearray([draw(st.integers(0, 255))])
    for _ in range(draw(st.integers(0, 8))):
        first = draw(FRAME_FIRST_BYTES)
        deflated = draw(st.booleans()) and first & 0x40
        payload = draw(st.one_of(st.binary(max_size=127), st.text(max_size=40).map(str.encode)))
        payload = payload[:127]
        out += bytes([first, len(payload) | (0x80 if deflated else 0)]) + payload
    if draw(st.booleans()):
        out += draw(st.binary(max_size=1))
    return bytes(out)


@given(frame_spec())
@FUZZ
def test_frames_give_the_same_outcome_for_any_read_size(data: bytes) -> None:
    frames.test_one_input(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=12,
)


@st.composite
def envelope_input(draw: st.DrawFn) -> bytes:
    options = draw(st.integers(0, 255))
    if options & 3 == 3:  # fields joined by NUL
        parts = draw(st.lists(st.text(max_size=12), min_size=1, max_size=4))
        return bytes([options]) + "\x00".join(parts).encode("utf-8", "surrogatepass")
    fields = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "message_type": st.one_of(st.text(max_size=6), st.integers(), st.none()),
                "topic": st.one_of(st.text(max_size=6), st.just(""), st.integers()),
                "id": st.one_of(st.integers(), st.text(max_size=6), st.booleans(), st.floats()),
                "payload": json_values,
            },
        )
    )
    text = draw(st.one_of(st.just(json.dumps(fields)), st.text(max_size=30)))
    return bytes([options]) + text.encode("utf-8", "surrogatepass")


@given(envelope_input())
@FUZZ
def test_envelope_decoder_keeps_its_contract(data: bytes) -> None:
    envelope.test_one_input(data)


@st.composite
def mutated_seed(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A committed seed with a few bytes changed and some appended: long,
    meaningful operation sequences that random bytes rarely reach."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data) + draw(st.binary(max_size=60))


HUB_SEEDS = sorted(hub_ops.seeds().values())


@given(st.one_of(st.binary(min_size=15, max_size=500), mutated_seed(HUB_SEEDS)))
@settings(FUZZ, max_examples=400)
def test_hub_operation_sequences_keep_the_invariants(data: bytes) -> None:
    hub_ops.test_one_input(data)
