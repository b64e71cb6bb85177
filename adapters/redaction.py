"""Blank the tokens in a client's byte stream without changing any chunk's size.

The recorder (``adapters.recording``) writes what clients sent; before it
does, ``ClientStreamRedactor`` overwrites with ``x`` the bearer token of an
``Authorization`` header, of a ``wshub.bearer.<token>`` subprotocol and of a
``token=`` query parameter, and every JSON ``"token"`` string in the client's
uncompressed text messages of up to ``SCANNED_MESSAGE_SIZE`` bytes (masked
frames are unmasked, rewritten and masked again). Same length everywhere, so
a replay of the redacted bytes produces the same output.
"""

from __future__ import annotations

import re

__all__ = [
    "SCANNED_MESSAGE_SIZE",
    "ClientStreamRedactor",
    "redact_head",
    "redact_json_tokens",
]

#: Client text messages up to this size are scanned for ``"token"`` strings.
SCANNED_MESSAGE_SIZE = 64 * 1024
#: A request head longer than this is released as it is (the core refuses it).
_HEAD_HOLD_LIMIT = 64 * 1024

_BEARER = re.compile(rb"(?im)^authorization:[ \t]*bearer[ \t]+([^\r\n]*)")
_SUBPROTOCOL = re.compile(rb"(?i)wshub\.bearer\.([^,\s]*)")
_QUERY = re.compile(rb"[?&]token=([^&\s#]*)")
_JSON_TOKEN = re.compile(rb'"token"\s*:\s*"((?:[^"\\]|\\.)*)"')
_JSON_TOKEN_CUT = re.compile(rb'"token"\s*:\s*"((?:[^"\\]|\\.)*\\?)\Z')


def _blank(data: bytearray, pattern: re.Pattern[bytes], start: int = 0, end: int = -1) -> None:
    """Overwrite group 1 of every match in ``data[start:end]`` with ``x``."""
    if end < 0:
        end = len(data)
    for match in pattern.finditer(data, start, end):
        a, b = match.span(1)
        data[a:b] = b"x" * (b - a)


def redact_head(head: bytearray) -> None:
    """Blank the tokens a request head may carry (header, subprotocol, query)."""
    line_end = head.find(b"\r\n")
    _blank(head, _QUERY, 0, len(head) if line_end < 0 else line_end)
    _blank(head, _BEARER)
    _blank(head, _SUBPROTOCOL)


def redact_json_tokens(payload: bytes, *, cut: bool = False) -> bytes:
    """``payload`` with the value of every ``"token"`` string blanked, same length.

    ``cut``: the payload may end inside a token string (a message cut short).
    """
    data = bytearray(payload)
    _blank(data, _JSON_TOKEN)
    if cut:
        _blank(data, _JSON_TOKEN_CUT)
    return bytes(data)


def _unmask(data: bytes, mask: bytes | None) -> bytes:
    if mask is None:
        return data
    key = (mask * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(len(data), "big")


class ClientStreamRedactor:
    """Blanks secrets in a client's byte stream without changing any chunk's size.

    ``feed`` takes each chunk as it arrives and answers whether everything fed
    so far may be written (``release``): not while the request head is
    incomplete, nor while a text message that may hold a token is.
    """

    __slots__ = (
        "_buf",
        "_compressed",
        "_done",
        "_final",
        "_head_done",
        "_message",
        "_pos",
        "_size",
    )

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0  # where the next frame header starts (may be past the end)
        self._head_done = False
        self._compressed = False
        self._message: list[tuple[int, int, bytes | None]] | None = None  # frames read so far
        self._size = 0
        self._final = False  # the message's last frame has begun
        self._done: list[list[tuple[int, int, bytes | None]]] = []

    def compressed(self) -> None:
        """Permessage-deflate was agreed: payloads can no longer be rewritten."""
        self._compressed = True
        self._message, self._final = None, False

    def feed(self, data: bytes) -> bool:
        self._buf += data
        if not self._head_done:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) <= _HEAD_HOLD_LIMIT:
                    return False
                # Not a head the core will take (it answers 431): blank what
                # may be a token and stop looking for frames.
                self._compressed = True
                end = len(self._buf) - 4
            self._head_done = True
            self._pos = end + 4
            head = self._buf[: self._pos]
            redact_head(head)
            self._buf[: self._pos] = head
        if not self._compressed:
            self._scan()
        return self._message is None and self._pos >= len(self._buf)

    def _scan(self) -> None:
        buf = self._buf
        while True:
            if self._final and self._pos <= len(buf):
                # The last frame of the text message is all here: it can be rewritten.
                assert self._message is not None
                self._done.append(self._message)
                self._message, self._final = None, False
            pos = self._pos
            if len(buf) - pos < 2:
                return
            first, second = buf[pos], buf[pos + 1]
            length = second & 0x7F
            start = pos + 2
            if length == 126:
                start += 2
            elif length == 127:
                start += 8
            if second & 0x80:
                start += 4
            if len(buf) < start:
                return
            if length >= 126:
                length = int.from_bytes(buf[pos + 2 : pos + (4 if length == 126 else 10)], "big")
            mask = bytes(buf[start - 4 : start]) if second & 0x80 else None
            opcode, fin, rsv1 = first & 0x0F, first & 0x80, first & 0x40
            if opcode == 1 and not rsv1 and self._message is None:
                self._message, self._size = [], 0
            if opcode in (0, 1) and self._message is not None:
                self._size += length
                if self._size > SCANNED_MESSAGE_SIZE:
                    self._message = None  # too large to hold back: written as it is
                else:
                    self._message.append((start, length, mask))
                    self._final = bool(fin)
            self._pos = start + length

    def release(self) -> bytes:
        """Everything fed since the last release, redacted."""
        buf = self._buf
        for message in self._done:
            # Only a message cut short by ``flush`` has frames past the end.
            frames = [(s, min(n, len(buf) - s), m) for s, n, m in message if s <= len(buf)]
            cut = frames != message
            payload = b"".join(_unmask(bytes(buf[s : s + n]), m) for s, n, m in frames)
            redacted = redact_json_tokens(payload, cut=cut)
            if redacted == payload:
                continue
            offset = 0
            for start, length, mask in frames:
                buf[start : start + length] = _unmask(redacted[offset : offset + length], mask)
                offset += length
        self._done.clear()
        data = bytes(buf)
        self._pos -= len(buf)
        buf.clear()
        return data

    def flush(self) -> bytes:
        """Release what is held when the connection ends (a message cut short included)."""
        if self._message is not None:
            self._done.append(self._message)
            self._message, self._final = None, False
        if not self._head_done:
            head = bytearray(self._buf)
            redact_head(head)
            self._buf[:] = head
        return self.release()
