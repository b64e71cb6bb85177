"""Command payloads checked against the handler's type hints (``adapters/payloads``).

Properties: any value built to match a type validates; a value made wrong at
one place is refused with a message naming that place (the reference here is
a small independent model of what each type accepts). Then exact messages,
registration errors, the optional pydantic/msgspec models, and the hub: a
client's bad payload is ``invalid_payload``, and the handler never runs.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, NotRequired, Optional, TypedDict, Union

import anyio
import msgspec
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wshub.adapters import CommandContext, HubServer, connect
from wshub.adapters.payloads import PayloadError, handler_validator, validator
from wshub.core.auth import SUBPROTOCOL, AccessPolicy, StaticTokens
from wshub.core.envelope import ErrorCode

# -- a model of the types and the values they accept -----------------------------------

SCALARS: list[Any] = [int, float, str, bool, type(None), Any]
_names = iter(range(10**9))


def _dataclass_of(fields: list[Any]) -> type:
    return dataclasses.make_dataclass(
        f"D{next(_names)}", [(f"f{i}", t) for i, t in enumerate(fields)]
    )


def _typeddict_of(fields: list[Any]) -> type:
    return TypedDict(f"T{next(_names)}", {f"f{i}": t for i, t in enumerate(fields)})  # type: ignore[operator, no-any-return]


def _extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    some = st.lists(children, min_size=1, max_size=3)
    return st.one_of(
        children.map(lambda t: list[t]),  # type: ignore[valid-type]
        children.map(lambda t: dict[str, t]),  # type: ignore[valid-type]
        children.map(lambda t: Optional[t]),  # noqa: UP045 - the typing spelling on purpose
        st.tuples(children, children).map(lambda ab: ab[0] | ab[1] if _bar(ab) else Union[ab]),  # noqa: UP007
        some.map(lambda ts: tuple[tuple(ts)]),  # type: ignore[misc]
        children.map(lambda t: tuple[t, ...]),  # type: ignore[valid-type]
        some.map(_dataclass_of),
        some.map(_typeddict_of),
    )


def _bar(pair: tuple[Any, Any]) -> bool:
    try:
        pair[0] | pair[1]
    except TypeError:
        return False
    return True


LITERALS = st.lists(
    st.one_of(st.integers(-3, 3), st.text(max_size=3), st.booleans()), min_size=1, max_size=3
).map(lambda values: Literal[tuple(values)])  # type: ignore[misc]
TYPES = st.recursive(st.sampled_from(SCALARS) | LITERALS, _extend, max_leaves=6)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=4),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
    max_leaves=6,
)


def fields_of(t: type) -> dict[str, Any]:
    return typing.get_type_hints(t)


def values_of(t: Any) -> st.SearchStrategy[Any]:
    """JSON values (as a client would send them) that ``t`` accepts."""
    origin, args = typing.get_origin(t), typing.get_args(t)
    if t is Any:
        return JSON
    if t is int:
        return st.integers()
    if t is float:
        return st.integers() | st.floats(allow_nan=False)
    if t is str:
        return st.text(max_size=5)
    if t is bool:
        return st.booleans()
    if t is type(None):
        return st.none()
    if origin is Literal:
        return st.sampled_from(args)
    if origin in (Union, typing.get_origin(int | str)):
        return st.one_of([values_of(a) for a in args])
    if origin is list:
        return st.lists(values_of(args[0]), max_size=3)
    if origin is dict:
        return st.dictionaries(st.text(max_size=4), values_of(args[1]), max_size=3)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(values_of(args[0]), max_size=3)
        return st.tuples(*(values_of(a) for a in args)).map(list)
    return st.fixed_dictionaries({k: values_of(v) for k, v in fields_of(t).items()})


def accepts(t: Any, value: Any) -> bool:
    """The reference: does ``t`` accept this JSON value?"""
    origin, args = typing.get_origin(t), typing.get_args(t)
    if t is Any:
        return True
    if t is bool:
        return isinstance(value, bool)
    if t is int:
        return type(value) is int
    if t is float:
        return type(value) in (int, float)
    if t is str:
        return isinstance(value, str)
    if t is type(None):
        return value is None
    if origin is Literal:
        return any(type(value) is type(a) and value == a for a in args)
    if origin in (Union, typing.get_origin(int | str)):
        return any(accepts(a, value) for a in args)
    if origin is list or (origin is tuple and len(args) == 2 and args[1] is Ellipsis):
        return isinstance(value, list) and all(accepts(args[0], v) for v in value)
    if origin is tuple:
        return (
            isinstance(value, list)
            and len(value) == len(args)
            and all(accepts(a, v) for a, v in zip(args, value, strict=True))
        )
    if origin is dict:
        return isinstance(value, dict) and all(accepts(args[1], v) for v in value.values())
    hints = fields_of(t)
    return (
        isinstance(value, dict)
        and value.keys() == hints.keys()
        and all(accepts(hints[k], v) for k, v in value.items())
    )


def places(t: Any, value: Any, path: str = "payload") -> list[tuple[str, Any, list[Any]]]:
    """(path, type there, route) of every place reached through no union: a wrong
    value there can only be blamed there."""
    found = [(path, t, [])]
    origin, args = typing.get_origin(t), typing.get_args(t)
    steps: list[tuple[Any, str, Any]] = []
    if origin is list or (origin is tuple and len(args) == 2 and args[1] is Ellipsis):
        steps = [(i, f"{path}[{i}]", args[0]) for i in range(len(value))]
    elif origin is tuple:
        steps = [(i, f"{path}[{i}]", a) for i, a in enumerate(args)]
    elif origin is dict:
        steps = [(k, _key(path, k), args[1]) for k in value]
    elif isinstance(t, type) and (dataclasses.is_dataclass(t) or typing.is_typeddict(t)):
        steps = [(k, _key(path, k), h) for k, h in fields_of(t).items()]
    for step, sub_path, sub_t in steps:
        for p, st_, route in places(sub_t, value[step], sub_path):
            found.append((p, st_, [step, *route]))
    return found


def _key(path: str, key: str) -> str:
    return f"{path}.{key}" if key.isidentifier() else f"{path}[{json.dumps(key)}]"


WRONG = [None, True, 7, 1.5, "s", [], {}, [[]], {"?": []}]


def replace(value: Any, route: list[Any], new: Any) -> Any:
    if not route:
        return new
    copy = list(value) if isinstance(value, list) else dict(value)
    copy[route[0]] = replace(value[route[0]], route[1:], new)
    return copy


@st.composite
def typed_values(draw: st.DrawFn) -> tuple[Any, Any]:
    t = draw(TYPES)
    return t, draw(values_of(t))


@settings(max_examples=300)
@given(typed_values())
def test_any_value_of_a_type_validates(pair: tuple[Any, Any]) -> None:
    t, value = pair
    result = validator(t)(value, "payload")
    if isinstance(t, type) and dataclasses.is_dataclass(t):
        assert isinstance(result, t)
    assert plain(result) == value  # the same data, whatever it was converted to


def plain(value: Any) -> Any:
    """Dataclasses as objects, tuples as arrays: the JSON a value stands for."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


@settings(max_examples=300)
@given(typed_values(), st.data())
def test_a_value_wrong_at_one_place_is_refused_naming_it(
    pair: tuple[Any, Any], data: st.DataObject
) -> None:
    t, value = pair
    path, sub_type, route = data.draw(st.sampled_from(places(t, value)))
    wrong = [w for w in WRONG if not accepts(sub_type, w)]
    if not wrong:  # Any, or a union accepting everything we could put there
        return
    bad = replace(value, route, data.draw(st.sampled_from(wrong)))
    assert not accepts(t, bad)
    with pytest.raises(PayloadError) as refused:
        validator(t)(bad, "payload")
    error = refused.value
    assert error.path == path or error.path.startswith((path + ".", path + "["))
    assert str(error).startswith(error.path + ": ")
    assert any(word in error.detail for word in ("expected", "missing", "unexpected"))


@given(st.sampled_from(SCALARS[:-1]), JSON)
def test_scalars_agree_with_the_reference(t: Any, value: Any) -> None:
    try:
        validator(t)(value, "payload")
    except PayloadError:
        assert not accepts(t, value)
    else:
        assert accepts(t, value)


# -- exact messages ----------------------------------------------------------------------


@dataclass
class Point:
    x: int
    y: float = 0.0
    tags: list[str] = field(default_factory=list)


@dataclass
class Tree:
    value: int
    children: list[Tree]


class Options(TypedDict):
    name: str
    limit: NotRequired[int]


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@pytest.mark.parametrize(
    ("hint", "value", "message"),
    [
        (list[int], "abc", "payload: expected array, got string"),
        (list[int], [1, "x"], "payload[1]: expected integer, got string"),
        (int, True, "payload: expected integer, got boolean"),
        (int, 1.5, "payload: expected integer, got number"),
        (bool, 1, "payload: expected boolean, got number"),
        (Point, {"x": "1"}, "payload.x: expected integer, got string"),
        (Point, {"y": 1}, "payload.x: missing required field"),
        (Point, {"x": 1, "z": 2}, "payload.z: unexpected field"),
        (Point, [], "payload: expected object (Point), got array"),
        (Options, {"name": "a", "limit": "x"}, "payload.limit: expected integer, got string"),
        (Options, {}, "payload.name: missing required field"),
        (Optional[list[int]], [1, "x"], "payload[1]: expected integer, got string"),  # noqa: UP045
        (int | str, None, "payload: expected integer or string, got null"),
        (Literal["a", "b"], "c", 'payload: expected one of "a", "b", got "c"'),
        (Literal[1, True], 1.0, "payload: expected one of 1, true, got 1.0"),
        (Color, "green", 'payload: expected one of "red", "blue", got "green"'),
        (tuple[int, str], [1], "payload: expected an array of 2 items, got 1"),
        (dict[str, int], {"a b": "x"}, 'payload["a b"]: expected integer, got string'),
        (Annotated[list[int], "meta"], {}, "payload: expected array, got object"),
        (
            Tree,
            {"value": 1, "children": [{"value": 2, "children": [{"value": "x", "children": []}]}]},
            "payload.children[0].children[0].value: expected integer, got string",
        ),
        (Literal["a"], "x" * 100, 'payload: expected one of "a", got string'),
    ],
)
def test_messages_name_the_place_and_the_expectation(hint: Any, value: Any, message: str) -> None:
    with pytest.raises(PayloadError) as refused:
        validator(hint)(value, "payload")
    assert str(refused.value) == message


def test_values_are_converted_where_the_type_says() -> None:
    assert validator(Point)({"x": 1, "tags": ["a"]}, "p") == Point(1, 0.0, ["a"])
    assert validator(tuple[int, ...])([1, 2], "p") == (1, 2)
    assert validator(Color)("blue", "p") is Color.BLUE
    tree = validator(Tree)({"value": 1, "children": [{"value": 2, "children": []}]}, "p")
    assert tree == Tree(1, [Tree(2, [])])
    assert validator(Mapping[str, Any])({"a": [1]}, "p") == {"a": [1]}


@pytest.mark.parametrize("hint", [set[int], dict[int, str], typing.Callable[[], int], complex])
def test_types_that_cannot_be_checked_are_refused_at_once(hint: Any) -> None:
    with pytest.raises(TypeError, match=r"cannot check|JSON object keys are strings"):
        validator(hint)


def test_handler_annotations() -> None:
    def untyped(ctx, payload):  # type: ignore[no-untyped-def]
        return payload

    def anything(ctx: CommandContext, payload: Any) -> None: ...

    def typed(ctx: CommandContext, payload: list[int]) -> None: ...

    assert handler_validator(untyped) is None
    assert handler_validator(anything) is None
    check = handler_validator(typed)
    assert check is not None
    assert check([1], "payload") == [1]

    def only_its_own(ctx: NotImportedHere, payload: list[int]) -> Unknown: ...  # type: ignore[name-defined]  # noqa: F821

    own = handler_validator(only_its_own)  # the payload's annotation alone is resolved
    assert own is not None
    with pytest.raises(PayloadError):
        own(["x"], "payload")

    class Local:  # not resolvable from the module: a clear error at registration
        pass

    def unresolvable(ctx: CommandContext, payload: Local) -> None: ...

    with pytest.raises(TypeError, match="cannot resolve the payload annotation 'Local'"):
        handler_validator(unresolvable)


# -- optional extras: pydantic and msgspec models --------------------------------------


class Order(pydantic.BaseModel):
    item: str
    quantity: int


class Move(msgspec.Struct):
    x: int
    y: int


def test_pydantic_models_validate_themselves() -> None:
    check = validator(Order)
    assert check({"item": "tea", "quantity": 2}, "payload") == Order(item="tea", quantity=2)
    with pytest.raises(PayloadError) as refused:
        check({"item": "tea", "quantity": "many"}, "payload")
    assert refused.value.path == "payload.quantity"
    assert "integer" in refused.value.detail
    with pytest.raises(PayloadError, match=r"^payload\.item: field required"):
        check({"quantity": 1}, "payload")


def test_msgspec_structs_validate_themselves() -> None:
    check = validator(list[Move])
    assert check([{"x": 1, "y": 2}], "payload") == [Move(1, 2)]
    with pytest.raises(PayloadError) as refused:
        check([{"x": 1, "y": "2"}], "payload")
    assert str(refused.value) == "payload[0].y: expected `int`, got `str`"


# -- over the hub --------------------------------------------------------------------------


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.anyio
async def test_a_clients_bad_payload_is_invalid_payload_and_the_handler_never_runs() -> None:
    calls: list[Any] = []
    server = HubServer(AccessPolicy(tokens=StaticTokens(["t"])))

    @server.command("total")
    async def total(ctx: CommandContext, payload: list[int]) -> int:
        calls.append(payload)
        return sum(payload)

    @server.command("place")
    def place(ctx: CommandContext, payload: Point) -> list[float]:  # sync: a worker thread
        calls.append(payload)
        return [payload.x, payload.y]

    async def call(ws: Any, message_type: str, payload: Any, id: int) -> dict[str, Any]:
        await ws.send(json.dumps({"message_type": message_type, "payload": payload, "id": id}))
        reply = json.loads(await ws.recv())
        assert reply["id"] == id
        return reply  # type: ignore[no-any-return]

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(server.serve)
            async with connect(server.url, token="t", subprotocols=[SUBPROTOCOL]) as ws:
                await ws.recv()  # welcome
                bad = await call(ws, "total", "abc", 1)
                assert bad["ok"] is False
                assert bad["error"] == {
                    "code": ErrorCode.INVALID_PAYLOAD.value,
                    "message": "payload: expected array, got string",
                }
                bad = await call(ws, "place", {"x": 1, "y": "far"}, 2)
                assert bad["error"]["message"] == "payload.y: expected number, got string"
                assert calls == []
                good = await call(ws, "total", [1, 2, 3], 3)
                assert (good["ok"], good["payload"]) == (True, 6)
                good = await call(ws, "place", {"x": 1}, 4)
                assert good["payload"] == [1, 0.0]
                assert calls == [[1, 2, 3], Point(1)]
            assert server.stats().command_errors == 2
            server.shutdown()
