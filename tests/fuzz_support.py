"""Import the atheris harnesses and their oracles (fuzz/ is not a package)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"

__all__ = ["FUZZ", "HARNESSES", "harness"]


def harness(name: str) -> ModuleType:
    """A module of fuzz/ (a harness, ``_checks``, ``_contract``...)."""
    if str(FUZZ) not in sys.path:
        sys.path.insert(0, str(FUZZ))
    return importlib.import_module(name)


# The list the corpus writer uses: a new harness is tested once it is there.
HARNESSES: tuple[str, ...] = harness("make_corpus").HARNESSES
