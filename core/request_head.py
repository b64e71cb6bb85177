"""Size limits on an HTTP request head, decided byte by byte as it arrives.

h11 bounds only the whole head, and only once it is incomplete. A client that
sends an endless request line or thousands of tiny headers should be refused
at the first byte that breaks a limit, without waiting for the rest (a
slowloris client may never send it), and the answer must not depend on how
the bytes were split. ``HeadScanner`` looks at each byte once, line by line,
and reports the position of the first one that breaks a limit.

Lines end at LF; one CR right before the LF belongs to the terminator, as h11
reads it (RFC 9112 §2.2 lets a recipient accept a bare LF).
"""

from __future__ import annotations

from enum import Enum

__all__ = ["HeadScanner", "HeadViolation"]

_CR = 0x0D


class HeadViolation(Enum):
    """A broken head limit, as the HTTP status and text to answer with."""

    REQUEST_LINE = (414, "request line too long")
    HEADER_LINE = (431, "header line too long")
    HEADER_COUNT = (431, "too many header lines")
    HEAD_SIZE = (431, "request head too large")

    @property
    def status(self) -> int:
        return self.value[0]

    @property
    def reason(self) -> str:
        return self.value[1]


def _first_excess(data: bytes, start: int, end: int, length: int, limit: int) -> int | None:
    """Index of the first byte in ``data[start:end]`` (no LF) that takes the line past ``limit``.

    ``length`` is the line's byte count before ``start``. A line's size is its
    byte count less a final CR, which may still turn out to be the terminator.
    """
    first = start + limit - length  # the byte that makes the raw count limit + 1
    if first < start:
        # Only a pending CR can leave the count at limit + 1; any byte now breaks it.
        return start if start < end else None
    if first >= end:
        return None
    if data[first] != _CR:
        return first
    return first + 1 if first + 1 < end else None


class HeadScanner:
    """Applies the request-line, header-line, header-count and head-size limits.

    ``max_header_count`` counts header lines (an obsolete folded continuation
    line counts as one more); ``max_head_size`` counts every byte up to and
    including the blank line that ends the head.
    """

    def __init__(
        self,
        *,
        max_request_line: int,
        max_header_size: int,
        max_header_count: int,
        max_head_size: int,
    ) -> None:
        self._max_request_line = max_request_line
        self._max_header_size = max_header_size
        self._max_header_count = max_header_count
        self._max_head_size = max_head_size
        self._line = 0  # 0 is the request line
        self._length = 0  # bytes of the current line so far, its LF excluded
        self._ends_cr = False  # the current line's last byte so far is CR
        self._total = 0  # bytes of the head so far
        self.done = False  # the blank line that ends the head was seen

    def feed(self, data: bytes) -> tuple[int, HeadViolation | None]:
        """Scan ``data``; return ``(n, violation)``.

        Without a violation, ``n == len(data)``. With one, ``data[n]`` is the
        first byte that breaks it, and the bytes before it are still a valid
        prefix to parse (another error they hold comes first). Bytes after the
        end of the head are not looked at.
        """
        pos = 0
        size = len(data)
        while pos < size and not self.done:
            newline = data.find(b"\n", pos)
            end = size if newline < 0 else newline
            found = self._violation(data, pos, end, newline >= 0)
            if found is not None:
                return found
            taken = end - pos
            if taken:
                self._length += taken
                self._ends_cr = data[end - 1] == _CR
                self._total += taken
            if newline < 0:
                break
            self._total += 1
            if self._length - self._ends_cr == 0:
                self.done = True  # a blank line: the end of the head
            else:
                self._line += 1
                self._length = 0
                self._ends_cr = False
            pos = newline + 1
        return size, None

    def _violation(
        self, data: bytes, start: int, end: int, has_newline: bool
    ) -> tuple[int, HeadViolation] | None:
        """The first limit broken in ``data[start:end]`` (plus its LF, if any)."""
        candidates: list[tuple[int, HeadViolation]] = []
        if self._line == 0:
            line_limit, kind = self._max_request_line, HeadViolation.REQUEST_LINE
        else:
            line_limit, kind = self._max_header_size, HeadViolation.HEADER_LINE
        index = _first_excess(data, start, end, self._length, line_limit)
        if index is not None:
            candidates.append((index, kind))
        if self._line > self._max_header_count:
            # One header line too many, as soon as it is known not to be the blank line.
            index = _first_excess(data, start, end, self._length, 0)
            if index is not None:
                candidates.append((index, HeadViolation.HEADER_COUNT))
        index = start + self._max_head_size - self._total  # the byte that makes it limit + 1
        if index < end + has_newline:
            candidates.append((index, HeadViolation.HEAD_SIZE))
        if not candidates:
            return None
        order = list(HeadViolation)
        return min(candidates, key=lambda c: (c[0], order.index(c[1])))
