"""The core stays sans-IO: no I/O or threading imports, no clock reads.

Checked on the syntax tree of every ``core/*.py`` (so a forbidden import in a
function body or behind a condition is caught too), and by importing
``wshub.core`` in a fresh interpreter to catch imports made as side effects
of our dependencies.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import wshub.core

# The core that is imported: core/ in the repository, the installed copy when
# the tests run from an unpacked sdist.
CORE = Path(wshub.core.__file__).resolve().parent
FORBIDDEN_MODULES = frozenset(
    {"socket", "ssl", "select", "selectors", "asyncio", "trio", "anyio", "threading"}
)
FORBIDDEN_CALLS = frozenset(
    {
        ("time", "time"),
        ("time", "monotonic"),
        ("time", "perf_counter"),
        ("time", "time_ns"),
        ("time", "monotonic_ns"),
        ("time", "perf_counter_ns"),
        ("datetime", "now"),
        ("datetime", "utcnow"),
        ("datetime", "today"),
        ("date", "today"),
    }
)


def _root(name: str) -> str:
    return name.split(".", 1)[0]


def violations(source: str) -> list[str]:
    """Every forbidden import, alias and clock call in ``source``."""
    tree = ast.parse(source)
    found: list[str] = []
    clock_names: dict[str, tuple[str, str]] = {}  # local name -> forbidden (module, attr)
    module_names: dict[str, str] = {}  # "import time as t": t -> time
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    module_names[alias.asname] = alias.name.split(".")[-1]
                if _root(alias.name) in FORBIDDEN_MODULES:
                    found.append(f"line {node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if _root(node.module) in FORBIDDEN_MODULES:
                found.append(f"line {node.lineno}: from {node.module} import ...")
            for alias in node.names:
                key = (node.module.split(".")[-1], alias.name)
                if key in FORBIDDEN_CALLS:
                    clock_names[alias.asname or alias.name] = key
                    found.append(f"line {node.lineno}: from {node.module} import {alias.name}")
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute):
                owner = func.value
                owner_name = (
                    owner.id
                    if isinstance(owner, ast.Name)
                    else owner.attr
                    if isinstance(owner, ast.Attribute)
                    else None
                )
                owner_name = module_names.get(owner_name or "", owner_name)
                if owner_name is not None and (owner_name, func.attr) in FORBIDDEN_CALLS:
                    found.append(f"line {node.lineno}: {owner_name}.{func.attr}()")
            elif isinstance(func, ast.Name) and func.id in clock_names:
                found.append(f"line {node.lineno}: {func.id}()")
    for node in ast.walk(tree):
        # __import__("socket") / importlib.import_module("socket")
        if (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and _root(node.args[0].value) in FORBIDDEN_MODULES
        ):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name in ("__import__", "import_module"):
                found.append(f"line {node.lineno}: dynamic import of {node.args[0].value}")
    return found


CORE_FILES = sorted(CORE.glob("*.py"))


def test_core_files_found() -> None:
    names = {p.name for p in CORE_FILES}
    assert {"connection.py", "server.py", "client.py", "deflate.py"} <= names


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_core_module_is_pure(path: Path) -> None:
    assert violations(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    "source",
    [
        "import socket",
        "import asyncio.events",
        "from ssl import SSLContext",
        "from anyio import sleep",
        "import threading as t",
        "def f():\n    import selectors",
        "import time\ntime.monotonic()",
        "import time as t\nt.perf_counter()",
        "from time import time\ntime()",
        "from time import monotonic as now\nnow()",
        "import datetime\ndatetime.datetime.now()",
        "from datetime import datetime\ndatetime.now()",
        "__import__('trio')",
        "import importlib\nimportlib.import_module('select')",
    ],
)
def test_checker_catches_violations(source: str) -> None:
    assert violations(source), source


@pytest.mark.parametrize(
    "source",
    ["import os\nos.urandom(4)", "import zlib", "from collections import deque", "x.time"],
)
def test_checker_allows_pure_code(source: str) -> None:
    assert violations(source) == []


def test_importing_core_pulls_in_no_io_module() -> None:
    probe = (
        "import json, sys\n"
        "before = set(sys.modules)\n"
        "import wshub.core\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = json.loads(result.stdout)
    assert "wshub.core" in loaded
    bad = sorted(m for m in loaded if _root(m) in FORBIDDEN_MODULES)
    assert bad == []
