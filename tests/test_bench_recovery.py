"""``benchmarks/recovery.py`` still runs (a small smoke run; no figure is judged)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "recovery.py"


def test_recovery_benchmark_smoke_run() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--messages", "300", "--rounds", "1", "--no-pin"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("300 missed messages of 100 bytes, asyncio, 1 rounds:")
    assert "round 1:" in result.stdout
