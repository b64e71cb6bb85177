"""The one-pass reader of clean request heads agrees with h11 wherever it answers.

``parse_common_head`` may decline any head (the server then takes the h11
path), but a head it accepts must be exactly the head h11 reads from the same
bytes, and a server connection must behave the same -- events, bytes out,
state -- whether the reader is used or not, however the bytes are split and
whatever the limits.
"""

from __future__ import annotations

import itertools
from unittest import mock

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wshub.core import Limits, ServerConnection
from wshub.core.http_head import from_h11, parse_common_head
from wshub.core.server import HeadScanner

PROPERTY = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])

BROWSER = (
    b"GET /ws?room=1 HTTP/1.1\r\n"
    b"Host: 127.0.0.1:8765\r\n"
    b"Connection: Upgrade\r\n"
    b"Pragma: no-cache\r\n"
    b"Upgrade: websocket\r\n"
    b"Origin: http://localhost:5173\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64)\t AppleWebKit/537.36\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    b"Sec-WebSocket-Protocol: wshub.v1, wshub.bearer.abc\r\n"
    b"\r\n"
)
DEFAULTS = Limits()


def h11_head(data: bytes) -> tuple[object, bytes] | None:
    """What h11 reads from ``data``: (head, trailing bytes), or None (error or incomplete)."""
    parser = h11.Connection(h11.SERVER, max_incomplete_event_size=1 << 20)
    parser.receive_data(data)
    try:
        event = parser.next_event()
    except h11.RemoteProtocolError:
        return None
    if not isinstance(event, h11.Request):
        return None
    return from_h11(event), parser.trailing_data[0]


# -- examples: both answers of the reader --------------------------------------


def test_a_browser_upgrade_takes_the_one_pass_path() -> None:
    parsed = parse_common_head(BROWSER + b"\x81\x80abcd", DEFAULTS)
    assert parsed is not None
    head, end = parsed
    assert end == len(BROWSER)
    assert (head, b"\x81\x80abcd") == h11_head(BROWSER + b"\x81\x80abcd")
    assert head.method == "GET"
    assert head.target == "/ws?room=1"
    assert ("user-agent", "Mozilla/5.0 (X11; Linux x86_64)\t AppleWebKit/537.36") in head.headers


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ((b"\r\n\r\n", b"\r\n"), "incomplete"),
        ((b"Pragma: no-cache\r\n", b"Pragma: no-cache\n"), "bare LF"),
        ((b"Pragma: no-cache\r\n", b"Pragma: no-cache\r\n  folded\r\n"), "obsolete fold"),
        ((b"HTTP/1.1\r\n", b"HTTP/1.0\r\n"), "another version"),
        ((b"Pragma: no-cache\r\n", b"Host: other\r\n"), "two Host headers"),
        ((b"Host: 127.0.0.1:8765\r\n", b""), "no Host"),
        ((b"Pragma: no-cache\r\n", b"Content-Length: 0\r\n"), "a body length"),
        ((b"Pragma: no-cache\r\n", b"Transfer-Encoding: chunked\r\n"), "a body coding"),
        ((b"Pragma: no-cache\r\n", b"Pragma : no-cache\r\n"), "space before the colon"),
        ((b"Pragma: no-cache\r\n", b"Pragma: no\x00cache\r\n"), "NUL in a value"),
        ((b"Pragma: no-cache\r\n", b"Pragma: no\x0bcache\r\n"), "VT in a value"),
        ((b"GET /ws", b"GET  /ws"), "two spaces in the request line"),
        ((b"GET /ws", b"\r\nGET /ws"), "a leading empty line"),
        ((b"GET /ws", b"G(T /ws"), "a method that is no token"),
    ],
)
def test_anything_unusual_is_left_to_h11(change: tuple[bytes, bytes], why: str) -> None:
    data = BROWSER.replace(*change, 1)
    assert data != BROWSER, why
    assert parse_common_head(data, DEFAULTS) is None, why


def test_heads_near_a_limit_are_left_to_the_byte_by_byte_path() -> None:
    size = len(BROWSER)
    for limits in (
        Limits(max_head_size=size - 1),
        Limits(max_request_line=size - 1),
        Limits(max_header_size=size - 1),
        Limits(max_header_count=BROWSER.count(b"\r\n") - 3),
    ):
        assert parse_common_head(BROWSER, limits) is None, limits
    assert parse_common_head(BROWSER, Limits(max_header_count=BROWSER.count(b"\r\n") - 2))


# -- properties ---------------------------------------------------------------------

TOKEN_ALPHABET = "-!#$%&'*+.^_`|~09azAZ"
# Every byte class h11's grammar treats differently: token, vchar, obs-text,
# the whitespaces of a bytes regex, NUL, DEL, separators.
CLEAN_BYTES = [b"a", b"Z", b"0", b"-", b",", b";", b"=", b'"', b"/", b":", b"(", b"@",
               b"\x80", b"\xff", b"\xa0", b"\x85", b"\x1c", b"\x7f"]  # fmt: skip
FLAWED_BYTES = [b"\x00", b"\x0b", b"\x0c", b"\r", b"\n"]


def mostly(
    clean: st.SearchStrategy[bytes], flawed: st.SearchStrategy[bytes]
) -> st.SearchStrategy[bytes]:
    """``clean`` 39 times in 40: a head draws about 30 parts, so about half the
    heads have no flaw and the rest one or a few."""
    return st.integers(0, 39).flatmap(lambda i: flawed if i == 0 else clean)


def value_text(alphabet: list[bytes]) -> st.SearchStrategy[bytes]:
    inner = st.lists(st.sampled_from(alphabet), min_size=1, max_size=6).map(b"".join)
    blanks = st.sampled_from([b" ", b"\t", b" \t "])
    return st.lists(st.tuples(inner, blanks), max_size=3).map(
        lambda parts: b"".join(word + blank for word, blank in parts).rstrip(b" \t")
    )


NAMES = mostly(
    st.one_of(
        st.sampled_from(
            [b"Upgrade", b"Connection", b"Sec-WebSocket-Key",
             b"Sec-WebSocket-Version", b"Sec-WebSocket-Protocol", b"Sec-WebSocket-Extensions",
             b"Origin", b"Authorization", b"X-A"]
        ),
        st.text(TOKEN_ALPHABET, min_size=1, max_size=6).map(str.encode),
    ),
    st.sampled_from(
        [b"", b"Host", b"HOST", b"Content-Length", b"Transfer-Encoding",
         b"X A", b"X(", b" X", b"\x80"]
    ),
)  # fmt: skip
VALUES = mostly(
    st.one_of(
        st.sampled_from(
            [b"websocket", b"Upgrade", b"13", b"dGhlIHNhbXBsZSBub25jZQ==", b"localhost:80",
             b"wshub.v1", b"0", b""]
        ),
        value_text(CLEAN_BYTES),
    ),
    value_text(CLEAN_BYTES + FLAWED_BYTES),
)  # fmt: skip
SEPARATORS = mostly(st.sampled_from([b": ", b":", b":\t", b": \t "]), st.just(b" : "))
TAILS = mostly(st.sampled_from([b"", b" ", b"\t"]), st.sampled_from([b"\x00", b"\x0b"]))
LINE_ENDS = mostly(st.just(b"\r\n"), st.sampled_from([b"\n", b"\r", b"\n\r"]))


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    """Request heads that are mostly clean, with every kind of flaw sometimes."""
    method = draw(
        mostly(st.sampled_from([b"GET", b"POST", b"HEAD", b"get"]), st.sampled_from([b"G@T", b""]))
    )
    target = draw(
        mostly(
            st.sampled_from([b"/", b"/ws?x=1", b"*", b"/\x7e"]),
            st.sampled_from([b"/a b", b"/\x80", b"/\x00", b""]),
        )
    )
    version = draw(
        mostly(st.just(b"HTTP/1.1"), st.sampled_from([b"HTTP/1.0", b"HTTP/2.0", b"http/1.1"]))
    )
    lines = [method + b" " + target + b" " + version]
    fields = draw(st.lists(st.tuples(NAMES, SEPARATORS, VALUES, TAILS), max_size=8))
    if draw(mostly(st.just(b"host"), st.just(b""))):
        fields.insert(draw(st.integers(0, len(fields))), (b"Host", b": ", b"localhost:80", b""))
    for name, separator, value, tail in fields:
        lines.append(name + separator + value + tail)
    ends = [draw(LINE_ENDS) for _ in range(len(lines) + 1)]
    lead = draw(mostly(st.just(b""), st.sampled_from([b"\r\n", b"\n"])))
    fold = draw(mostly(st.just(b""), st.sampled_from([b" folded\r\n", b"\tfolded\r\n"])))
    head = lead + b"".join(line + end for line, end in zip(lines, ends, strict=False))
    if fold:
        first = head.find(b"\r\n")
        head = head[: first + 2] + fold + head[first + 2 :] if first >= 0 else head
    return head + ends[-1] + draw(st.sampled_from([b"", b"\r\n", b"\x81\x80abcd", b"GET"]))


@PROPERTY
@given(heads())
def test_an_accepted_head_is_the_head_h11_reads(data: bytes) -> None:
    parsed = parse_common_head(data, DEFAULTS)
    if parsed is None:
        return
    head, end = parsed
    assert h11_head(data) == (head, data[end:])


@st.composite
def splits(draw: st.DrawFn, data: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=3)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


LIMITS = st.builds(
    Limits,
    max_head_size=st.sampled_from([16 * 1024, 200, 90, 40]),
    max_request_line=st.sampled_from([8 * 1024, 30, 12]),
    max_header_size=st.sampled_from([8 * 1024, 25, 10]),
    max_header_count=st.sampled_from([100, 3, 1]),
)


def run_server(chunks: list[bytes], limits: Limits) -> tuple[list[object], bytes, str]:
    connection = ServerConnection(limits=limits, clock=lambda: 0.0, allowed_hosts=None)
    for chunk in chunks:
        connection.receive_data(chunk)
    events = connection.events_received()
    return events, connection.data_to_send(), connection.state.name


@PROPERTY
@given(st.data(), heads(), LIMITS)
def test_a_server_behaves_the_same_with_or_without_the_one_pass_reader(
    data: st.DataObject, raw: bytes, limits: Limits
) -> None:
    chunks = data.draw(splits(raw))
    fast = run_server(chunks, limits)
    with mock.patch("wshub.core.server.parse_common_head", return_value=None):
        slow = run_server(chunks, limits)
    assert fast == slow


def test_the_property_compares_both_paths() -> None:
    """Guard against a vacuous property: the browser head really goes the one-pass way."""
    calls: list[object] = []

    def spy(data: bytes, limits: Limits) -> object:
        result = parse_common_head(data, limits)
        calls.append(result)
        return result

    with (
        mock.patch("wshub.core.server.parse_common_head", spy),
        mock.patch.object(HeadScanner, "feed", side_effect=AssertionError("slow path")),
    ):
        events, _, state = run_server([BROWSER], DEFAULTS)
    assert calls
    assert calls[0] is not None
    assert state == "DECIDING"
    assert len(events) == 1
