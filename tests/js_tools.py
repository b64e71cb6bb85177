"""External tools of the browser-side tests: node, npm packages, chromium.

A missing tool skips its tests with the reason, except under ``CI=true``,
where CI promised to install it and its absence fails instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "wshub" / "static"
JS_TESTS = ROOT / "tests" / "js"
NPM_CACHE = Path(os.environ.get("WSHUB_NPM_CACHE", Path.home() / ".cache" / "wshub-test-npm"))


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def unavailable(reason: str) -> None:
    """Skip (a developer's machine without the tool) or fail (CI, which installs it)."""
    if in_ci():
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


def require_binary(name: str, *candidates: str) -> str:
    for candidate in (name, *candidates):
        path = shutil.which(candidate)
        if path is not None:
            return path
    unavailable(f"{name} is not on PATH")
    raise AssertionError("unreachable")


def npm_bin(package: str, binary: str) -> Path:
    """``binary`` of the npm ``package`` (``name@version``), installed once into NPM_CACHE."""
    folder = NPM_CACHE / package.replace("/", "_").replace("@", "_")
    path = folder / "node_modules" / ".bin" / binary
    if path.exists():
        return path
    npm = require_binary("npm")
    folder.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [npm, "install", "--prefix", str(folder), "--no-audit", "--no-fund", package],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0 or not path.exists():
        unavailable(f"npm could not install {package}: {result.stderr.strip()[-500:]}")
    return path
