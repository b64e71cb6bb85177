"""A parsed HTTP request head, and a one-pass reader for the common, clean case.

Every handshake used to go through h11's general parser: a state machine,
per-line regexes, header normalization, then a second decoding pass of ours.
Nearly every real upgrade request is a short, well-formed HTTP/1.1 head
arriving in one read, and for those ``parse_common_head`` does the same work
with two regular expressions over the whole head.

It accepts only a strict subset of what h11 accepts, and for that subset it
yields exactly what the h11 path yields (a property test compares the two on
generated heads). Anything else -- a head split over reads, bare LF line
ends, folded lines, another HTTP version, a body, a missing or repeated Host,
a head near a size limit -- returns None, and the caller takes the h11 path,
which owns every error answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import h11

from .events import Headers
from .limits import Limits

__all__ = ["RequestHead", "from_h11", "parse_common_head"]


@dataclass(frozen=True, slots=True)
class RequestHead:
    """The request line and headers, decoded as latin-1; header names lower-cased."""

    method: str
    target: str
    http_version: str
    headers: Headers


def from_h11(request: h11.Request) -> RequestHead:
    """The head of a request h11 parsed."""
    return RequestHead(
        method=request.method.decode("ascii", "replace"),
        target=request.target.decode("latin-1"),
        http_version=request.http_version.decode("ascii", "replace"),
        headers=tuple(
            # raw_items() is a plain list; iterating Headers itself goes through
            # Sequence.__getitem__ once per header.
            (name.decode("latin-1").lower(), value.decode("latin-1"))
            for name, value in request.headers.raw_items()
        ),
    )


# h11's grammar (RFC 9110 / 9112), over latin-1 text so each character is one
# byte. Its field-vchar is "not NUL, not bytes-regex whitespace": spelled out,
# because a str regex's \s would also match \x1c-\x1f, \x85 and \xa0.
_TOKEN = r"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
_FIELD_VCHAR = r"[^\x00\x09-\x0d\x20]"
_FIELD_VALUE = rf"(?:{_FIELD_VCHAR}+(?:[ \t]+{_FIELD_VCHAR}+)*)?"
_HEADER = rf"({_TOKEN}):[ \t]*({_FIELD_VALUE})[ \t]*\r\n"
# Only HTTP/1.1 here: other versions have other rules (Host, 505), h11 decides.
_REQUEST_LINE = rf"({_TOKEN}) ([\x21-\x7e]+) HTTP/(1\.1)\r\n"
_HEAD_RE = re.compile(rf"{_REQUEST_LINE}(?:{_TOKEN}:[ \t]*{_FIELD_VALUE}[ \t]*\r\n)*")
_HEADER_RE = re.compile(_HEADER)
# Headers whose checks stay with h11 (and then with the upgrade rules).
_DEFER = frozenset({"content-length", "transfer-encoding"})


def parse_common_head(data: bytes, limits: Limits) -> tuple[RequestHead, int] | None:
    """The head at the start of ``data`` and the offset just past it, or None.

    None means "not the common case": the caller parses ``data`` with h11
    instead, which reaches the same head when there is one, or the error.
    """
    blank = data.find(b"\r\n\r\n")
    if blank < 0:
        return None
    end = blank + 4
    # Within every size limit with room to spare: the line limits hold for
    # any line of a head shorter than them (HeadScanner never fires).
    if end > limits.max_head_size or end > limits.max_request_line or end > limits.max_header_size:
        return None
    text = data[: blank + 2].decode("latin-1")
    match = _HEAD_RE.fullmatch(text)
    if match is None:
        return None
    headers = [(name.lower(), value) for name, value in _HEADER_RE.findall(text, match.end(3) + 2)]
    if len(headers) > limits.max_header_count:
        return None
    hosts = 0
    for name, _value in headers:
        if name == "host":
            hosts += 1
        elif name in _DEFER:
            return None
    if hosts != 1:
        return None
    head = RequestHead(
        method=match.group(1),
        target=match.group(2),
        http_version=match.group(3),
        headers=tuple(headers),
    )
    return head, end
