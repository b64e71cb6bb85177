"""Fuzz the envelope codec: ``parse_request`` on any text, then a round trip.

Input layout: byte 0 holds the options (bits 0-1 how the rest becomes text,
bits 2-3 the limits, bits 4-7 a template); the rest is the material.
Text modes: UTF-8 with ``surrogatepass`` (``surrogateescape`` where that
fails), Latin-1, the material spliced into an envelope template, or the
material split into fields of an envelope written with ``json.dumps``.

Oracles: ``parse_request`` returns a ``Request`` that obeys every documented
field rule and limit, or an ``EnvelopeError`` whose code is one of the four
parse codes (with a ``request_id`` only where the id could be read); a
``Request`` encoded back with ``encode_envelope`` is valid UTF-8 and parses
to the same fields under the same depth limit; and the answer the hub sends
for an error (a ``reply`` with ``ok: false`` when the id was read, an
``error`` envelope otherwise) is strict UTF-8 JSON with the fields
docs/protocol.md promises, whatever id the client chose. Never an exception.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
from _common import main

from wshub.core.envelope import (
    MAX_ID_LENGTH,
    MAX_TOPIC_LENGTH,
    MAX_TYPE_LENGTH,
    EnvelopeError,
    ErrorCode,
    Request,
    encode_envelope,
    json_depth,
    parse_request,
)

#: (max_size, max_depth): the hub's defaults, then small ones so the limits bite.
LIMITS = ((256 * 1024, 32), (64, 3), (1, 1), (4096, 8))
PARSE_CODES = frozenset(
    {
        ErrorCode.INVALID_JSON,
        ErrorCode.INVALID_ENVELOPE,
        ErrorCode.PAYLOAD_TOO_DEEP,
        ErrorCode.PAYLOAD_TOO_LARGE,
    }
)
#: Codes given before the id could be read: such errors carry no request_id.
NO_ID_CODES = frozenset({ErrorCode.INVALID_JSON, ErrorCode.PAYLOAD_TOO_LARGE})
TEMPLATES = (
    '{"message_type":%s}',
    '{"message_type":"cmd","id":%s}',
    '{"message_type":"publish","topic":%s,"payload":1}',
    '{"message_type":"publish","topic":"t","id":7,"payload":%s}',
    '{"message_type":"subscribe","topic":"%s","id":"%s"}',
    '{"id":1,"message_type":"x","payload":[%s]}',
    "%s",
    '{"message_type":"x","payload":"%s"}',
)


def _utf8(raw: bytes) -> str:
    try:
        return raw.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return raw.decode("utf-8", "surrogateescape")


def _fields(raw: bytes, *, ascii_only: bool) -> str:
    """The material split on NUL into message_type, topic, id and payload."""
    parts = [*_utf8(raw).split("\x00"), "", "", "", ""]
    kind, topic, ident, payload = parts[:4]
    envelope: dict[str, object] = {"message_type": kind or "x"}
    if topic:
        envelope["topic"] = topic
    if ident:
        envelope["id"] = (
            int(ident) if ident.isascii() and ident.isdigit() and len(ident) < 100 else ident
        )
    try:
        envelope["payload"] = json.loads(payload)
    except (ValueError, RecursionError):
        envelope["payload"] = payload
    try:
        return json.dumps(envelope, ensure_ascii=ascii_only)
    except (ValueError, RecursionError):  # huge ints beyond str conversion
        return json.dumps({"message_type": "x"})


def make_text(data: bytes) -> tuple[str, int, int]:
    """The text to parse and the (max_size, max_depth) limits to parse it with."""
    options, body = data[0], data[1:]
    max_size, max_depth = LIMITS[(options >> 2) & 3]
    mode = options & 3
    if mode == 0:
        text = _utf8(body)
    elif mode == 1:
        text = body.decode("latin-1")
    elif mode == 2:
        template = TEMPLATES[(options >> 4) % len(TEMPLATES)]
        hole = _utf8(body)
        text = template.replace("%s", hole)
    else:
        text = _fields(body, ascii_only=bool(options & 0x10))
    return text, max_size, max_depth


def _valid_id(value: object) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, str) and len(value) <= MAX_ID_LENGTH)


def check_request(request: Request, text: str, max_size: int, max_depth: int) -> None:
    """Every documented rule holds for an accepted envelope."""
    if not isinstance(request.message_type, str) or not (
        0 < len(request.message_type) <= MAX_TYPE_LENGTH
    ):
        raise AssertionError(f"bad message_type accepted: {request!r}")
    topic = request.topic
    if topic is not None and (not isinstance(topic, str) or not 0 < len(topic) <= MAX_TOPIC_LENGTH):
        raise AssertionError(f"bad topic accepted: {request!r}")
    if request.id is not None and not _valid_id(request.id):
        raise AssertionError(f"bad id accepted: {request!r}")
    if len(text.encode("utf-8", "surrogatepass")) > max_size:
        raise AssertionError("envelope over max_size accepted")
    if 1 + json_depth(request.payload) > max_depth:
        raise AssertionError("envelope over max_depth accepted")


def check_error(error: EnvelopeError) -> None:
    if error.code not in PARSE_CODES:
        raise AssertionError(f"parse gave a code outside the parse codes: {error!r}")
    if not isinstance(error.message, str) or not error.message:
        raise AssertionError(f"error without a message: {error!r}")
    if error.request_id is not None and (
        error.code in NO_ID_CODES or not _valid_id(error.request_id)
    ):
        raise AssertionError(f"request_id where none can be read: {error!r}")


def check_round_trip(request: Request, max_depth: int) -> None:
    """Encoding a parsed request gives UTF-8 JSON that parses back to it."""
    encoded = encode_envelope(
        request.message_type,
        request.payload,
        timestamp=1_700_000_000_000,
        id=request.id,
        topic=request.topic,
    )
    again = parse_request(encoded.decode("utf-8"), max_size=len(encoded), max_depth=max_depth)
    if again != request:
        raise AssertionError(f"round trip changed the request:\n{request!r}\n{again!r}")


def _strict_json(data: bytes) -> object:
    """Decode as a browser would: strict UTF-8, standard JSON, no NaN."""

    def no_constants(name: str) -> object:
        raise AssertionError(f"server envelope holds {name}")

    return json.loads(data.decode("utf-8"), parse_constant=no_constants)


def check_error_answer(error: EnvelopeError) -> None:
    """The envelope the hub builds for ``error`` is well-formed JSON."""
    kind = "error" if error.request_id is None else "reply"
    ok = None if error.request_id is None else False
    encoded = encode_envelope(
        kind,
        None,
        timestamp=1_700_000_000_000,
        id=error.request_id,
        ok=ok,
        error=(error.code.value, error.message),
    )
    answer = _strict_json(encoded)
    expected: dict[str, object] = {
        "message_type": kind,
        "payload": None,
        "error": {"code": error.code.value, "message": error.message},
        "timestamp": 1_700_000_000_000,
    }
    if error.request_id is not None:
        expected.update(id=error.request_id, ok=False)
    if answer != expected:
        raise AssertionError(f"error answer {answer!r} != {expected!r}")


def test_one_input(data: bytes) -> None:
    """One run: the body behind atheris, the corpus replay and the hypothesis test."""
    if not data:
        return
    text, max_size, max_depth = make_text(data)
    result = parse_request(text, max_size=max_size, max_depth=max_depth)
    if isinstance(result, Request):
        check_request(result, text, max_size, max_depth)
        check_round_trip(result, max_depth)
    elif isinstance(result, EnvelopeError):
        check_error(result)
        check_error_answer(result)
    else:
        raise AssertionError(f"parse_request returned {result!r}")


def seeds() -> dict[str, bytes]:
    """Named seed inputs: one per mode, limit and template family."""
    return {
        "utf8_minimal": b"\x00" + b'{"message_type":"ping"}',
        "utf8_full": b"\x00"
        + '{"message_type":"publish","topic":"t\u00e9","id":"a","payload":[1,{"x":null}]}'.encode(),
        "utf8_int_id_small": b"\x04" + b'{"message_type":"x","id":12}',
        "utf8_too_large": b"\x08" + b'{"message_type":"x"}',
        "utf8_too_deep": b"\x04" + b'{"message_type":"x","payload":[[[1]]],"id":3}',
        "utf8_bad_json": b"\x00" + b'{"message_type":',
        "utf8_nan": b"\x00" + b'{"message_type":"x","payload":NaN}',
        "utf8_not_object": b"\x00" + b"[1,2]",
        "utf8_bad_id": b"\x00" + b'{"message_type":"x","id":true}',
        "utf8_invalid_bytes": b"\x00" + b'\xff{"message_type":"x"}',
        "latin1": b"\x01" + b'{"message_type":"\xe9t\xe9"}',
        "template_type": b"\x02" + b'"subscribe"',
        "template_id": b"\x12" + b"123456789012345678901234567890",
        "template_topic": b"\x22" + b'"news"',
        "template_payload": b"\x3e" + b'{"a":[1.5,-0.0,1e300,"\\u00e9"]}',
        "template_subscribe": b"\x42" + b"room",
        "template_array": b"\x52" + b"1,2,[3]",
        "template_raw": b"\x62" + b'{"message_type":"x","topic":""}',
        "fields_ascii": b"\x13" + b"cmd\x00topic\x0042\x00[1,2]",
        "fields_utf8": b"\x03" + "r\u00e9ply\x00t\u00f6pic\x00id\x00{}".encode(),
        "fields_long_type": b"\x03" + b"a" * 129,
        "fields_deep_payload": b"\x0f" + b"x\x00t\x00\x00[[[[[[]]]]]]",
    }


def run_corpus(paths: list[str] | list[Path]) -> int:
    """Replay files (or folders of files) without atheris; return how many ran."""
    return _common.run_corpus(test_one_input, paths)


if __name__ == "__main__":
    main(test_one_input)

__all__ = [
    "check_error",
    "check_error_answer",
    "make_text",
    "run_corpus",
    "seeds",
    "test_one_input",
]
