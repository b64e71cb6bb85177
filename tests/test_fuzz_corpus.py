"""Replay the fuzz seed corpora (and any saved crash reproducers) through the
harness functions, so CI checks them without atheris; and check that the
committed seeds are exactly what the harnesses' ``seeds()`` produce."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"
HARNESSES = (
    "fuzz_server_bytes",
    "fuzz_frames",
    "fuzz_client_bytes",
    "fuzz_envelope",
    "fuzz_hub_ops",
)


def harness(name: str) -> ModuleType:
    if str(FUZZ) not in sys.path:
        sys.path.insert(0, str(FUZZ))
    return importlib.import_module(name)


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


def test_harness_detects_a_broken_invariant() -> None:
    """The oracle is live: an input that changes with chunking is reported."""
    common = harness("_common")
    from wshub.core import Closed, TextMessage

    with pytest.raises(AssertionError):
        common.check_one_closed([Closed(code=1000), Closed(code=1000)])
    with pytest.raises(AssertionError):
        common.check_one_closed([Closed(code=1000), TextMessage(data="late")])
    common.check_one_closed([TextMessage(data="x"), Closed(code=1000)])


def test_hub_harness_oracles_are_live() -> None:
    """The envelope and hub-ops oracles reject what they must."""
    from wshub.core.envelope import EnvelopeError, ErrorCode

    envelope = harness("fuzz_envelope")
    with pytest.raises(AssertionError):
        envelope.check_error(EnvelopeError(code=ErrorCode.FORBIDDEN, message="not a parse code"))
    with pytest.raises(AssertionError):
        envelope.check_error(EnvelopeError(code=ErrorCode.INVALID_JSON, message="x", request_id=1))
    envelope.check_error(EnvelopeError(code=ErrorCode.INVALID_ENVELOPE, message="x", request_id=1))

    ops = harness("fuzz_hub_ops")
    reader = harness("_hub_common").ByteReader(b"")
    world = ops._make_world(reader)
    ops._op_add(world, reader)
    ops.check_invariants(world)
    [peer] = world.peers.values()
    peer.registered = False  # the harness believes it removed, the hub did not
    with pytest.raises(AssertionError):
        ops.check_invariants(world)
