"""The envelope codec: parsing never raises, errors have stable codes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wshub.core.envelope import (
    EnvelopeError,
    ErrorCode,
    JsonCodec,
    Request,
    encode_envelope,
    json_depth,
    parse_request,
)

LIMITS: dict[str, Any] = {"max_size": 256 * 1024, "max_depth": 32}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def parse(text: str, **overrides: Any) -> Request | EnvelopeError:
    return parse_request(text, **{**LIMITS, **overrides})


def error_code(text: str, **overrides: Any) -> ErrorCode:
    result = parse(text, **overrides)
    assert isinstance(result, EnvelopeError), result
    return result.code


def test_minimal_request_defaults() -> None:
    assert parse('{"message_type":"ping"}') == Request(message_type="ping")


def test_all_fields_and_unknown_extras() -> None:
    text = '{"message_type":"publish","topic":"t","id":"a1","payload":[1,{"x":null}],"z":9}'
    assert parse(text) == Request(
        message_type="publish", topic="t", id="a1", payload=[1, {"x": None}]
    )


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", ErrorCode.INVALID_JSON),
        ("{", ErrorCode.INVALID_JSON),
        ('{"message_type":"x","payload":NaN}', ErrorCode.INVALID_JSON),
        ('{"message_type":"x","payload":-Infinity}', ErrorCode.INVALID_JSON),
        ("[1]", ErrorCode.INVALID_ENVELOPE),
        ('"text"', ErrorCode.INVALID_ENVELOPE),
        ("{}", ErrorCode.INVALID_ENVELOPE),
        ('{"message_type":""}', ErrorCode.INVALID_ENVELOPE),
        ('{"message_type":7}', ErrorCode.INVALID_ENVELOPE),
        ('{"message_type":"x","id":true}', ErrorCode.INVALID_ENVELOPE),
        ('{"message_type":"x","id":1.5}', ErrorCode.INVALID_ENVELOPE),
        ('{"message_type":"x","id":[1]}', ErrorCode.INVALID_ENVELOPE),
        ('{"message_type":"x","topic":""}', ErrorCode.INVALID_ENVELOPE),
        ('{"message_type":"x","topic":3}', ErrorCode.INVALID_ENVELOPE),
    ],
)
def test_error_codes(text: str, code: ErrorCode) -> None:
    assert error_code(text) is code


def test_length_bounds_of_id_topic_and_type() -> None:
    assert isinstance(parse(json.dumps({"message_type": "x", "id": "i" * 128})), Request)
    assert (
        error_code(json.dumps({"message_type": "x", "id": "i" * 129})) is ErrorCode.INVALID_ENVELOPE
    )
    assert isinstance(parse(json.dumps({"message_type": "x", "topic": "t" * 256})), Request)
    bad_topic = json.dumps({"message_type": "x", "topic": "t" * 257})
    assert error_code(bad_topic) is ErrorCode.INVALID_ENVELOPE
    assert error_code(json.dumps({"message_type": "m" * 129})) is ErrorCode.INVALID_ENVELOPE


def test_usable_id_is_kept_on_errors() -> None:
    result = parse('{"id":7,"message_type":5}')
    assert isinstance(result, EnvelopeError)
    assert result.request_id == 7
    assert parse('{"id":7}') == EnvelopeError(
        code=ErrorCode.INVALID_ENVELOPE, message=result.message, request_id=7
    )


def test_size_limit_counts_utf8_bytes() -> None:
    text = json.dumps({"message_type": "x", "payload": "é" * 50}, ensure_ascii=False)
    size = len(text.encode("utf-8"))
    assert isinstance(parse(text, max_size=size), Request)
    assert error_code(text, max_size=size - 1) is ErrorCode.PAYLOAD_TOO_LARGE


def test_depth_limit_is_exact() -> None:
    def nested(levels: int) -> str:
        # The envelope object is depth 1; each list adds one.
        return '{"message_type":"x","payload":' + "[" * levels + "]" * levels + "}"

    assert isinstance(parse(nested(31)), Request)
    assert error_code(nested(32)) is ErrorCode.PAYLOAD_TOO_DEEP
    result = parse('{"id":"q","message_type":"x","payload":[[[]]]}', max_depth=3)
    assert isinstance(result, EnvelopeError)
    assert result.request_id == "q"


def test_hostile_nesting_becomes_payload_too_deep() -> None:
    depth = 200_000
    text = '{"message_type":"x","payload":' + "[" * depth + "]" * depth + "}"
    assert error_code(text, max_size=1 << 20) is ErrorCode.PAYLOAD_TOO_DEEP


def test_json_depth_is_iterative_and_stops_early() -> None:
    value: Any = []
    for _ in range(100_000):
        value = [value]
    assert json_depth(value, 10) == 11
    assert json_depth(value) == 100_001
    assert json_depth(5) == 0
    assert json_depth({"a": [], "b": {"c": [1]}}) == 3


def test_encode_is_compact_utf8_and_orders_fields() -> None:
    data = encode_envelope(
        "message", {"é": 1}, timestamp=5, topic="t", seq=2, id="r", ok=True, error=("c", "m")
    )
    assert (
        data
        == (
            '{"message_type":"message","topic":"t","seq":2,"id":"r","ok":true,'
            '"payload":{"é":1},"error":{"code":"c","message":"m"},"timestamp":5}'
        ).encode()
    )
    assert (
        encode_envelope("x", None, timestamp=0)
        == b'{"message_type":"x","payload":null,"timestamp":0}'
    )


def test_encode_refuses_what_json_cannot_carry() -> None:
    with pytest.raises(ValueError, match="not JSON compliant"):
        encode_envelope("x", float("nan"), timestamp=0)
    with pytest.raises(TypeError):
        encode_envelope("x", object(), timestamp=0)


def test_codec_seam_is_used() -> None:
    class Recording(JsonCodec):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[str] = []

        def loads(self, text: str) -> Any:
            self.calls.append("loads")
            return super().loads(text)

        def dumps(self, value: object) -> bytes:
            self.calls.append("dumps")
            return super().dumps(value)

    codec = Recording()
    parse('{"message_type":"x"}', codec=codec)
    encode_envelope("x", 1, timestamp=0, codec=codec)
    assert codec.calls == ["loads", "dumps"]


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_any_json_value_round_trips_as_payload(value: Any) -> None:
    data = encode_envelope("m", value, timestamp=1, id=3)
    result = parse(data.decode("utf-8"), max_depth=10_000)
    assert result == Request(message_type="m", payload=value, id=3)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.text(alphabet='{}[]":,0123456789 aeimnopst_-.\\tfrulyd')))
def test_any_text_parses_or_yields_a_typed_error(text: str) -> None:
    result = parse(text, max_size=512, max_depth=4)
    assert isinstance(result, Request | EnvelopeError)
    if isinstance(result, EnvelopeError):
        assert isinstance(result.code, ErrorCode)
    else:
        assert result.message_type


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["message_type", "id", "topic", "payload"]), json_values))
def test_any_object_parses_or_yields_a_typed_error(obj: dict[str, Any]) -> None:
    result = parse(json.dumps(obj))
    assert isinstance(result, Request | EnvelopeError)
    if isinstance(result, Request):
        assert result.message_type == obj["message_type"]
        assert result.payload == obj.get("payload")
