"""``benchmarks/crossnode.py`` still runs (tiny counts; no figure is judged).

Every system (wshub over Redis, one in-memory wshub node, python-socketio with
AsyncRedisManager) must deliver every publication to every subscriber over its
nodes and private Redis, with no problem reported.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "crossnode.py"


@pytest.fixture
def compiler() -> None:
    """The script compiles the load generator (``benchmarks/build.py``)."""
    if shutil.which("gcc") is None and shutil.which("cc") is None:
        pytest.skip("no C compiler on PATH (the load generator needs one)")


@pytest.mark.redis
def test_crossnode_benchmark_smoke_run(tmp_path: Path, compiler: None) -> None:
    out = tmp_path / "crossnode.json"
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--subscribers",
            "3",
            "--warmup",
            "0.1",
            "--duration",
            "0.5",
            "--window",
            "2",
            "--max-rate",
            "300",  # below wshub's 1,000 messages/s per connection
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cross-node fan-out: 1 publisher on node A, 3 subscribers" in done.stdout
    document = json.loads(out.read_text())
    results = document["results"]
    assert [r["system"] for r in results] == ["wshub-redis", "wshub-single", "socketio-redis"]
    for r in results:
        assert r["problems"] == [], r
        assert r["rate"] > 0
        details = r["details"]
        assert details["subscribers"] == 6
        assert details["loadgen"]["opened"] == 7
        assert details["loadgen"]["protocol_errors"] == 0
        assert details["loadgen"]["publish_errors"] == 0
        assert details["messages_done"] > 0
        nodes = {"node_a", "node_b", "redis"} if r["system"] != "wshub-single" else {"node_a"}
        assert set(details["cpu"]) == {*nodes, "loadgen"}
    assert document["summary"]["socketio-redis"]["ratio"] == 1.0
