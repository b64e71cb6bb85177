"""Import the atheris harnesses and their oracles (fuzz/ is not a package)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"
HARNESSES = (
    "fuzz_server_bytes",
    "fuzz_frames",
    "fuzz_client_bytes",
    "fuzz_envelope",
    "fuzz_hub_ops",
)

__all__ = ["FUZZ", "HARNESSES", "harness"]


def harness(name: str) -> ModuleType:
    """A module of fuzz/ (a harness, ``_checks``, ``_contract``...)."""
    if str(FUZZ) not in sys.path:
        sys.path.insert(0, str(FUZZ))
    return importlib.import_module(name)
