"""Hostile clients against a real ``wshub serve`` process (issue 4, item 5).

One server (``--token``, ``--allow-origin``, ``--metrics``, ``--compression``)
serves the whole module while a canary (``websockets`` clients: a subscriber
and a publisher sending a numbered message every 30 ms) stays connected. Each
test is one probe over a raw socket, sending bytes no library would; after
each, the server must be alive and the canary must have received every
message so far, in order, and one more published after the probe. The last
test checks that only the canary's two connections and the descriptors the
server started with remain, and that its memory stayed bounded. Probes that
fail authentication run last but one (see that section).

Timeouts here are hang guards (``READ_TIMEOUT``); nothing asserts on time.
"""

from __future__ import annotations

import base64
import binascii
import json
import socket
import struct
from collections.abc import Callable, Iterator

import anyio
import pytest
from hostile_helpers import (
    ORIGIN,
    READ_TIMEOUT,
    TOKEN,
    TOPIC,
    HealthError,
    HostileHub,
    Probe,
    deflate,
    fetch_metrics,
    frame,
    nested,
    running_hub,
    upgrade_request,
    wait_for_metric,
)
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.anyio

TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0
MIB = 1 << 20
MAX_HEAD = 16 * 1024  # Limits.max_head_size
MAX_ENVELOPE = 256 * 1024  # HubConfig.max_envelope_size
MAX_DEPTH = 32  # HubConfig.max_depth
MAX_ERRORS = 10  # HubConfig.max_errors
BURST = 2000  # HubConfig.message_burst
MAX_CONNECTIONS = 100  # serve --max-connections (the CLI has no per-principal bound)
CANARY_CONNECTIONS = 2  # the canary's subscriber and publisher
RSS_GROWTH_BOUND_KIB = 30 * 1024
# RFC 6455 §7.4.1 plus the IANA-registered 1012-1014: what a peer may send.
RECEIVABLE_CLOSE_CODES = frozenset(
    {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
) | frozenset(range(3000, 5000))

hypothesis_settings = settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def hub() -> Iterator[HostileHub]:
    with running_hub("--compression", "--max-connections", str(MAX_CONNECTIONS)) as running:
        yield running


@pytest.fixture(autouse=True)
def _canary_unharmed(hub: HostileHub) -> Iterator[None]:
    """After every probe: the server lives and the canary missed nothing."""
    yield
    hub.assert_healthy()


@pytest.fixture
def port(hub: HostileHub) -> int:
    return hub.port


def with_line(head: bytes, line: bytes) -> bytes:
    """Insert one raw header line just before the blank line ending ``head``."""
    assert head.endswith(b"\r\n\r\n")
    return head[:-2] + line + b"\r\n\r\n"


async def still_served(probe: Probe, request_id: int = 99) -> None:
    """The connection still works: a command gets its reply."""
    await probe.send(frame(TEXT, json.dumps({"message_type": "whoami", "id": request_id}).encode()))
    reply = await probe.recv_json()
    assert reply["message_type"] == "reply", reply
    assert reply["id"] == request_id, reply
    assert reply["ok"] is True, reply


def text_frame(envelope: object) -> bytes:
    return frame(TEXT, json.dumps(envelope).encode())


# -- the opening handshake ---------------------------------------------------

Build = Callable[[int], bytes]

HANDSHAKE_PROBES: list[tuple[str, Build, int, dict[str, str]]] = [
    (
        "tls-client-hello-on-plain-port",
        lambda port: (
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(32)) + b"\r\n\r\n"
        ),
        400,
        {},
    ),
    ("request-line-without-version", lambda p: upgrade_request(p, request_line="GET /"), 400, {}),
    ("bad-method-token", lambda p: upgrade_request(p, request_line="G@T / HTTP/1.1"), 400, {}),
    (
        "header-line-without-colon",
        lambda p: with_line(upgrade_request(p), b"X-Probe no colon"),
        400,
        {},
    ),
    ("space-before-colon", lambda p: with_line(upgrade_request(p), b"X-Probe : v"), 400, {}),
    ("nul-in-header-value", lambda p: with_line(upgrade_request(p), b"X-Probe: a\x00b"), 400, {}),
    ("lone-cr-in-header-value", lambda p: with_line(upgrade_request(p), b"X-Probe: a\rb"), 400, {}),
    ("missing-host", lambda p: upgrade_request(p, omit=["Host"]), 400, {}),
    (
        "repeated-host",
        lambda p: upgrade_request(p, extra=[("Host", "other.example")]),
        400,
        {},
    ),
    (
        "post-upgrade",
        lambda p: upgrade_request(p, request_line="POST / HTTP/1.1"),
        405,
        {"allow": "GET"},
    ),
    ("http-1.0", lambda p: upgrade_request(p, request_line="GET / HTTP/1.0"), 400, {}),
    ("http-2.0", lambda p: upgrade_request(p, request_line="GET / HTTP/2.0"), 505, {}),
    ("missing-key", lambda p: upgrade_request(p, omit=["Sec-WebSocket-Key"]), 400, {}),
    (
        "repeated-key",
        lambda p: upgrade_request(
            p, extra=[("Sec-WebSocket-Key", base64.b64encode(bytes(16)).decode())]
        ),
        400,
        {},
    ),
    (
        "wrong-version",
        lambda p: upgrade_request(p, version="8"),
        426,
        {"sec-websocket-version": "13"},
    ),
    (
        "two-versions",
        lambda p: upgrade_request(p, version="13, 8"),
        426,
        {"sec-websocket-version": "13"},
    ),
    (
        "missing-version",
        lambda p: upgrade_request(p, omit=["Sec-WebSocket-Version"]),
        400,
        {"sec-websocket-version": "13"},
    ),
    ("no-connection-upgrade", lambda p: upgrade_request(p, omit=["Connection"]), 400, {}),
    (
        "no-upgrade-header-is-plain-http",
        lambda p: upgrade_request(p, omit=["Upgrade"]),
        426,
        {"upgrade": "websocket"},
    ),
    (
        "repeated-origin",
        lambda p: upgrade_request(p, origin=ORIGIN, extra=[("Origin", ORIGIN)]),
        400,
        {},
    ),
]


@pytest.mark.parametrize(
    ("build", "status", "headers"),
    [pytest.param(b, s, h, id=name) for name, b, s, h in HANDSHAKE_PROBES],
)
async def test_malformed_handshake_is_refused(
    port: int, build: Build, status: int, headers: dict[str, str]
) -> None:
    """Each request carries a valid token: the refusal is the protocol's, not auth's."""
    async with Probe.open(port) as probe:
        response = await probe.request(build(port))
        assert response.status == status, response
        for name, value in headers.items():
            assert response.headers.get(name) == value, response
        assert response.headers.get("connection") == "close", response
        assert await probe.read_to_end() == b""


async def test_obs_fold_is_unfolded_not_refused(port: int) -> None:
    """RFC 9112 §5.2 lets a server replace obs-fold with spaces instead of
    answering 400; h11 (and so wshub) unfolds, and the upgrade succeeds."""
    async with Probe.open(port) as probe:
        await probe.upgrade_with(with_line(upgrade_request(port), b"X-Probe: a\r\n  folded"))
        await still_served(probe)


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("not base64!", "not base64"),
        (base64.b64encode(bytes(15)).decode(), "15 bytes"),
        (base64.b64encode(bytes(17)).decode(), "17 bytes"),
        (base64.b64encode(bytes(16)).decode().rstrip("="), "16 bytes, padding missing"),
        (base64.b64encode(bytes(16)).hex(), "hex instead of base64"),
    ],
)
async def test_invalid_key_is_400(port: int, key: str, why: str) -> None:
    async with Probe.open(port) as probe:
        response = await probe.request(upgrade_request(port, key=key))
        assert response.status == 400, (why, response)


def _is_valid_key(key: str) -> bool:
    try:
        return len(base64.b64decode(key.strip(), validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


@hypothesis_settings
@given(key=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40))
@example(key="")
async def test_any_key_not_16_base64_bytes_is_400(port: int, key: str) -> None:
    if _is_valid_key(key):
        async with Probe.open(port) as probe:
            await probe.upgrade(key=key)  # a valid key is accepted: the rule is exact
        return
    async with Probe.open(port) as probe:
        response = await probe.request(upgrade_request(port, key=key))
        assert response.status == 400, (key, response)


def padded(head: bytes, total: int) -> bytes:
    """``head`` grown to ``total`` bytes by ``X-Pad-N`` lines of under 2 KiB each
    (so that only the size of the whole head is at stake)."""
    missing = total - len(head)
    count = -(-missing // 2000)
    sizes = [missing // count + (i < missing % count) for i in range(count)]
    lines = b""
    for i, size in enumerate(sizes):  # each size includes the line's CRLF
        prefix = f"X-Pad-{i}: ".encode()
        lines += prefix + b"p" * (size - len(prefix) - 2) + b"\r\n"
    return head[:-2] + lines + b"\r\n"


@pytest.mark.parametrize(("total", "status"), [(MAX_HEAD, 101), (MAX_HEAD + 1, 431)])
async def test_head_size_limit_is_exact(port: int, total: int, status: int) -> None:
    """``Limits.max_head_size`` (16 KiB) counts the whole head, blank line included."""
    head = padded(upgrade_request(port), total)
    assert len(head) == total
    async with Probe.open(port) as probe:
        response = await probe.request(head)
        assert response.status == status, response


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "[::1]:{port}"])
async def test_loopback_host_names_are_accepted(port: int, host: str) -> None:
    """The names a local client uses must keep working once a Host allowlist exists."""
    async with Probe.open(port) as probe:
        await probe.upgrade(host=host.format(port=port))
        await still_served(probe)


# -- frames after the upgrade --------------------------------------------------

FRAME_PROBES: list[tuple[str, bytes, int]] = [
    ("unmasked-text", frame(TEXT, b'{"message_type":"whoami","id":1}', mask=None), 1002),
    ("unmasked-ping", frame(PING, b"hi", mask=None), 1002),
    ("rsv1-without-extension", frame(TEXT, b"{}", rsv=4), 1002),
    ("rsv2", frame(TEXT, b"{}", rsv=2), 1002),
    ("rsv3", frame(TEXT, b"{}", rsv=1), 1002),
    ("rsv1-on-ping", frame(PING, b"", rsv=4), 1002),
    ("ping-126-bytes", frame(PING, b"p" * 126), 1002),
    ("pong-126-bytes", frame(PONG, b"p" * 126), 1002),
    ("close-126-bytes", frame(CLOSE, struct.pack("!H", 1000) + b"r" * 124), 1002),
    ("fragmented-ping", frame(PING, b"hi", fin=False), 1002),
    ("continuation-without-start", frame(CONTINUATION, b"{}"), 1002),
    (
        "new-message-inside-fragmented-one",
        frame(TEXT, b"{", fin=False) + frame(TEXT, b"{}"),
        1002,
    ),
    ("length-16-bit-non-minimal", frame(TEXT, b"{}", length_bytes=2), 1002),
    ("length-64-bit-non-minimal", frame(TEXT, b"{}", length_bytes=8), 1002),
    ("length-64-bit-msb-set", frame(TEXT, b"", length=1 << 63, length_bytes=8), 1002),
    ("close-with-1-byte-payload", frame(CLOSE, b"\x03"), 1002),
    ("close-reason-invalid-utf8", frame(CLOSE, struct.pack("!H", 1000) + b"\xff\xfe"), 1007),
    ("binary-frame-in-hub-mode", frame(BINARY, b"\x00\x01\x02"), 1003),
    # Refused from the header alone: the payload is never sent.
    ("length-2**63-1-announced", frame(TEXT, b"", length=(1 << 63) - 1), 1009),
    ("length-1-MiB-plus-1-announced", frame(TEXT, b"", length=MIB + 1), 1009),
    ("binary-1-MiB-plus-1-announced", frame(BINARY, b"", length=MIB + 1), 1009),
]


@pytest.mark.parametrize(
    ("data", "code"), [pytest.param(d, c, id=name) for name, d, c in FRAME_PROBES]
)
async def test_bad_frame_closes_with_its_code(port: int, data: bytes, code: int) -> None:
    async with Probe.open(port) as probe:
        await probe.upgrade()
        await probe.send(data)
        close = await probe.expect_close(code)
        assert close.before == [], close


async def test_binary_frame_close_reason(port: int) -> None:
    async with Probe.open(port) as probe:
        await probe.upgrade()
        await probe.send(frame(BINARY, b"\x00"))
        await probe.expect_close(1003, "binary messages are not accepted")


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
async def test_reserved_opcode_closes_1002(port: int, opcode: int) -> None:
    async with Probe.open(port) as probe:
        await probe.upgrade()
        await probe.send(frame(opcode, b"x"))
        await probe.expect_close(1002)


@hypothesis_settings
@given(code=st.integers(0, 0xFFFF).filter(lambda c: c not in RECEIVABLE_CLOSE_CODES))
@example(code=999)
@example(code=1004)
@example(code=1005)
@example(code=1006)
@example(code=1015)
@example(code=2999)
@example(code=5000)
async def test_close_with_invalid_code_closes_1002(port: int, code: int) -> None:
    async with Probe.open(port) as probe:
        await probe.upgrade()
        await probe.send(frame(CLOSE, struct.pack("!H", code) + b"bye"))
        await probe.expect_close(1002)


@hypothesis_settings
@given(code=st.sampled_from(sorted(RECEIVABLE_CLOSE_CODES)))
@example(code=1000)
@example(code=4999)
async def test_close_with_valid_code_is_echoed(port: int, code: int) -> None:
    """The control for the test above: valid codes are echoed (RFC 6455 §5.5.1)."""
    async with Probe.open(port) as probe:
        await probe.upgrade()
        await probe.send(frame(CLOSE, struct.pack("!H", code) + b"bye"))
        await probe.expect_close(code)


def _invalid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


@hypothesis_settings
@given(
    prefix=st.text(max_size=20).map(lambda t: t.encode("utf-8")),
    bad=st.binary(min_size=1, max_size=12).filter(_invalid_utf8),
    split=st.integers(0, 40),
)
@example(prefix=b'{"a":"', bad=b"\xed\xa0\x80", split=7)  # an encoded UTF-16 surrogate
@example(prefix=b"", bad=b"\xc0\xaf", split=0)  # overlong "/"
async def test_invalid_utf8_text_closes_1007(
    port: int, prefix: bytes, bad: bytes, split: int
) -> None:
    """In one frame or split across two fragments at any point."""
    payload = prefix + bad
    async with Probe.open(port) as probe:
        await probe.upgrade()
        if 0 < split < len(payload):
            data = frame(TEXT, payload[:split], fin=False) + frame(CONTINUATION, payload[split:])
        else:
            data = frame(TEXT, payload)
        await probe.send(data)
        await probe.expect_close(1007)


async def test_message_of_exactly_max_size_passes_the_frame_limit(port: int) -> None:
    """1 MiB is allowed by ``Limits.max_message_size``; the hub then refuses it
    as an envelope (``payload_too_large``) without closing."""
    async with Probe.open(port) as probe:
        await probe.upgrade()
        await probe.send(frame(TEXT, b"x" * MIB))
        error = await probe.recv_json()
        assert error["message_type"] == "error", error
        assert error["error"]["code"] == "payload_too_large", error
        await still_served(probe)


async def test_fragments_adding_up_past_max_size_close_1009(port: int) -> None:
    async with Probe.open(port) as probe:
        await probe.upgrade()
        part = b"x" * (400 * 1024)
        data = frame(TEXT, part, fin=False) + frame(CONTINUATION, part, fin=False)
        data += frame(CONTINUATION, part)  # 1.2 MiB in all
        async with anyio.create_task_group() as tg:
            tg.start_soon(probe.send, data)
            await probe.expect_close(1009)


async def test_compression_bomb_closes_1009(port: int, hub: HostileHub) -> None:
    """64 MiB of text deflated to ~64 KB: inflation stops at the 1 MiB limit."""
    bomb = deflate(b"a" * (64 * MIB))
    assert len(bomb) < 100 * 1024
    extension = [("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")]
    async with Probe.open(port) as probe:
        await probe.upgrade(extra=extension)
        assert probe.deflate
        # The control: a compressed command is understood.
        await probe.send(frame(TEXT, deflate(b'{"message_type":"whoami","id":1}'), rsv=4))
        reply = await probe.recv_json()
        assert reply["ok"] is True, reply
        await probe.send(frame(TEXT, bomb, rsv=4))
        await probe.expect_close(1009)


# -- envelopes ---------------------------------------------------------------

ENVELOPE_PROBES: list[tuple[str, bytes, str, object]] = [
    ("not-json", b'{"message_type": ', "invalid_json", None),
    ("nan", b'{"message_type":"echo","id":1,"payload":NaN}', "invalid_json", None),
    ("infinity", b'{"message_type":"echo","payload":-Infinity}', "invalid_json", None),
    ("array", b'[{"message_type":"echo","id":1}]', "invalid_envelope", None),
    ("string", b'"subscribe"', "invalid_envelope", None),
    ("null", b"null", "invalid_envelope", None),
    ("missing-message-type", b'{"payload":1}', "invalid_envelope", None),
    ("missing-message-type-with-id", b'{"payload":1,"id":7}', "invalid_envelope", 7),
    ("message-type-number", b'{"message_type":5}', "invalid_envelope", None),
    ("message-type-empty", b'{"message_type":""}', "invalid_envelope", None),
    ("message-type-129-chars", b'{"message_type":"' + b"m" * 129 + b'"}', "invalid_envelope", None),
    ("id-boolean", b'{"message_type":"echo","id":true}', "invalid_envelope", None),
    ("id-object", b'{"message_type":"echo","id":{}}', "invalid_envelope", None),
    (
        "id-129-chars",
        b'{"message_type":"echo","id":"' + b"i" * 129 + b'"}',
        "invalid_envelope",
        None,
    ),
    ("topic-empty", b'{"message_type":"subscribe","topic":"","id":3}', "invalid_envelope", 3),
    (
        "topic-257-chars",
        b'{"message_type":"subscribe","topic":"' + b"t" * 257 + b'","id":4}',
        "invalid_envelope",
        4,
    ),
    ("topic-missing", b'{"message_type":"publish","payload":1,"id":5}', "invalid_envelope", 5),
    ("unknown-type-without-id", b'{"message_type":"frobnicate"}', "unknown_message_type", None),
    ("unknown-command", b'{"message_type":"frobnicate","id":6}', "unknown_command", 6),
    (
        "too-deep",
        b'{"message_type":"echo","id":8,"payload":' + nested(MAX_DEPTH).encode() + b"}",
        "payload_too_deep",
        8,
    ),
    (
        "deep-enough-to-break-the-json-parser",
        b'{"message_type":"echo","payload":' + nested(100_000).encode() + b"}",
        "payload_too_deep",
        None,
    ),
]


@pytest.mark.parametrize(
    ("data", "code", "request_id"),
    [pytest.param(d, c, i, id=name) for name, d, c, i in ENVELOPE_PROBES],
)
async def test_bad_envelope_gets_its_error_and_the_connection_lives(
    port: int, data: bytes, code: str, request_id: object
) -> None:
    async with Probe.open(port) as probe:
        await probe.upgrade()
        await probe.send(frame(TEXT, data))
        answer = await probe.recv_json()
        if request_id is None:
            assert answer["message_type"] == "error", answer
            assert "id" not in answer, answer
        else:
            assert answer["message_type"] == "reply", answer
            assert answer["id"] == request_id, answer
            assert answer["ok"] is False, answer
        assert answer["error"]["code"] == code, answer
        assert answer["payload"] is None, answer
        await still_served(probe)


async def test_depth_limit_is_exact(port: int) -> None:
    """The envelope counts as depth 1: 31 levels of payload pass, 32 do not."""
    async with Probe.open(port) as probe:
        await probe.upgrade()
        for depth, ok in ((MAX_DEPTH - 1, True), (MAX_DEPTH, False)):
            text = '{"message_type":"echo","id":1,"payload":' + nested(depth) + "}"
            await probe.send(frame(TEXT, text.encode()))
            reply = await probe.recv_json()
            assert reply["ok"] is ok, (depth, reply)
            if not ok:
                assert reply["error"]["code"] == "payload_too_deep", reply


async def test_envelope_size_limit_is_exact(port: int) -> None:
    """256 KiB of UTF-8 passes; one byte more is ``payload_too_large``."""
    async with Probe.open(port) as probe:
        await probe.upgrade()
        for size, ok in ((MAX_ENVELOPE, True), (MAX_ENVELOPE + 1, False)):
            head, tail = '{"message_type":"echo","id":1,"payload":"', '"}'
            text = head + "é" * ((size - len(head) - len(tail)) // 2)
            text += "e" * (size - len(text.encode()) - len(tail)) + tail
            assert len(text.encode()) == size
            await probe.send(frame(TEXT, text.encode()))
            answer = await probe.recv_json()
            if ok:
                assert answer["message_type"] == "reply", str(answer)[:200]
                assert answer["ok"] is True, str(answer)[:200]
            else:  # refused before its id is read: an error envelope
                assert answer["message_type"] == "error", answer
                assert answer["error"]["code"] == "payload_too_large", answer


async def test_ten_errors_are_tolerated_the_eleventh_closes_1008(port: int) -> None:
    async with Probe.open(port) as probe:
        await probe.upgrade()
        for _ in range(MAX_ERRORS):
            await probe.send(frame(TEXT, b"not json"))
            error = await probe.recv_json()
            assert error["error"]["code"] == "invalid_json", error
        await still_served(probe)
        await probe.send(frame(TEXT, b"not json"))
        close = await probe.expect_close(1008, "too many invalid messages")
        [last] = close.before
        assert json.loads(last.payload)["error"]["code"] == "invalid_json"


async def test_a_burst_of_max_burst_messages_is_served_in_full(port: int) -> None:
    """The token bucket starts full: 2000 messages at once are all handled."""
    quiet = text_frame({"message_type": "unsubscribe", "topic": "nothing"})  # no reply
    last = text_frame({"message_type": "whoami", "id": "last"})
    async with Probe.open(port) as probe:
        await probe.upgrade()
        await probe.send(quiet * (BURST - 1) + last)
        reply = await probe.recv_json()  # nothing else came first: no rate_limited
        assert reply["id"] == "last", reply
        assert reply["ok"] is True, reply


async def test_message_flood_gets_rate_limited_then_1008(port: int) -> None:
    """8000 messages at once: 2000 of burst, then 1000/s; the server handles
    them far faster than 6 s, so the bucket runs dry whatever the load."""
    quiet = text_frame({"message_type": "unsubscribe", "topic": "nothing"})
    async with Probe.open(port) as probe:
        await probe.upgrade()
        async with anyio.create_task_group() as tg:
            tg.start_soon(probe.send, quiet * 8000)
            close = await probe.expect_close(1008, "message rate exceeded")
        codes = [json.loads(f.payload)["error"]["code"] for f in close.before]
        assert codes == ["rate_limited"] * (MAX_ERRORS + 1), codes


# -- resource exhaustion ----------------------------------------------------


async def test_client_that_never_reads_is_closed_and_others_see_no_gap(hub: HostileHub) -> None:
    """A subscriber of the canary's topic with a tiny receive buffer stops
    reading; large messages published to the topic overflow its outbox. The
    server closes it (1013 ``slow consumer``) and, as the client still does
    not read, drops the transport after the 1 s grace: its descriptor is
    released while the client has read nothing. The canary, on the same
    topic, misses nothing."""
    port = hub.port
    server = hub.server
    await server.wait_fd_count(hub.fds_start)
    before = await fetch_metrics(port)
    slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        slow.connect(("127.0.0.1", port))
        slow.sendall(upgrade_request(port))
        slow.sendall(
            frame(TEXT, json.dumps({"message_type": "subscribe", "topic": TOPIC}).encode())
        )
        async with Probe.open(port) as publisher:
            await publisher.upgrade()
            await wait_for_metric(port, f'wshub_topic_subscribers{{topic="{TOPIC}"}}', 2)
            blob = "x" * (200 * 1024)
            delivered = 2
            for i in range(200):  # 40 MiB at most; a few MiB suffice
                publish = {"message_type": "publish", "topic": TOPIC, "id": i}
                await publisher.send(text_frame({**publish, "payload": {"blob": blob}}))
                reply = await publisher.recv_json()
                assert reply["ok"] is True, str(reply)[:300]
                delivered = reply["payload"]["delivered"]
                if delivered == 1:  # the slow one is no longer a recipient
                    break
            assert delivered == 1, "the slow consumer was never closed"
        after = await wait_for_metric(port, "wshub_connections", CANARY_CONNECTIONS)
        closes = after["wshub_slow_consumer_closes_total"]
        assert closes == before["wshub_slow_consumer_closes_total"] + 1
        # Dropped although we still have not read a byte (publisher gone too).
        await server.wait_fd_count(hub.fds_start)
        # What did reach us: whole frames then, if the stream was not cut, 1013.
        slow.settimeout(READ_TIMEOUT)
        received = await anyio.to_thread.run_sync(_read_until_closed, slow)
    finally:
        slow.close()
    frames, cut = _parse_server_stream(received)
    assert frames, "not even the welcome arrived"
    if not cut and frames[-1][0] == CLOSE:
        assert struct.unpack("!H", frames[-1][1][:2])[0] == 1013
    assert all(opcode == TEXT for opcode, _ in frames[:-1])


def _read_until_closed(sock: socket.socket) -> bytes:
    data = bytearray()
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return bytes(data)


def _parse_server_stream(data: bytes) -> tuple[list[tuple[int, bytes]], bool]:
    """The 101 head, then unmasked frames: [(opcode, payload)], and whether cut short."""
    assert data.startswith(b"HTTP/1.1 101 "), data[:100]
    pos = data.index(b"\r\n\r\n") + 4
    frames: list[tuple[int, bytes]] = []
    while pos < len(data):
        if len(data) - pos < 2:
            return frames, True
        first, second = data[pos], data[pos + 1]
        length, pos = second & 0x7F, pos + 2
        if len(data) - pos < {126: 2, 127: 8}.get(length, 0):
            return frames, True
        if length == 126:
            (length,), pos = struct.unpack("!H", data[pos : pos + 2]), pos + 2
        elif length == 127:
            (length,), pos = struct.unpack("!Q", data[pos : pos + 8]), pos + 8
        if pos + length > len(data):
            return frames, True
        frames.append((first & 0x0F, data[pos : pos + length]))
        pos += length
    return frames, False


async def test_connection_flood_past_the_total_limit_gets_503(hub: HostileHub) -> None:
    """``--max-connections 100`` with the canary's two connections in: 98
    more are accepted, the next gets 503 + Retry-After; when they go, the
    count falls back and a new connection is accepted again."""
    port = hub.port
    await wait_for_metric(port, "wshub_connections", CANARY_CONNECTIONS)
    streams = []
    try:
        for _ in range(MAX_CONNECTIONS - CANARY_CONNECTIONS):
            probe = Probe(await anyio.connect_tcp("127.0.0.1", port), port)
            streams.append(probe.stream)
            await probe.upgrade()
        await wait_for_metric(port, "wshub_connections", MAX_CONNECTIONS)
        async with Probe.open(port) as extra:
            response = await extra.request(upgrade_request(port))
            assert response.status == 503, response
            assert int(response.headers["retry-after"]) > 0, response
        hub.assert_healthy()  # the canary is served while the server is full
    finally:
        for stream in streams:
            await stream.aclose()
    await wait_for_metric(port, "wshub_connections", CANARY_CONNECTIONS)
    await hub.server.wait_fd_count(hub.fds_start)
    async with Probe.open(port) as probe:
        await probe.upgrade()
        await still_served(probe)


# -- authentication and Origin ------------------------------------------------
# Last but one: if failed attempts from one address are ever rate limited,
# only these tests and not the probes above meet that limit.


@pytest.mark.parametrize("origin", [None, ORIGIN, ORIGIN.upper(), ORIGIN + "/"])
async def test_valid_token_with_allowed_or_no_origin_is_101(port: int, origin: str | None) -> None:
    """No Origin: a non-browser client, allowed with valid credentials."""
    async with Probe.open(port) as probe:
        await probe.upgrade(origin=origin)
        await still_served(probe)


async def test_no_token_is_401_with_bearer_challenge(port: int) -> None:
    async with Probe.open(port) as probe:
        response = await probe.request(upgrade_request(port, token=None))
        assert response.status == 401, response
        assert response.headers["www-authenticate"].startswith("Bearer"), response


@pytest.mark.parametrize(
    "token", ["wrong", TOKEN + "x", TOKEN[:-1], TOKEN.upper(), "Bearer " + TOKEN]
)
async def test_wrong_token_is_401(port: int, token: str) -> None:
    async with Probe.open(port) as probe:
        response = await probe.request(upgrade_request(port, token=token))
        assert response.status == 401, response
        assert response.headers["www-authenticate"].startswith("Bearer"), response


async def test_token_in_query_string_is_not_read_by_default(port: int) -> None:
    """URLs end up in logs: ``?token=`` is ignored unless enabled."""
    async with Probe.open(port) as probe:
        head = upgrade_request(port, token=None, request_line=f"GET /?token={TOKEN} HTTP/1.1")
        response = await probe.request(head)
        assert response.status == 401, response


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.test",
        "null",  # sandboxed iframes, file:// pages
        "http://app.test.evil.test",
        "http://evil.test/http://app.test",
        "https://app.test",
        "http://app.test:8080",
        "http://sub.app.test",
    ],
)
@pytest.mark.parametrize("token", [TOKEN, None], ids=["valid-token", "no-token"])
async def test_foreign_origin_is_403(port: int, origin: str, token: str | None) -> None:
    """Cross-Site WebSocket Hijacking: a valid token does not help a foreign page."""
    async with Probe.open(port) as probe:
        response = await probe.request(upgrade_request(port, token=token, origin=origin))
        assert response.status == 403, response


# -- the watchers can fail -------------------------------------------------------


async def test_the_canary_reports_a_gap_and_a_dead_server() -> None:
    """On a server of its own: a message skipping an ``n`` is reported as a
    gap, and a killed server as dead, so the checks after each probe can fail."""
    with running_hub() as own:
        published, _ = own.assert_healthy()
        async with Probe.open(own.port) as probe:
            await probe.upgrade()
            skip = {"message_type": "publish", "topic": TOPIC, "payload": {"n": published + 100}}
            await probe.send(text_frame({**skip, "id": 1}))
            assert (await probe.recv_json())["ok"] is True
        with pytest.raises(HealthError, match="gap: expected n="):
            own.assert_healthy()
        own.server.process.kill()  # our own child, by its PID
        own.server.process.wait()
        with pytest.raises(HealthError, match="server died"):
            own.assert_healthy()


# -- at the end -------------------------------------------------------------


async def test_memory_stayed_bounded_and_only_the_canary_remains(hub: HostileHub) -> None:
    """Run last (module order): after every probe above, the server holds the
    canary's two connections and the descriptors it started with, and its
    memory grew by less than 30 MiB, at the end and at its peak."""
    samples = await wait_for_metric(hub.port, "wshub_connections", CANARY_CONNECTIONS)
    assert samples["wshub_pending_commands"] == 0
    assert samples["wshub_subscriptions"] == 1  # the canary's
    await hub.server.wait_fd_count(hub.fds_start)
    rss = hub.server.rss_kib()
    peak = hub.server.peak_rss_kib()
    print(
        f"\nserver RSS: start {hub.rss_start_kib} KiB, end {rss} KiB "
        f"(+{rss - hub.rss_start_kib}), peak {peak} KiB; canary {hub.canary.counts}"
    )
    assert rss - hub.rss_start_kib < RSS_GROWTH_BOUND_KIB
    assert peak - hub.rss_start_kib < RSS_GROWTH_BOUND_KIB
