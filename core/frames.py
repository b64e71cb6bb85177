"""Frame serialization (RFC 6455 §5.2) and messages framed once for many peers.

Parsing is wsproto's; writing is ours, because wsproto's writer draws masks
from ``os.urandom`` (we inject randomness) and copies the payload several
times, and because a broadcast must frame its payload once for every
recipient (server frames are unmasked, RFC 6455 §5.1, so the bytes are shared).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from enum import IntEnum

from .deflate import DeflateParams, compress_message

__all__ = ["Opcode", "PreparedMessage", "encode_frame", "mask_payload"]

_PACK_H = struct.Struct("!BBH").pack
_PACK_Q = struct.Struct("!BBQ").pack


class Opcode(IntEnum):
    """Frame opcodes (RFC 6455 §5.2)."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


# _XOR_TABLES[k] maps every byte b to b ^ k, for bytes.translate.
_XOR_TABLES = [bytes(b ^ k for b in range(256)) for k in range(256)]
_TRANSLATE_FROM = 2048  # below, one big-integer XOR is faster; above, four translates


def mask_payload(mask: bytes, payload: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``mask`` (RFC 6455 §5.3).

    Both ways run in C, not in a byte loop: small payloads as one big
    integer; large ones as four ``translate`` calls, one per mask byte, over
    every fourth byte (linear, where the integer way grows faster than n).
    """
    n = len(payload)
    if n == 0:
        return b""
    if n < _TRANSLATE_FROM:
        key = (mask * (n // 4 + 1))[:n]
        return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(
            n, "little"
        )
    out = bytearray(payload)
    for i in range(4):
        out[i::4] = out[i::4].translate(_XOR_TABLES[mask[i]])
    return bytes(out)


def encode_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv1: bool = False,
    mask: bytes | None = None,
) -> bytes:
    """Serialize one frame; ``mask`` (4 bytes) is given by clients only."""
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    mask_bit = 0x80 if mask is not None else 0
    if n < 126:
        header = bytes((first, mask_bit | n))
    elif n < 1 << 16:
        header = _PACK_H(first, mask_bit | 126, n)
    else:
        header = _PACK_Q(first, mask_bit | 127, n)
    if mask is None:
        return header + payload
    return header + mask + mask_payload(mask, payload)


class PreparedMessage:
    """A data message encoded and framed once, shared by every server connection.

    Uncompressed connections all get the same bytes. Compressed connections
    share one compressed frame per window size: the server always negotiates
    ``server_no_context_takeover`` (RFC 7692 §7.1.1.1), so the compressed form
    does not depend on the connection's history.
    """

    __slots__ = ("_compress", "_deflated", "_plain", "opcode", "payload")

    def __init__(
        self,
        payload: bytes,
        *,
        text: bool,
        compress: Callable[[bytes, DeflateParams], bytes] = compress_message,
    ) -> None:
        self.payload = payload
        self.opcode = Opcode.TEXT if text else Opcode.BINARY
        self._plain: bytes | None = None
        self._deflated: dict[int, bytes] = {}
        self._compress = compress

    @classmethod
    def text(cls, data: str) -> PreparedMessage:
        return cls(data.encode("utf-8"), text=True)

    @classmethod
    def binary(cls, data: bytes) -> PreparedMessage:
        return cls(bytes(data), text=False)

    def frame(self, deflate: DeflateParams | None = None) -> bytes:
        """The wire bytes for a server connection with these deflate settings."""
        if deflate is None:
            if self._plain is None:
                self._plain = encode_frame(self.opcode, self.payload)
            return self._plain
        bits = deflate.server_max_window_bits
        framed = self._deflated.get(bits)
        if framed is None:
            framed = encode_frame(self.opcode, self._compress(self.payload, deflate), rsv1=True)
            self._deflated[bits] = framed
        return framed
