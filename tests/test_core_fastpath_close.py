"""Close frames on the fast path decide exactly as wsproto's path does.

A whole, valid close frame is handled by ``Connection._fast_close`` (every
handshake benchmark ends with one); anything else about a close frame is left
to wsproto. For any close frame (valid or not), after any data frames, split
anywhere, both paths give the same events and the same output bytes.
"""

from __future__ import annotations

from helpers import client_frame, open_server, run_split
from hypothesis import given, settings
from hypothesis import strategies as st

from wshub.core import Closed

_CODES = st.one_of(
    st.sampled_from([1000, 1001, 1002, 1003, 1007, 1008, 1011, 1012, 1013, 3000, 4999]),
    st.sampled_from([0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535]),  # refused
)
_REASONS = st.one_of(
    st.text(max_size=30).map(lambda t: t.encode("utf-8")),
    st.just(b"\xff\xfe"),  # not UTF-8
    st.just("é".encode() * 70),  # with the code: over 125 bytes
)


def _close_frames() -> st.SearchStrategy[bytes]:
    with_code = st.tuples(_CODES, _REASONS).map(
        lambda cr: client_frame(0x8, cr[0].to_bytes(2, "big") + cr[1][:200])
    )
    empty = st.just(client_frame(0x8, b""))
    one_byte = st.just(client_frame(0x8, b"\x03"))
    unmasked = st.just(client_frame(0x8, b"\x03\xe8", mask=None))
    not_final = st.just(client_frame(0x8, b"\x03\xe8", fin=False))
    return st.one_of(with_code, empty, one_byte, unmasked, not_final)


@settings(max_examples=300, deadline=None)
@given(
    before=st.lists(st.binary(max_size=30).map(lambda b: client_frame(0x2, b)), max_size=3),
    close=_close_frames(),
    after=st.binary(max_size=20),
    cut_fractions=st.lists(st.floats(0, 1), max_size=6),
)
def test_close_frames_on_the_fast_path_match_wsproto(
    before: list[bytes], close: bytes, after: bytes, cut_fractions: list[float]
) -> None:
    stream = b"".join(before) + close + after
    cuts = [int(f * len(stream)) for f in cut_fractions]
    reference = run_split(stream, [], fast=False)
    assert run_split(stream, [], fast=True) == reference
    assert run_split(stream, cuts, fast=True) == reference
    assert any(isinstance(e, Closed) for e in reference[0])  # every close frame ends it


def test_a_valid_close_frame_needs_no_wsproto_parser() -> None:
    server = open_server()
    server.receive_data(client_frame(0x8, (1000).to_bytes(2, "big") + b"bye"))
    [closed] = server.events_received()
    assert isinstance(closed, Closed)
    assert (closed.code, closed.reason, closed.clean) == (1000, "bye", True)
    assert server._proto is None
