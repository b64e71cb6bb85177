"""``benchmarks/mounting.py`` still runs (a tiny smoke run; no figure is judged)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "mounting.py"
SMOKE = [
    "--rounds",
    "1",
    "--duration",
    "0.3",
    "--echo-conns",
    "4",
    "--subscribers",
    "50",
    "--no-pin",
]


def test_mounting_benchmark_smoke_run() -> None:
    if shutil.which("gcc") is None and shutil.which("cc") is None:
        pytest.skip("no C compiler on PATH (the load generator is compiled on first use)")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *SMOKE],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for server in ("wshub", "wshub-uvicorn"):
        for scenario in ("echo", "fanout"):
            assert f"round 1 {scenario:<7} {server:<14}" in result.stdout, result.stdout
    assert "| echo |" in result.stdout
    assert "| fanout |" in result.stdout
