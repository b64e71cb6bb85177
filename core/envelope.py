"""The JSON envelope of the wire protocol (docs/protocol.md): parse and encode.

Parsing turns one client text frame into a validated ``Request`` or an
``EnvelopeError`` carrying a stable code; it never raises, whatever the text.
Encoding builds a server envelope once, as UTF-8 bytes, so a message for many
recipients is serialised a single time. The JSON library sits behind the small
``Codec`` seam: stdlib ``json`` by default, a faster one (orjson) can be
plugged in without touching the hub.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, Protocol

__all__ = [
    "RESERVED_TYPES",
    "Codec",
    "EnvelopeError",
    "ErrorCode",
    "JsonCodec",
    "Request",
    "RequestId",
    "encode_envelope",
    "encode_topic_parts",
    "json_depth",
    "parse_request",
]

RequestId = str | int

MAX_ID_LENGTH: Final = 128
MAX_TOPIC_LENGTH: Final = 256
MAX_TYPE_LENGTH: Final = 128

#: Client message types the hub handles itself; any other type with an ``id``
#: is a command.
RESERVED_TYPES: Final = frozenset({"subscribe", "unsubscribe", "publish", "auth", "history"})


class ErrorCode(StrEnum):
    """Stable error codes sent to clients (docs/protocol.md, "Error codes")."""

    INVALID_JSON = "invalid_json"
    INVALID_ENVELOPE = "invalid_envelope"
    PAYLOAD_TOO_DEEP = "payload_too_deep"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNKNOWN_MESSAGE_TYPE = "unknown_message_type"
    UNKNOWN_COMMAND = "unknown_command"
    FORBIDDEN = "forbidden"
    DUPLICATE_ID = "duplicate_id"
    TOO_MANY_PENDING = "too_many_pending"
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
    INVALID_PAYLOAD = "invalid_payload"  # a command's payload does not match its type
    COMMAND_FAILED = "command_failed"
    COMMAND_TIMEOUT = "command_timeout"
    SHUTTING_DOWN = "shutting_down"
    UNAUTHORIZED = "unauthorized"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"  # the broker (Redis) cannot be reached: nothing was done


class Codec(Protocol):
    """JSON to and from text. ``loads`` raises ValueError (or RecursionError)
    on bad input; ``dumps`` returns compact UTF-8 bytes and raises TypeError
    or ValueError for values JSON cannot carry."""

    def loads(self, text: str) -> Any: ...

    def dumps(self, value: object) -> bytes: ...


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class JsonCodec:
    """The stdlib codec: compact separators, raw UTF-8, strict JSON (no NaN)."""

    __slots__ = ("_ascii_encoder", "_decoder", "_encoder")

    def __init__(self) -> None:
        self._decoder = json.JSONDecoder(parse_constant=_reject_constant)
        self._encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        self._ascii_encoder = json.JSONEncoder(separators=(",", ":"), allow_nan=False)

    def loads(self, text: str) -> Any:
        return self._decoder.decode(text)

    def dumps(self, value: object) -> bytes:
        try:
            return self._encoder.encode(value).encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate (valid in JSON as "\\ud800", not in UTF-8):
            # escape everything non-ASCII so it round-trips as it came.
            return self._ascii_encoder.encode(value).encode("ascii")


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """A well-formed client envelope."""

    message_type: str
    payload: Any = None
    id: RequestId | None = None
    topic: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EnvelopeError:
    """Why a client frame was refused; ``request_id`` is set when the frame
    carried a usable ``id`` (the answer is then a reply, not an error envelope)."""

    code: ErrorCode
    message: str
    request_id: RequestId | None = None


def json_depth(value: object, limit: int | None = None) -> int:
    """Nesting depth of a decoded JSON value (scalars 0, ``[]`` and ``{}`` 1).

    Iterative, so hostile nesting cannot exhaust the stack; stops early and
    returns ``limit + 1`` once ``limit`` is exceeded.
    """
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        if depth > deepest:
            deepest = depth
            if limit is not None and deepest > limit:
                return limit + 1
        stack.extend((child, depth) for child in children if isinstance(child, dict | list))
    return deepest


def _utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _valid_id(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, str) and len(value) <= MAX_ID_LENGTH


def parse_request(
    text: str,
    *,
    max_size: int,
    max_depth: int,
    codec: Codec | None = None,
) -> Request | EnvelopeError:
    """Validate one client text frame. Never raises on any input.

    ``max_size`` is in UTF-8 bytes; ``max_depth`` counts the envelope object
    itself as depth 1, so the payload may nest ``max_depth - 1`` levels.
    """
    if _utf8_size(text) > max_size:
        return EnvelopeError(
            code=ErrorCode.PAYLOAD_TOO_LARGE, message=f"envelope larger than {max_size} bytes"
        )
    try:
        value = (codec or _DEFAULT_CODEC).loads(text)
    except RecursionError:
        return EnvelopeError(code=ErrorCode.PAYLOAD_TOO_DEEP, message="nesting too deep")
    except (ValueError, TypeError):
        return EnvelopeError(code=ErrorCode.INVALID_JSON, message="not valid JSON")
    if not isinstance(value, dict):
        return EnvelopeError(code=ErrorCode.INVALID_ENVELOPE, message="envelope must be an object")
    raw_id = value.get("id")
    if raw_id is not None and not _valid_id(raw_id):
        return EnvelopeError(
            code=ErrorCode.INVALID_ENVELOPE,
            message=f"id must be an integer or a string of at most {MAX_ID_LENGTH} characters",
        )
    request_id: RequestId | None = raw_id
    if json_depth(value, max_depth) > max_depth:
        return EnvelopeError(
            code=ErrorCode.PAYLOAD_TOO_DEEP,
            message=f"nesting deeper than {max_depth}",
            request_id=request_id,
        )
    message_type = value.get("message_type")
    if not isinstance(message_type, str) or not 0 < len(message_type) <= MAX_TYPE_LENGTH:
        return EnvelopeError(
            code=ErrorCode.INVALID_ENVELOPE,
            message=f"message_type must be a non-empty string of at most {MAX_TYPE_LENGTH} "
            "characters",
            request_id=request_id,
        )
    topic = value.get("topic")
    if topic is not None and (not isinstance(topic, str) or not 0 < len(topic) <= MAX_TOPIC_LENGTH):
        return EnvelopeError(
            code=ErrorCode.INVALID_ENVELOPE,
            message=f"topic must be a non-empty string of at most {MAX_TOPIC_LENGTH} characters",
            request_id=request_id,
        )
    return Request(
        message_type=message_type, payload=value.get("payload"), id=request_id, topic=topic
    )


def encode_envelope(
    message_type: str,
    payload: object = None,
    *,
    timestamp: int,
    id: RequestId | None = None,
    topic: str | None = None,
    seq: int | None = None,
    ok: bool | None = None,
    error: tuple[str, str] | None = None,
    codec: Codec | None = None,
) -> bytes:
    """One server envelope as UTF-8 JSON bytes; optional fields only when set.

    Raises TypeError/ValueError (from the codec) when ``payload`` is not JSON:
    that is the application's mistake and surfaces before any state changes.
    """
    envelope: dict[str, object] = {"message_type": message_type}
    if topic is not None:
        envelope["topic"] = topic
    if seq is not None:
        envelope["seq"] = seq
    if id is not None:
        envelope["id"] = id
    if ok is not None:
        envelope["ok"] = ok
    envelope["payload"] = payload
    if error is not None:
        envelope["error"] = {"code": error[0], "message": error[1]}
    envelope["timestamp"] = timestamp
    return (codec or _DEFAULT_CODEC).dumps(envelope)


def encode_topic_parts(
    message_type: str,
    topic: str,
    payload: object,
    *,
    timestamp: int,
    codec: Codec | None = None,
) -> tuple[bytes, bytes]:
    """A topic envelope encoded once, split where its ``seq`` goes.

    ``head + b"<seq>" + tail`` is the envelope (the same bytes as
    ``encode_envelope`` with that seq, for a compact codec): a broker that
    numbers publications elsewhere splices the number in without decoding.
    """
    codec = codec or _DEFAULT_CODEC
    head = codec.dumps({"message_type": message_type, "topic": topic}).rstrip()
    tail = codec.dumps({"payload": payload, "timestamp": timestamp}).strip()
    return head[:-1] + b',"seq":', b"," + tail[1:]


_DEFAULT_CODEC: Final = JsonCodec()
