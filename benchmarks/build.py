"""Compile the C load generator on demand (gcc -O2) into the git-ignored build dir."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "loadgen" / "loadgen.c"
BUILD_DIR = HERE / "build"


def build_loadgen(*, output: Path | None = None, force: bool = False) -> Path:
    """Return the path of a load generator binary no older than its source.

    Raises RuntimeError when no C compiler is found or compilation fails, so
    a benchmark run stops with the compiler's message rather than a traceback.
    """
    binary = output or BUILD_DIR / "loadgen"
    if not force and binary.exists() and binary.stat().st_mtime >= SOURCE.stat().st_mtime:
        return binary
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise RuntimeError("no C compiler (gcc or cc) on PATH: the load generator needs one")
    binary.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [compiler, "-O2", "-Wall", "-Wextra", "-o", str(binary), str(SOURCE)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"compiling {SOURCE.name} failed:\n{result.stderr}")
    return binary
