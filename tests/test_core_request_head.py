"""Request-line and header limits (core/request_head.py, Limits): 414 and 431.

Each limit is met exactly and crossed by one byte; a too-long line is refused
before its end arrives; and the answer never depends on how the bytes were
split (a hypothesis property, against the server and against a byte-at-a-time
reference model of the scanner).
"""

from __future__ import annotations

import pytest
from helpers import KEY, FakeClock
from hypothesis import given, settings
from hypothesis import strategies as st
from test_core_properties import drive, split

from wshub.core import Closed, HandshakeRequest, HttpRequest, Limits, ServerConnection, State
from wshub.core.request_head import HeadScanner, HeadViolation

SMALL = Limits(max_request_line=64, max_header_size=48, max_header_count=8, max_head_size=400)
BASE_HEADERS = [
    "Host: example.com",
    "Upgrade: websocket",
    "Connection: Upgrade",
    f"Sec-WebSocket-Key: {KEY}",
    "Sec-WebSocket-Version: 13",
]


def request_line(length: int, method: str = "GET") -> str:
    """A request line of exactly ``length`` bytes (CRLF not counted)."""
    fixed = len(f"{method} / HTTP/1.1")
    assert length >= fixed
    return f"{method} /{'a' * (length - fixed)} HTTP/1.1"


def head(line: str, headers: list[str]) -> bytes:
    return ("\r\n".join([line, *headers]) + "\r\n\r\n").encode("latin-1")


def padded_header(length: int) -> str:
    """A header line of exactly ``length`` bytes (CRLF not counted)."""
    return "X-Pad: " + "p" * (length - len("X-Pad: "))


def outcome(data: bytes, limits: Limits = SMALL) -> tuple[str, int | None, str]:
    """Feed ``data``: ('request', None, '') if it parsed, else ('refused', status, body)."""
    conn = ServerConnection(limits=limits, clock=FakeClock())
    conn.receive_data(data)
    events = conn.events_received()
    if events and isinstance(events[0], HandshakeRequest | HttpRequest):
        return "request", None, ""
    if not events:
        return "waiting", None, ""
    assert isinstance(events[0], Closed)
    out = conn.data_to_send()
    return "refused", int(out[9:12]), out.split(b"\r\n\r\n", 1)[1].decode()


# -- each limit, exactly at it and one byte over ----------------------------------


def test_request_line_at_and_over_the_limit() -> None:
    at = head(request_line(64), BASE_HEADERS)
    assert outcome(at)[0] == "request"
    over = head(request_line(65), BASE_HEADERS)
    assert outcome(over) == ("refused", 414, "request line too long")


def test_request_line_is_refused_before_its_end_arrives() -> None:
    conn = ServerConnection(limits=SMALL, clock=FakeClock())
    line = request_line(200).encode()
    conn.receive_data(line[:64])
    assert conn.events_received() == []
    assert conn.state is State.CONNECTING
    conn.receive_data(line[64:65])  # byte 65, no CRLF in sight
    [closed] = conn.events_received()
    assert isinstance(closed, Closed)
    assert conn.data_to_send().startswith(b"HTTP/1.1 414 URI Too Long\r\n")
    assert conn.should_close_transport()


def test_a_cr_at_the_limit_waits_for_the_next_byte() -> None:
    line = request_line(64).encode()
    assert outcome(line + b"\r") == ("waiting", None, "")
    assert outcome(line + b"\r\n")[0] == "waiting"  # a valid line; the head goes on
    assert outcome(line + b"\rx") == ("refused", 414, "request line too long")
    assert outcome(line + b"\r\r") == ("refused", 414, "request line too long")
    assert outcome(line + b"\n" + head("", BASE_HEADERS)[2:])[0] == "request"  # bare LF


def test_header_line_at_and_over_the_limit() -> None:
    line = request_line(20)
    assert outcome(head(line, [*BASE_HEADERS, padded_header(48)]))[0] == "request"
    over = head(line, [*BASE_HEADERS, padded_header(49)])
    assert outcome(over) == ("refused", 431, "header line too long")
    # refused at byte 49 of the header line, with no end of line in sight
    prefix = head(line, BASE_HEADERS)[:-2] + padded_header(49).encode()
    assert outcome(prefix[:-1])[0] == "waiting"
    assert outcome(prefix) == ("refused", 431, "header line too long")


def test_header_count_at_and_over_the_limit() -> None:
    line = request_line(20)
    extra = [f"X-{i}: v" for i in range(8 - len(BASE_HEADERS))]
    assert outcome(head(line, [*BASE_HEADERS, *extra]))[0] == "request"
    over = head(line, [*BASE_HEADERS, *extra, "X-9: v"])
    assert outcome(over) == ("refused", 431, "too many header lines")
    # decided at the first byte of the ninth header line
    ninth = head(line, [*BASE_HEADERS, *extra])[:-2]
    assert outcome(ninth)[0] == "waiting"
    assert outcome(ninth + b"\r")[0] == "waiting"  # could still be the blank line
    assert outcome(ninth + b"X") == ("refused", 431, "too many header lines")


def test_head_size_at_and_over_the_limit() -> None:
    limits = Limits(max_head_size=200)
    request = head(request_line(20), BASE_HEADERS)
    pad = 200 - len(request) - len("X-Pad: \r\n")
    exact = head(request_line(20), [*BASE_HEADERS, "X-Pad: " + "p" * pad])
    assert len(exact) == 200
    assert outcome(exact, limits)[0] == "request"
    over = head(request_line(20), [*BASE_HEADERS, "X-Pad: " + "p" * (pad + 1)])
    assert outcome(over, limits) == ("refused", 431, "request head too large")
    # The final LF is part of the head: 200 bytes, then a missing LF is a wait,
    # one byte more a refusal.
    assert outcome(over[:-1], limits)[0] == "waiting"
    assert outcome(over, limits)[1] == 431


@pytest.mark.parametrize(
    ("field", "limit", "status"),
    [
        ("max_request_line", 8 * 1024, 414),
        ("max_header_size", 8 * 1024, 431),
        ("max_header_count", 100, 431),
        ("max_head_size", 16 * 1024, 431),
    ],
)
def test_default_limits(field: str, limit: int, status: int) -> None:
    assert getattr(Limits(), field) == limit
    defaults = Limits()
    if field == "max_request_line":
        at, over = (head(request_line(n), BASE_HEADERS) for n in (limit, limit + 1))
    elif field == "max_header_size":
        at, over = (
            head(request_line(20), [*BASE_HEADERS, padded_header(n)]) for n in (limit, limit + 1)
        )
    elif field == "max_header_count":
        at, over = (
            head(request_line(20), [*BASE_HEADERS, *(f"X-{i}: v" for i in range(n - 5))])
            for n in (limit, limit + 1)
        )
    else:
        base = len(head(request_line(20), [*BASE_HEADERS, "X-A: ", "X-B: "]))
        spare = limit - base
        at, over = (
            head(
                request_line(20),
                [*BASE_HEADERS, "X-A: " + "a" * (n // 2), "X-B: " + "b" * (n - n // 2)],
            )
            for n in (spare, spare + 1)
        )
        assert len(at) == limit
    assert outcome(at, defaults)[0] == "request"
    assert outcome(over, defaults)[:2] == ("refused", status)


def test_plain_http_requests_meet_the_same_limits() -> None:
    assert outcome(head(request_line(64, "POST"), ["Host: x"]))[0] == "request"
    assert outcome(head(request_line(65, "POST"), ["Host: x"]))[1] == 414
    assert outcome(head(request_line(20), ["Host: x", padded_header(49)]))[1] == 431


def test_a_bad_first_byte_is_400_even_when_a_limit_breaks_in_the_same_chunk() -> None:
    """h11 refuses a request line starting with a control byte at once; that
    comes before a limit broken later in the same bytes."""
    data = b"\x16" + b"a" * 500
    assert outcome(data)[:2] == ("refused", 400)
    conn = ServerConnection(limits=SMALL, clock=FakeClock())
    conn.receive_data(data[:1])
    assert conn.data_to_send().startswith(b"HTTP/1.1 400 ")


@pytest.mark.parametrize(
    "field", ["max_request_line", "max_header_size", "max_header_count", "max_head_size"]
)
@pytest.mark.parametrize("value", [0, -1, 1.5])
def test_limits_must_be_positive_integers(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        Limits(**{field: value})  # type: ignore[arg-type]


# -- chunking invariance -----------------------------------------------------------


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    """Request heads that sit near every limit of SMALL, with stray CRs and LFs."""
    line = request_line(draw(st.integers(14, 70)))
    headers = list(BASE_HEADERS)
    for _ in range(draw(st.integers(0, 6))):
        headers.append(padded_header(draw(st.integers(7, 52))))
    terminators = [draw(st.sampled_from(["\r\n", "\n", "\r\r\n"])) for _ in range(len(headers) + 2)]
    text = "".join(part + end for part, end in zip([line, *headers, ""], terminators, strict=False))
    data = text.encode("latin-1")
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(data)))
        data = data[:cut] + draw(st.binary(max_size=12)) + data[cut:]
    return data


@settings(max_examples=300, deadline=None)
@given(heads(), st.lists(st.integers(0, 1 << 10), max_size=10))
def test_server_answer_does_not_depend_on_chunking(data: bytes, cuts: list[int]) -> None:
    whole = drive([data], compression=False, limits=SMALL)
    assert drive(split(data, cuts), compression=False, limits=SMALL) == whole
    bytewise = [data[i : i + 1] for i in range(len(data))]
    assert drive(bytewise, compression=False, limits=SMALL) == whole


class ReferenceScanner:
    """The scanner's rules, one byte at a time, written as plainly as possible."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    def first_violation(self, data: bytes) -> tuple[int, HeadViolation] | None:
        lim = self.limits
        line_no, line = 0, b""
        for index, byte in enumerate(data):
            too_big = index + 1 > lim.max_head_size
            if byte == 0x0A:
                if too_big:
                    return index, HeadViolation.HEAD_SIZE
                if (line[:-1] if line.endswith(b"\r") else line) == b"":
                    return None  # end of head
                line_no, line = line_no + 1, b""
                continue
            line += bytes([byte])
            size = len(line) - line.endswith(b"\r")
            if line_no == 0 and size > lim.max_request_line:
                return index, HeadViolation.REQUEST_LINE
            if line_no > 0 and size > lim.max_header_size:
                return index, HeadViolation.HEADER_LINE
            if line_no > lim.max_header_count and size > 0:
                return index, HeadViolation.HEADER_COUNT
            if too_big:
                return index, HeadViolation.HEAD_SIZE
        return None


def scan(chunks: list[bytes], limits: Limits) -> tuple[int, HeadViolation] | None:
    scanner = HeadScanner(
        max_request_line=limits.max_request_line,
        max_header_size=limits.max_header_size,
        max_header_count=limits.max_header_count,
        max_head_size=limits.max_head_size,
    )
    offset = 0
    for chunk in chunks:
        allowed, violation = scanner.feed(chunk)
        if violation is not None:
            return offset + allowed, violation
        assert allowed == len(chunk)
        offset += len(chunk)
    return None


_head_bytes = st.lists(
    st.sampled_from([b"a", b"b", b"\r", b"\n", b"\r\n", b"xxxxxxxx"]), max_size=80
).map(b"".join)


@settings(max_examples=500, deadline=None)
@given(
    _head_bytes,
    st.lists(st.integers(0, 1000), max_size=8),
    st.tuples(st.integers(1, 12), st.integers(1, 12), st.integers(1, 4), st.integers(1, 120)),
)
def test_scanner_matches_the_byte_at_a_time_reference(
    data: bytes, cuts: list[int], bounds: tuple[int, int, int, int]
) -> None:
    request_line_limit, header_limit, count, head_limit = bounds
    limits = Limits(
        max_request_line=request_line_limit,
        max_header_size=header_limit,
        max_header_count=count,
        max_head_size=head_limit,
    )
    expected = ReferenceScanner(limits).first_violation(data)
    assert scan([data], limits) == expected
    assert scan(split(data, cuts), limits) == expected


def test_scanner_ignores_bytes_after_the_head() -> None:
    scanner = HeadScanner(
        max_request_line=10, max_header_size=10, max_header_count=1, max_head_size=30
    )
    assert scanner.feed(b"GET / H\r\nA: b\r\n\r\n" + b"z" * 100) == (117, None)
    assert scanner.done
    assert scanner.feed(b"\n" * 50) == (50, None)


def test_a_head_of_bare_lf_lines_ends_at_its_blank_line() -> None:
    """LF alone ends a line too (RFC 9112 §2.2): the empty line after a header
    ends the head, and the bytes after it are not scanned."""
    scanner = HeadScanner(
        max_request_line=10, max_header_size=10, max_header_count=1, max_head_size=30
    )
    assert scanner.feed(b"GET / H\nA: b\n") == (13, None)
    assert not scanner.done
    assert scanner.feed(b"\n" + b"z" * 100) == (101, None)
    assert scanner.done


def test_violations_carry_status_and_reason() -> None:
    assert [(v.status, v.reason) for v in HeadViolation] == [
        (414, "request line too long"),
        (431, "header line too long"),
        (431, "too many header lines"),
        (431, "request head too large"),
    ]


def test_ties_go_to_the_most_specific_limit() -> None:
    """A byte that breaks two limits at once is reported by the line limit."""
    limits = Limits(max_request_line=10, max_head_size=10)
    assert scan([b"GET /aaaaaaa"], limits) == (10, HeadViolation.REQUEST_LINE)
