"""Command payloads checked against the handler's type hints, before it runs.

A client that sends ``"abc"`` to a command whose payload is ``list[int]``
gets ``invalid_payload`` with the place and the expectation
(``payload: expected array, got string``), not ``command_failed``: its own
mistake, told apart from a server bug, and never a traceback.

``validator(hint)`` compiles a type once (at registration) into a function
``(value, path) -> value`` that raises ``PayloadError``. Understood: ``Any``
and ``object`` (anything), ``None``, ``bool``, ``int``, ``float`` (an
integer too), ``str``, ``list[T]``, ``tuple[T, ...]`` and ``tuple[A, B]``
(from arrays), ``dict[str, T]`` (and ``Mapping``/``Sequence``), unions and
``Optional``, ``Literal``, ``Enum`` (by value), ``Annotated``, dataclasses
and ``TypedDict`` (no unknown keys; dataclasses are built), and as optional
extras pydantic models and msgspec structs (their own validation). A hint it
does not understand is refused at registration with ``TypeError``:
annotate the payload ``Any`` to take it unchecked.
"""

from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import enum
import inspect
import json
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, Union, get_args, get_origin, is_typeddict

__all__ = ["PayloadError", "Validator", "handler_validator", "validator"]

#: ``(value, path) -> value``: the value, converted where the hint asks
#: (dataclasses, tuples, enums), or ``PayloadError``.
Validator = Callable[[Any, str], Any]


class PayloadError(ValueError):
    """A payload does not match its type: where (``path``) and what was expected."""

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.path = path
        self.detail = detail


def kind(value: object) -> str:
    """The JSON name of a value's type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _mismatch(path: str, expected: str, value: object) -> PayloadError:
    return PayloadError(path, f"expected {expected}, got {kind(value)}")


def _item(path: str, index: int) -> str:
    return f"{path}[{index}]"


def _key(path: str, key: str) -> str:
    return f"{path}.{key}" if key.isidentifier() else f"{path}[{json.dumps(key)}]"


class _Node:
    """A compiled hint: ``check`` and how to name it in messages."""

    __slots__ = ("check", "expected", "kinds")

    def __init__(self, check: Validator, expected: str, kinds: frozenset[str]) -> None:
        self.check = check
        self.expected = expected
        self.kinds = kinds  # the JSON kinds it may accept (for unions' messages)


_ALL_KINDS = frozenset({"null", "boolean", "number", "string", "array", "object"})


def validator(hint: Any) -> Validator:
    """Compile ``hint`` into a validator; ``TypeError`` if it cannot be checked."""
    return _Compiler().compile(hint).check


def handler_validator(func: Callable[..., Any]) -> Validator | None:
    """The validator of a command handler's payload (its second parameter), or
    None when it has no annotation or is annotated ``Any``/``object``."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return None
    positional = [
        p
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(positional) < 2 or positional[1].annotation is inspect.Parameter.empty:
        return None
    param = positional[1]
    hint = param.annotation
    if isinstance(hint, str):
        # Resolve this annotation alone: the others (the context's, the
        # result's) may name types imported only for type checkers.
        target = inspect.unwrap(func if inspect.isroutine(func) else type(func).__call__)
        holder: Any = lambda: None  # noqa: E731 - a bare object carrying one annotation
        holder.__annotations__ = {"payload": hint}
        try:
            hint = typing.get_type_hints(
                holder, globalns=getattr(target, "__globals__", {}), include_extras=True
            )["payload"]
        except Exception as exc:
            raise TypeError(
                f"cannot resolve the payload annotation {param.annotation!r} of "
                f"{getattr(func, '__qualname__', func)!r} ({exc}): define the types it names "
                "at module level, or annotate the payload Any"
            ) from None
    if hint is Any or hint is object:
        return None
    return validator(hint)


class _Compiler:
    """Compiles hints, once each (recursive dataclasses refer to themselves)."""

    def __init__(self) -> None:
        self._done: dict[Any, _Node] = {}

    def compile(self, hint: Any) -> _Node:
        try:
            known = self._done.get(hint)
        except TypeError:  # an unhashable hint: Literal of a list, say
            known = None
        if known is not None:
            return known
        node = self._compile(hint)
        with contextlib.suppress(TypeError):  # unhashable hints compile each time
            self._done[hint] = node
        return node

    def _compile(self, hint: Any) -> _Node:
        if hint is Any or hint is object:
            return _Node(lambda value, _path: value, "any value", _ALL_KINDS)
        if hint is None or hint is type(None):
            return _scalar(lambda v: v is None, "null", "null")
        if hint is bool:
            return _scalar(lambda v: isinstance(v, bool), "boolean", "boolean")
        if hint is int:
            return _scalar(lambda v: isinstance(v, int) and not isinstance(v, bool), "integer")
        if hint is float:
            return _scalar(
                lambda v: isinstance(v, int | float) and not isinstance(v, bool), "number"
            )
        if hint is str:
            return _scalar(lambda v: isinstance(v, str), "string", "string")
        if hint is list or hint is collections.abc.Sequence:
            return self._array(Any, list)
        if hint is dict or hint is collections.abc.Mapping:
            return self._object(Any)
        if hint is tuple:
            return self._array(Any, tuple)
        if isinstance(hint, typing.NewType):
            return self.compile(hint.__supertype__)
        origin, args = get_origin(hint), get_args(hint)
        if origin is typing.Annotated:
            return self.compile(args[0])
        if origin is Union or origin is types.UnionType:
            return self._union(args)
        if origin is Literal:
            return _literal(args)
        if origin in (list, collections.abc.Sequence, collections.abc.MutableSequence):
            return self._array(args[0] if args else Any, list)
        if origin is tuple:
            if len(args) == 2 and args[1] is Ellipsis:
                return self._array(args[0], tuple)
            return self._fixed_tuple(args)
        if origin in (dict, collections.abc.Mapping, collections.abc.MutableMapping):
            if args and args[0] is not str and args[0] is not Any:
                raise TypeError(f"JSON object keys are strings: cannot check {hint!r}")
            return self._object(args[1] if args else Any)
        if isinstance(hint, type):
            if issubclass(hint, enum.Enum):
                return _enum(hint)
            if is_typeddict(hint):
                return self._typeddict(hint)
            if dataclasses.is_dataclass(hint):
                return self._dataclass(hint)
            extra = _extra_model(hint)
            if extra is not None:
                return extra
        raise TypeError(
            f"cannot check payloads against {hint!r}: use JSON types, list/dict/tuple, "
            "unions, Literal, Enum, dataclasses, TypedDict (or pydantic/msgspec models), "
            "or annotate the payload Any"
        )

    def _array(self, item_hint: Any, result: type[list[Any]] | type[tuple[Any, ...]]) -> _Node:
        item = self.compile(item_hint)
        expected = "array" if item_hint is Any else f"array of {item.expected}"

        def check(value: Any, path: str) -> Any:
            if not isinstance(value, list):
                raise _mismatch(path, "array", value)
            checked = [item.check(v, _item(path, i)) for i, v in enumerate(value)]
            return tuple(checked) if result is tuple else checked

        return _Node(check, expected, frozenset({"array"}))

    def _fixed_tuple(self, hints: tuple[Any, ...]) -> _Node:
        if hints == ((),):  # tuple[()]: the empty tuple
            hints = ()
        items = [self.compile(h) for h in hints]

        def check(value: Any, path: str) -> Any:
            if not isinstance(value, list):
                raise _mismatch(path, "array", value)
            if len(value) != len(items):
                raise PayloadError(
                    path, f"expected an array of {len(items)} items, got {len(value)}"
                )
            return tuple(
                node.check(v, _item(path, i))
                for i, (node, v) in enumerate(zip(items, value, strict=True))
            )

        return _Node(check, f"array of {len(items)} items", frozenset({"array"}))

    def _object(self, value_hint: Any) -> _Node:
        node = self.compile(value_hint)
        expected = "object" if value_hint is Any else f"object of {node.expected}"

        def check(value: Any, path: str) -> Any:
            if not isinstance(value, dict):
                raise _mismatch(path, "object", value)
            return {k: node.check(v, _key(path, k)) for k, v in value.items()}

        return _Node(check, expected, frozenset({"object"}))

    def _union(self, hints: tuple[Any, ...]) -> _Node:
        nodes = [self.compile(h) for h in hints]
        expected = " or ".join(dict.fromkeys(n.expected for n in nodes))
        kinds = frozenset().union(*(n.kinds for n in nodes))

        def check(value: Any, path: str) -> Any:
            errors: list[PayloadError] = []
            for node in nodes:
                try:
                    return node.check(value, path)
                except PayloadError as exc:
                    errors.append(exc)
            # One alternative takes this kind of value: its own error is the useful one.
            fitting = [e for n, e in zip(nodes, errors, strict=True) if kind(value) in n.kinds]
            if len(fitting) == 1:
                raise fitting[0]
            raise _mismatch(path, expected, value)

        return _Node(check, expected, kinds)

    def _fields(
        self, owner: type, required: frozenset[str], optional: frozenset[str]
    ) -> tuple[dict[str, _Node], frozenset[str]]:
        try:
            hints = typing.get_type_hints(owner)
        except Exception as exc:
            raise TypeError(
                f"cannot resolve the field types of {owner.__qualname__}: {exc}"
            ) from None
        placeholder = _Node(lambda value, _path: value, owner.__qualname__, frozenset({"object"}))
        self._done[owner] = placeholder  # a field of its own type refers to this node
        names = required | optional
        fields = {name: self.compile(hints.get(name, Any)) for name in names}
        return fields, required

    def _typeddict(self, hint: Any) -> _Node:
        required = set(hint.__required_keys__)
        optional = set(hint.__optional_keys__)
        # Python 3.11 cannot see NotRequired/Required in string annotations
        # (``from __future__ import annotations``): read them from the hints.
        with contextlib.suppress(Exception):  # unresolvable: _fields says why
            for name, extra in typing.get_type_hints(hint, include_extras=True).items():
                marker = get_origin(extra)
                if marker is typing.NotRequired:
                    required.discard(name)
                    optional.add(name)
                elif marker is typing.Required:
                    optional.discard(name)
                    required.add(name)
        fields, _ = self._fields(hint, frozenset(required), frozenset(optional))
        required_keys = frozenset(required)
        check = _object_checker(fields, required_keys, hint.__qualname__, build=None)
        return self._finish(hint, check)

    def _dataclass(self, hint: type) -> _Node:
        init = [f for f in dataclasses.fields(hint) if f.init]
        required = frozenset(
            f.name
            for f in init
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        )
        optional = frozenset(f.name for f in init) - required
        fields, required = self._fields(hint, required, optional)
        return self._finish(hint, _object_checker(fields, required, hint.__qualname__, build=hint))

    def _finish(self, hint: type, check: Validator) -> _Node:
        node = self._done[hint]  # the placeholder, made real for every reference to it
        node.check = check
        return node


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _scalar(test: Callable[[Any], bool], expected: str, json_kind: str = "number") -> _Node:
    def check(value: Any, path: str) -> Any:
        if not test(value):
            raise _mismatch(path, expected, value)
        return value

    return _Node(check, expected, frozenset({json_kind}))


def _literal(values: tuple[Any, ...]) -> _Node:
    allowed = [(type(v), v) for v in values]
    expected = "one of " + ", ".join(_show(v) for v in values)

    def check(value: Any, path: str) -> Any:
        for allowed_type, allowed_value in allowed:
            if type(value) is allowed_type and value == allowed_value:
                return value
        raise PayloadError(path, f"expected {expected}, got {_show_got(value)}")

    return _Node(check, expected, frozenset(kind(v) for v in values))


def _enum(hint: type[enum.Enum]) -> _Node:
    members = list(hint)
    expected = "one of " + ", ".join(_show(m.value) for m in members)

    def check(value: Any, path: str) -> Any:
        for member in members:
            if type(value) is type(member.value) and value == member.value:
                return member
        raise PayloadError(path, f"expected {expected}, got {_show_got(value)}")

    return _Node(check, expected, frozenset(kind(m.value) for m in members))


def _object_checker(
    fields: dict[str, _Node], required: frozenset[str], name: str, build: type | None
) -> Validator:
    def check(value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise _mismatch(path, f"object ({name})", value)
        for key in value:
            if key not in fields:
                raise PayloadError(_key(path, key), "unexpected field")
        for key in sorted(required - value.keys()):
            raise PayloadError(_key(path, key), "missing required field")
        checked = {k: fields[k].check(v, _key(path, k)) for k, v in value.items()}
        return checked if build is None else build(**checked)

    return check


def _show(value: object) -> str:
    if isinstance(value, str):
        return '"' + value + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else repr(value)


def _show_got(value: object) -> str:
    """A scalar shown briefly (it may be anything a client sent), else its kind."""
    if isinstance(value, str) and len(value) <= 40 and value.isprintable():
        return _show(value)
    if isinstance(value, bool | int | float) or value is None:
        return _show(value)
    return kind(value)


def _extra_model(hint: type) -> _Node | None:
    """pydantic models and msgspec structs validate themselves (optional extras)."""
    roots = {base.__module__.split(".", 1)[0] for base in hint.__mro__}
    if "pydantic" in roots and hasattr(hint, "model_validate"):
        return _pydantic(hint)
    if "msgspec" in roots:
        return _msgspec(hint)
    return None


def _pydantic(hint: Any) -> _Node:
    import pydantic

    def check(value: Any, path: str) -> Any:
        try:
            return hint.model_validate(value)
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            where = path
            for part in first.get("loc", ()):
                where = _item(where, part) if isinstance(part, int) else _key(where, str(part))
            raise PayloadError(where, str(first.get("msg", "invalid")).lower()) from None

    return _Node(check, f"object ({hint.__qualname__})", frozenset({"object"}))


def _msgspec(hint: Any) -> _Node:
    import msgspec  # type: ignore[import-not-found, unused-ignore]

    def check(value: Any, path: str) -> Any:
        try:
            return msgspec.convert(value, hint)
        except msgspec.ValidationError as exc:
            text = str(exc)
            detail, _, where = text.partition(" - at `")
            location = where.rstrip("`")
            full = path + location[1:] if location.startswith("$") else path
            raise PayloadError(full, detail[:1].lower() + detail[1:]) from None

    return _Node(check, f"object ({hint.__qualname__})", frozenset({"object"}))
