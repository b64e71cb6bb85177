"""Close codes and reasons (RFC 6455 §7.4): what we may send, what a peer may send."""

from __future__ import annotations

__all__ = [
    "GENERIC_REASONS",
    "MAX_REASON_BYTES",
    "SENDABLE_CODES",
    "receivable_code",
    "truncate_reason",
    "validate_close",
]

# RFC 6455 §7.4.1: codes an endpoint may put in a close frame it sends.
SENDABLE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})
GENERIC_REASONS = {
    1002: "protocol error",
    1007: "invalid payload data",
    1009: "message too big",
}
MAX_REASON_BYTES = 123  # 125-byte control payload minus the 2-byte code (§5.5)


def validate_close(code: int, reason: str) -> bytes:
    """Check an application close code and reason; return the reason's bytes."""
    if code not in SENDABLE_CODES and not 3000 <= code <= 4999:
        raise ValueError(f"invalid close code {code}: use 1000-1014 (not 1004-1006) or 3000-4999")
    encoded = reason.encode("utf-8")
    if len(encoded) > MAX_REASON_BYTES:
        raise ValueError(f"close reason is {len(encoded)} bytes; the limit is 123")
    return encoded


def receivable_code(code: int) -> bool:
    """RFC 6455 §7.4: what a peer may put in a close frame (1004-1006, 1015 are local)."""
    return code in SENDABLE_CODES or 3000 <= code <= 4999


def truncate_reason(reason: str) -> bytes:
    encoded = reason.encode("utf-8")[:MAX_REASON_BYTES]
    return encoded.decode("utf-8", "ignore").encode("utf-8")
