"""Every bound the core enforces, in one frozen, keyword-only dataclass.

Defaults follow what a local or web backend needs: large enough for ordinary
JSON traffic, small enough that one client cannot exhaust the server.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Limits:
    """Per-connection limits and timeouts (sizes in bytes, times in seconds).

    ``max_message_size``
        Largest message accepted, counted after reassembly of fragments and
        after permessage-deflate decompression. A frame header announcing more
        is refused at once with 1009, before its payload is read.
        Default 1 MiB.
    ``max_head_size``
        Largest HTTP request (or response) head, every byte up to the blank
        line that ends it. Default 16 KiB, which is more than browsers send and
        matches common proxy limits; larger gets 431.
    ``max_request_line``
        Longest request line (method, target, version; CRLF not counted).
        Default 8 KiB, as common servers and proxies allow; longer gets
        414 URI Too Long.
    ``max_header_size``
        Longest single header line (name, colon, value; CRLF not counted).
        Default 8 KiB; longer gets 431.
    ``max_header_count``
        Most header lines in a request. Default 100 (browsers send about 20);
        more gets 431. These four head limits are decided as the bytes
        arrive: a line already too long is refused without waiting for its end.
    ``max_outbox_size``
        Bytes that may wait in a connection's outbox. A message that would
        push a non-empty outbox past it closes the connection with 1013
        ("slow consumer") instead of growing memory. A single message into an
        empty outbox is always accepted, so memory stays below
        ``max(max_outbox_size, largest message)``. Handshake bytes and close
        frames are not counted and never dropped. Default 1 MiB.
    ``handshake_timeout``
        Time from connection start to the end of the opening handshake
        (request read and accepted). Default 10 s.
    ``ping_interval`` / ``ping_timeout``
        Keepalive: a ping every ``ping_interval`` seconds while open; no pong
        within ``ping_timeout`` closes with 1011. ``ping_interval=None``
        disables keepalive. Defaults 20 s / 20 s.
    ``close_timeout``
        Time to wait for the peer's close frame after sending ours, and, when
        the transport is drained (``Connection.should_drain_before_close``),
        for the peer to end it, before dropping the transport. Default 10 s.
    ``idle_timeout``
        Close with 1001 when nothing has been received for this long.
        Default ``None`` (keepalive already detects dead peers).
    ``ping_rate`` / ``ping_burst``
        Pings the peer may send per second (a token bucket holding
        ``ping_burst``): each ping costs a pong, so a flood beyond this fails
        the connection with 1008 "too many pings". ``ping_rate=None``
        disables the check. Defaults 10/s and 50 (keepalives come every few
        seconds at most).
    """

    max_message_size: int = 1 << 20
    max_head_size: int = 16 * 1024
    max_request_line: int = 8 * 1024
    max_header_size: int = 8 * 1024
    max_header_count: int = 100
    max_outbox_size: int = 1 << 20
    handshake_timeout: float = 10.0
    ping_interval: float | None = 20.0
    ping_timeout: float = 20.0
    close_timeout: float = 10.0
    idle_timeout: float | None = None
    ping_rate: float | None = 10.0
    ping_burst: int = 50

    def __post_init__(self) -> None:
        for name in ("max_message_size", "max_head_size", "max_outbox_size", "ping_burst"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("handshake_timeout", "ping_timeout", "close_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("ping_interval", "idle_timeout", "ping_rate"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or None, got {value!r}")
        for name in ("max_request_line", "max_header_size", "max_header_count"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
