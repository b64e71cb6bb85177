"""pytest plugin: coverage.py records which test ran each line of the core.

Loaded by tools/core_coverage.sh (``-p tools.test_contexts``). While a test
runs (setup, call and teardown), coverage's dynamic context is the test's node
id; outside tests (collection, imports) it is the empty context. The mutation
tester (tools/mutate_core.py) reads these contexts to run, for each mutant,
only the tests that execute the line it changed.

Not named ``test_*`` for pytest's sake: it is not collected (tools/ is outside
the test paths).
"""

from __future__ import annotations

from collections.abc import Generator

import coverage
import pytest


def _switch(context: str) -> None:
    current = coverage.Coverage.current()
    if current is not None:
        current.switch_context(context)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    _switch(item.nodeid)
    try:
        return (yield)
    finally:
        _switch("")
