"""What the distribution promises: its licence, and no docstring pointing at a
file the repository (or an unpacked sdist) does not have."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import wshub

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(wshub.__file__).resolve().parent
# Repository files named in the sources: docs/x.md, README.md, examples/x.py ...
REFERENCE = re.compile(
    r"\b((?:docs|examples|benchmarks|fuzz|tests)/[\w./-]+\.\w+|[\w./-]*\w\.(?:md|rst|txt))\b"
)


def test_license_file_matches_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n")
    assert "Permission is hereby granted, free of charge" in text


def test_files_named_in_the_sources_exist() -> None:
    sources = sorted(
        Path(folder, name)
        for folder, _dirs, files in os.walk(PACKAGE, followlinks=True)
        for name in files
        if name.endswith(".py")
    )
    assert any(path.parent.name == "core" for path in sources)  # through the symlink too
    named = {
        match for path in sources for match in REFERENCE.findall(path.read_text(encoding="utf-8"))
    }
    missing = sorted(name for name in named if not (ROOT / name).exists())
    assert not missing, f"named in the sources but absent: {missing}"
