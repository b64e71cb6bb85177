"""docs/core.md runs as written, and the names it gives are the core's.

The guide presents itself as one interpreter session: later examples use what
earlier ones defined (the fake clock, ``shuttle``, ``open_pair``). So its
python blocks run in order in a single namespace, each compiled at its own
line of the guide, so that a failure points at the line in docs/core.md. The
checks are the blocks' own asserts on the events and bytes the guide shows.
The last section opens real sockets (127.0.0.1, port 0); it is bounded by the
core's own timeouts and a joined thread.

Beside the blocks, the prose: every ``Class.attribute`` of ``wshub.core``
named in inline code must exist, every ``method(arguments)`` written there
must match the method's signature, and the Limits table must list every
field with its true default.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
from pathlib import Path
from typing import Any

import wshub.core
from wshub.core import ClientConnection, Connection, Hub, Limits, ServerConnection

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "core.md"
TEXT = GUIDE.read_text(encoding="utf-8")
FENCE = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


def python_blocks() -> list[tuple[int, str]]:
    """(line number of the block's first code line, code) in document order."""
    return [(TEXT.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in FENCE.finditer(TEXT)]


def sections() -> dict[str, str]:
    """The text of each ``## `` section, by title."""
    parts = re.split(r"^## (.+)$", TEXT, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_guide_runs_in_order() -> None:
    namespace: dict[str, Any] = {"__name__": "docs_core_guide"}
    blocks = python_blocks()
    assert len(blocks) >= 30
    for line, code in blocks:
        # Padding keeps line numbers: a traceback names docs/core.md:<line>.
        compiled = compile("\n" * (line - 1) + code, str(GUIDE), "exec")
        exec(compiled, namespace)
    # The last section really went over sockets and saw the whole exchange.
    assert [type(e).__name__ for e in namespace["client_saw"]] == [
        "Opened",
        "TextMessage",
        "Closed",
    ]
    assert not namespace["server_thread"].is_alive()


def test_every_section_but_the_first_and_last_has_code() -> None:
    titles = list(sections())
    assert titles[0] == "The idea"
    assert titles[-1] == "Where next"
    without = [t for t in titles[1:-1] if "```python" not in sections()[t]]
    assert without == []


def _resolve(dotted: str) -> object:
    """The object a dotted name of wshub names; raises if there is none."""
    parts = dotted.split(".")
    if parts[0] == "wshub":
        for end in range(len(parts), 0, -1):
            try:
                target: object = importlib.import_module(".".join(parts[:end]))
            except ImportError:
                continue
            for name in parts[end:]:
                target = getattr(target, name)
            return target
        raise AssertionError(dotted)  # pragma: no cover - "wshub" always imports
    target = getattr(wshub.core, parts[0])
    for name in parts[1:]:
        target = getattr(target, name)
    return target


INLINE = re.compile(r"`([^`\n]+)`")
DOTTED = re.compile(r"^(?:wshub(?:\.\w+)+|([A-Z]\w*)(?:\.\w+)+)$")
CALL = re.compile(r"^\w+\(.*\)$")
DRIVEN = (ServerConnection, ClientConnection, Connection, Hub)


def _inline_code() -> list[str]:
    prose = FENCE.sub("", re.sub(r"^```text\n.*?^```$", "", TEXT, flags=re.S | re.M))
    return INLINE.findall(prose)


def test_dotted_names_exist() -> None:
    checked = []
    for span in _inline_code():
        match = DOTTED.match(span)
        if match is None or (match.group(1) and match.group(1) not in wshub.core.__all__):
            continue  # not ours (time.monotonic, dataclasses.replace ...)
        _resolve(span)
        checked.append(span)
    assert {"Limits.handshake_timeout", "wshub.core.Hub"} <= set(checked)


def _callable(name: str) -> Any:
    """A class of wshub.core, or a method of the objects the guide drives."""
    if name in wshub.core.__all__:
        return getattr(wshub.core, name)
    for cls in DRIVEN:
        if hasattr(cls, name):
            return getattr(cls, name)
    raise AssertionError(f"no method {name!r} on {[c.__name__ for c in DRIVEN]}")


def _check_call(span: str) -> str:
    """``name(a, 1, b=2, c=...)`` as the guide writes it must fit the signature:
    a bare name stands for the parameter in its place, ``...`` for any value,
    and a literal keyword value must be the parameter's default."""
    call = ast.parse(span, mode="eval").body
    assert isinstance(call, ast.Call), span
    assert isinstance(call.func, ast.Name), span
    target = _callable(call.func.id)
    signature = inspect.signature(target)
    if not inspect.isclass(target):  # drop ``self``
        signature = signature.replace(parameters=list(signature.parameters.values())[1:])
    names = list(signature.parameters)
    for position, argument in enumerate(call.args):
        if isinstance(argument, ast.Name):
            assert names[position] == argument.id, f"`{span}`: {position} is {names[position]}"
    for keyword in call.keywords:
        name = keyword.arg
        assert name is not None, f"`{span}`: **arguments"
        assert name in signature.parameters, f"`{span}`: no parameter {name!r}"
        value = keyword.value
        if isinstance(value, ast.Constant) and value.value is not Ellipsis:
            default = signature.parameters[name].default
            assert value.value == default, f"`{span}`: the default is {default!r}"
    signature.bind(*call.args, **{k.arg: k.value for k in call.keywords if k.arg})
    return call.func.id


def test_calls_match_the_signatures() -> None:
    checked = {_check_call(span) for span in _inline_code() if CALL.match(span)}
    assert {"receive_data", "handle_timer", "close", "send_ping", "reject", "Limits"} <= checked


_UNITS = {"MiB": 1 << 20, "KiB": 1 << 10, "s": 1, "per s": 1}


def _default(cell: str) -> object:
    """A default as the guide's Limits table writes it: 1 MiB, 10 s, `None` (off), 50."""
    if cell.startswith("`None`"):
        return None
    number, _, unit = cell.partition(" ")
    return int(number) * _UNITS[unit] if unit else int(number)


def test_limits_table_lists_every_field_with_its_default() -> None:
    rows = re.findall(r"^\| (`\w+`(?: / `\w+`)?) \| ([^|]+) \|", sections()["Limits"], re.M)
    listed: dict[str, object] = {}
    for names, defaults in rows:
        for name, cell in zip(
            re.findall(r"`(\w+)`", names), defaults.strip().split(" / "), strict=True
        ):
            listed[name] = _default(cell)
    defaults = Limits()
    assert listed == {f.name: getattr(defaults, f.name) for f in dataclasses.fields(Limits)}
