"""Write each harness's ``seeds()`` into ``fuzz/corpus/<harness>/``.

Run after changing a harness's input layout or its seeds:
``python fuzz/make_corpus.py``. Stale ``seed_*`` files are removed; inputs
that fuzzing found (``found_*``, ``regress_*``) are kept.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
HARNESSES = (
    "fuzz_server_bytes",
    "fuzz_frames",
    "fuzz_client_bytes",
    "fuzz_envelope",
    "fuzz_hub_ops",
)


def write_all() -> None:
    sys.path.insert(0, str(HERE))
    for name in HARNESSES:
        module = importlib.import_module(name)
        folder = HERE / "corpus" / name
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("seed_*"):
            stale.unlink()
        for seed_name, data in module.seeds().items():
            (folder / f"seed_{seed_name}").write_bytes(data)


if __name__ == "__main__":
    write_all()
