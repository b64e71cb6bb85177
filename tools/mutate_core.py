"""Mutation testing of ``core/``: a small seeded AST mutator of our own.

Each mutant changes one thing in one module of the core (a comparison
flipped, ``and``/``or`` swapped, a ``not`` dropped, a constant or an
arithmetic operator changed, ``+=`` turned into ``-=``, a call statement or an
assignment to an attribute removed); the core's own tests then run against it
in a scratch copy of the repository. Only the tests that executed the changed
lines run (measured once with coverage.py, each line tagged with the tests
that ran it: tools/core_coverage.sh with tools/test_contexts.py); a mutant
that runs at import (module or class level) gets its module's test files. A
mutant the tests fail on (or that hangs past the timeout) is killed, with the
first failing test named; one they pass on survived, and is printed with its
place so a test can state the behaviour it changed.

    python tools/mutate_core.py --sample 60 --seed 1 --jobs 2   # a sample
    python tools/mutate_core.py --all --jobs 2                   # every mutant (hours)
    python tools/mutate_core.py --module frames --all            # one module
    python tools/mutate_core.py --all --match hub.py:243 --list  # which mutants

The score is killed / mutants; ``--min-score`` makes it a gate (exit 1 below).
``--coverage-data .coverage`` reuses the data of a ``bash
tools/core_coverage.sh`` run on the same source instead of measuring again.
Nothing here imports the core: the copy is what runs.
"""

from __future__ import annotations

import argparse
import ast
import os
import queue
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "core"

#: The core's own tests for each module (see README, "Proof"): the tests that
#: must notice when that module changes. Unlisted modules use CORE_TESTS.
CORE_TESTS = [
    "tests/test_core_*.py",
    "tests/test_hub_*.py",
    "tests/test_auth.py",
    "tests/test_auth_headers.py",
    "tests/test_tokens.py",
    "tests/test_envelope.py",
    "tests/test_redaction.py",
]
CONNECTION_TESTS = [
    "tests/test_core_framing.py",
    "tests/test_core_client.py",
    "tests/test_core_timers.py",
    "tests/test_core_limits.py",
    "tests/test_core_handshake.py",
    "tests/test_core_close_transport.py",
    "tests/test_core_fastpath.py",
    "tests/test_core_fastpath_close.py",
    "tests/test_core_regressions.py",
    "tests/test_core_properties.py",
    "tests/test_core_ping.py",
    "tests/test_core_mutants.py",
]
HUB_TESTS = ["tests/test_hub_*.py", "tests/test_core_outbox.py"]
TESTS: dict[str, list[str]] = {
    "auth": ["tests/test_auth.py", "tests/test_auth_headers.py", "tests/test_hub_auth.py"],
    "tokens": ["tests/test_tokens.py", "tests/test_auth.py"],
    "envelope": ["tests/test_envelope.py", "tests/test_hub_routing.py"],
    "frames": ["tests/test_core_framing.py", "tests/test_core_fastpath.py"],
    "deflate": ["tests/test_core_deflate.py"],
    "handshake": ["tests/test_core_handshake.py"],
    "http_head": ["tests/test_core_http_head.py", "tests/test_core_handshake.py"],
    "request_head": ["tests/test_core_request_head.py", "tests/test_core_handshake.py"],
    "hosts": ["tests/test_core_hosts.py"],
    "limits": ["tests/test_core_config.py", "tests/test_core_limits.py"],
    "hub_config": ["tests/test_core_config.py", "tests/test_hub_auth.py"],
    "topics": ["tests/test_core_config.py", "tests/test_hub_routing.py"],
    "ratelimit": ["tests/test_core_ratelimit.py"],
    "redact": ["tests/test_redaction.py"],
    "connection": CONNECTION_TESTS,
    "server": CONNECTION_TESTS,
    "client": CONNECTION_TESTS,
    "frame_reader": CONNECTION_TESTS,
    "state": CONNECTION_TESTS,
    "close_codes": CONNECTION_TESTS,
}
SKIP_MODULES = {"__init__"}
#: Behaviours survivors of any module revealed: run for every module's mutants.
MUTANT_TESTS = ["tests/test_core_mutants.py", "tests/test_hub_mutants.py"]


@dataclass(frozen=True)
class Mutant:
    module: str
    line: int
    col: int
    index: int  # which mutation of the node at (line, col)
    description: str
    end_line: int = field(default=0, compare=False)
    #: Inside a function's body: runs when called, so the tests that executed
    #: its lines are the ones that can notice it. Elsewhere (module and class
    #: level, defaults, decorators) it runs at import, for every test.
    in_function: bool = field(default=False, compare=False)

    def __str__(self) -> str:
        return f"core/{self.module}.py:{self.line}:{self.col}: {self.description}"


_COMPARE_SWAPS: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Lt: ast.GtE,
    ast.GtE: ast.Lt,
    ast.LtE: ast.Gt,
    ast.Gt: ast.LtE,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}
_BINOP_SWAPS: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.FloorDiv,
    ast.FloorDiv: ast.Mult,
    ast.BitAnd: ast.BitOr,
    ast.BitOr: ast.BitAnd,
    ast.LShift: ast.RShift,
    ast.RShift: ast.LShift,
}


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of docstring constants (not worth mutating)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def _annotations(tree: ast.AST) -> set[int]:
    """ids of every node inside a type annotation (changing one changes nothing at run time)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        parts: list[ast.AST | None] = []
        if isinstance(node, ast.arg):
            parts.append(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            parts.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            parts.append(node.annotation)
        for part in parts:
            if part is not None:
                found.update(id(n) for n in ast.walk(part))
    return found


def _mutations(node: ast.AST, skip: set[int]) -> list[str]:
    """The descriptions of the mutations this node offers (index = position)."""
    if id(node) in skip:
        return []
    if isinstance(node, ast.Compare):
        return [
            f"{type(op).__name__} -> {_COMPARE_SWAPS[type(op)].__name__}"
            for op in node.ops
            if type(op) in _COMPARE_SWAPS
        ]
    if isinstance(node, ast.BoolOp):
        return ["and -> or" if isinstance(node.op, ast.And) else "or -> and"]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return ["not x -> x"]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOP_SWAPS:
        return [f"{type(node.op).__name__} -> {_BINOP_SWAPS[type(node.op)].__name__}"]
    if isinstance(node, ast.Constant):
        if node.value is True or node.value is False:
            return [f"{node.value} -> {not node.value}"]
        if type(node.value) is int:
            return [f"{node.value} -> {node.value + 1}"]
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        return ["call statement removed"]
    found = []
    if isinstance(node, ast.AugAssign) and type(node.op) in _BINOP_SWAPS:
        found.append(f"{type(node.op).__name__}= -> {_BINOP_SWAPS[type(node.op)].__name__}=")
    if isinstance(node, ast.Assign | ast.AugAssign) and all(
        isinstance(target, ast.Attribute) for target in _targets(node)
    ):
        found.append("attribute assignment removed")  # the object's state not updated
    return found


def _targets(node: ast.Assign | ast.AugAssign) -> list[ast.expr]:
    return node.targets if isinstance(node, ast.Assign) else [node.target]


def _nodes(tree: ast.AST) -> Iterator[ast.expr | ast.stmt]:
    """The nodes that have a place in the source (the ones a mutant can name)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.expr | ast.stmt):
            yield node


def _function_bodies(tree: ast.AST) -> set[int]:
    """ids of every node in the body of a function (not its defaults or decorators)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            body = node.body if isinstance(node.body, list) else [node.body]
            for statement in body:
                found.update(id(n) for n in ast.walk(statement))
    return found


def mutants_of(module: str, core: Path = CORE) -> list[Mutant]:
    tree = ast.parse((core / f"{module}.py").read_text(encoding="utf-8"))
    skip = _docstrings(tree) | _annotations(tree)
    bodies = _function_bodies(tree)
    found = []
    for node in _nodes(tree):
        for index, description in enumerate(_mutations(node, skip)):
            found.append(
                Mutant(
                    module,
                    node.lineno,
                    node.col_offset,
                    index,
                    description,
                    end_line=node.end_lineno or node.lineno,
                    in_function=id(node) in bodies,
                )
            )
    return found


def mutated_source(mutant: Mutant, core: Path = CORE) -> str:
    tree = ast.parse((core / f"{mutant.module}.py").read_text(encoding="utf-8"))
    skip = _docstrings(tree) | _annotations(tree)
    for node in _nodes(tree):
        if (node.lineno, node.col_offset) != (mutant.line, mutant.col):
            continue
        offered = _mutations(node, skip)
        if mutant.index >= len(offered) or offered[mutant.index] != mutant.description:
            continue
        _apply(tree, node, mutant.index)
        return ast.unparse(ast.fix_missing_locations(tree))
    raise LookupError(f"mutation point not found: {mutant}")


def _apply(tree: ast.AST, node: ast.AST, index: int) -> None:
    if isinstance(node, ast.Compare):
        positions = [i for i, op in enumerate(node.ops) if type(op) in _COMPARE_SWAPS]
        at = positions[index]
        node.ops[at] = _COMPARE_SWAPS[type(node.ops[at])]()
    elif isinstance(node, ast.BoolOp):
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    elif isinstance(node, ast.UnaryOp):
        _replace(tree, node, node.operand)
    elif isinstance(node, ast.BinOp):
        node.op = _BINOP_SWAPS[type(node.op)]()
    elif isinstance(node, ast.Constant):
        value = node.value
        assert isinstance(value, int), value  # _mutations offers only bools and ints
        node.value = (not value) if isinstance(value, bool) else value + 1
    elif isinstance(node, ast.AugAssign) and index == 0 and type(node.op) in _BINOP_SWAPS:
        node.op = _BINOP_SWAPS[type(node.op)]()
    elif isinstance(node, ast.Expr | ast.Assign | ast.AugAssign):
        _replace(tree, node, ast.Pass())


def _replace(tree: ast.AST, old: ast.AST, new: ast.AST) -> None:
    for parent in ast.walk(tree):
        for name, value in ast.iter_fields(parent):
            if value is old:
                setattr(parent, name, ast.copy_location(new, old))
                return
            if isinstance(value, list):
                for i, item in enumerate(value):
                    if item is old:
                        value[i] = ast.copy_location(new, old)
                        return
    raise LookupError("node not found in its tree")


def scratch_copy() -> Path:
    """A copy of the repository to mutate (the real one is never written)."""
    target = Path(tempfile.mkdtemp(prefix="wshub-mutants-")) / "repo"
    ignore = shutil.ignore_patterns(
        ".git",
        "build",
        "dist",
        "*.egg-info",
        "__pycache__",
        ".mypy_cache",
        ".ruff_cache",
        ".pytest_cache",
        "node_modules",
        "artifacts",
        ".hypothesis",
    )
    shutil.copytree(ROOT, target, symlinks=True, ignore=ignore)
    return target


def tests_for(module: str, repo: Path) -> list[str]:
    """The test files that own ``module`` (run whole for its import-time mutants)."""
    patterns = TESTS.get(module, HUB_TESTS if module.startswith("hub") else CORE_TESTS)
    if module in ("registry", "commands", "outbox_connection"):
        patterns = HUB_TESTS
    files: list[str] = []
    for pattern in [*patterns, *MUTANT_TESTS]:
        files.extend(sorted(str(p.relative_to(repo)) for p in repo.glob(pattern)))
    return list(dict.fromkeys(files))


#: module -> line -> the tests (node ids, parameters dropped) that ran it;
#: "" stands for code run outside any test (imports, collection).
LineTests = dict[str, dict[int, set[str]]]


def measure_line_tests(repo: Path) -> Path:
    """Run the core's own tests once under coverage, each line tagged with the
    tests that ran it (tools/core_coverage.sh with tools/test_contexts.py)."""
    data = repo / ".coverage-mutants"
    env = {**os.environ, "COVERAGE_FILE": str(data)}
    result = subprocess.run(
        ["bash", "tools/core_coverage.sh"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        sys.stdout.write(result.stdout[-4000:] + result.stderr[-4000:])
        raise SystemExit("the core's own tests fail without any mutant: nothing to measure")
    return data


def read_line_tests(data_file: Path) -> LineTests:
    import coverage  # a dev dependency; only this step needs it

    data = coverage.CoverageData(basename=str(data_file))
    data.read()
    found: LineTests = {}
    for filename in data.measured_files():
        path = Path(filename)
        if path.parent.name != "core":
            continue
        by_line = data.contexts_by_lineno(filename)
        found[path.stem] = {
            line: {context.split("[", 1)[0] for context in contexts}
            for line, contexts in by_line.items()
        }
    if not found:
        raise SystemExit(f"{data_file}: no core lines measured (was it made with contexts?)")
    return found


def selected_tests(mutant: Mutant, repo: Path, lines: LineTests | None) -> list[str]:
    """What runs against ``mutant``: the tests that executed its lines, or its
    module's test files when it runs at import (or no measurement was given).
    Empty: no test executes it, so none can kill it."""
    if lines is None or not mutant.in_function:
        return tests_for(mutant.module, repo)
    by_line = lines.get(mutant.module, {})
    chosen: set[str] = set()
    for line in range(mutant.line, max(mutant.line, mutant.end_line) + 1):
        chosen |= by_line.get(line, set())
    if "" in chosen:  # ran outside a test too (at import): every test may see it
        return tests_for(mutant.module, repo)
    return sorted(chosen)


def run_mutant(mutant: Mutant, repo: Path, tests: list[str], timeout: float) -> str | None:
    """What killed it (a failing test, "timeout"), or None if it survived."""
    if not tests:
        return None
    path = repo / "core" / f"{mutant.module}.py"
    original = path.read_text(encoding="utf-8")
    try:
        path.write_text(mutated_source(mutant, path.parent), encoding="utf-8")
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-x",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
            "--hypothesis-seed=0",
            *tests,
        ]
        try:
            result = subprocess.run(
                command, cwd=repo, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            return "timeout"  # a hang is noticed too
        output = result.stdout + result.stderr
        if result.returncode == 4 and "ImportError while loading conftest" in output:
            return "the import of the core (conftest)"
        if result.returncode in (4, 5):  # usage error, no tests collected: our fault
            raise RuntimeError(f"{mutant}: pytest exited {result.returncode}\n{output}")
        if result.returncode == 0:
            return None
        for line in result.stdout.splitlines():  # pytest's summary: "FAILED tests/...: reason"
            verdict, _, rest = line.partition(" ")
            if verdict in ("FAILED", "ERROR") and rest.startswith("tests/"):
                return line.split(" - ", 1)[0]
        return f"pytest exit {result.returncode}"
    finally:
        path.write_text(original, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", action="append", help="core module(s) (default: all)")
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument("--sample", type=int, default=40, help="mutants drawn (default 40)")
    chosen.add_argument("--all", action="store_true", help="every mutant")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--match", action="append", help="only mutants whose description contains this"
    )
    parser.add_argument("--list", action="store_true", help="print the mutants and stop")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run at once (default 1)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per mutant")
    parser.add_argument(
        "--coverage-data",
        type=Path,
        help="a data file from tools/core_coverage.sh of this same source (default: measure)",
    )
    parser.add_argument(
        "--whole-module",
        action="store_true",
        help="run each mutant against its module's test files, not the tests of its lines",
    )
    parser.add_argument("--min-score", type=float, help="exit 1 below this percentage")
    args = parser.parse_args(argv)

    # The mutants are those of a snapshot (the scratch copies), so that the
    # source may change while a long run goes on.
    repos = [] if args.list else [scratch_copy() for _ in range(max(1, args.jobs))]
    core = repos[0] / "core" if repos else CORE
    modules = args.module or sorted(p.stem for p in core.glob("*.py") if p.stem not in SKIP_MODULES)
    everything = [m for module in modules for m in mutants_of(module, core)]
    if args.match:
        everything = [m for m in everything if any(text in str(m) for text in args.match)]
    if args.all or args.sample >= len(everything):
        mutants = everything
    else:
        mutants = random.Random(args.seed).sample(everything, args.sample)
    mutants.sort(key=lambda m: (m.module, m.line, m.col, m.index))
    print(f"{len(mutants)} of {len(everything)} mutants in {len(modules)} modules", flush=True)
    if args.list:
        for mutant in mutants:
            print(mutant)
        return 0

    started = time.monotonic()
    survivors: list[Mutant] = []
    try:
        lines: LineTests | None = None
        if not args.whole_module:
            data = args.coverage_data or measure_line_tests(repos[0])
            lines = read_line_tests(data)
            print(f"tests per line measured ({time.monotonic() - started:.0f} s)", flush=True)
        free: queue.Queue[Path] = queue.Queue()
        for repo in repos:
            free.put(repo)

        def judge(mutant: Mutant) -> tuple[Mutant, str | None, int]:
            repo = free.get()
            try:
                tests = selected_tests(mutant, repo, lines)
                return mutant, run_mutant(mutant, repo, tests, args.timeout), len(tests)
            finally:
                free.put(repo)

        with ThreadPoolExecutor(max_workers=len(repos)) as pool:
            for number, (mutant, killer, ran) in enumerate(pool.map(judge, mutants), 1):
                if killer is None:
                    survivors.append(mutant)
                    note = f" ({ran} tests)" if ran else " (no test runs it)"
                    print(f"[{number}/{len(mutants)}] SURVIVED {mutant}{note}", flush=True)
                else:
                    print(f"[{number}/{len(mutants)}] killed   {mutant} by {killer}", flush=True)
    finally:
        for repo in repos:
            shutil.rmtree(repo.parent, ignore_errors=True)
    score = 100.0 * (len(mutants) - len(survivors)) / max(1, len(mutants))
    minutes = (time.monotonic() - started) / 60
    print(
        f"mutation score {score:.1f}% ({len(mutants) - len(survivors)}/{len(mutants)} killed, "
        f"seed {args.seed}, {minutes:.1f} min)"
    )
    for mutant in survivors:
        print(f"  survived: {mutant}")
    if args.min_score is not None and score < args.min_score:
        print(f"below the gate of {args.min_score}%")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
