"""Replay the fuzz corpora (committed seeds and inputs kept from fuzzing runs)
through the harness bodies, so CI checks them without atheris; and check that
the committed seeds are exactly what the harnesses' ``seeds()`` produce."""

from __future__ import annotations

from pathlib import Path

import pytest
from fuzz_support import FUZZ, HARNESSES, harness


def corpus_files(name: str) -> list[Path]:
    folder = FUZZ / "corpus" / name
    return sorted(p for p in folder.iterdir() if p.is_file())


@pytest.mark.parametrize("name", HARNESSES)
def test_seed_corpus_replays(name: str) -> None:
    module = harness(name)
    files = corpus_files(name)
    assert len(files) >= 5
    assert module.run_corpus(files) == len(files)


@pytest.mark.parametrize("name", HARNESSES)
def test_committed_seeds_match_harness(name: str) -> None:
    module = harness(name)
    on_disk = {p.name: p.read_bytes() for p in corpus_files(name) if p.name.startswith("seed_")}
    assert on_disk == {f"seed_{k}": v for k, v in module.seeds().items()}
