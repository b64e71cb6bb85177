"""The load generator's cross-node options, which ``benchmarks/crossnode.py`` relies on.

``--sub-port`` really spreads the subscribers (against two nodes that share
nothing, the half on the other node never gets a publication), and
``--socketio`` drives the benchmark's python-socketio server, which refuses a
client whose token it does not know.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from redis_support import RedisServer

from benchmarks.build import build_loadgen
from benchmarks.procs import SOCKETIO_SERVER, Pinning, Server, loadgen_command, run_loadgen

ROOT = Path(__file__).resolve().parent.parent
NO_PIN = Pinning(server=None, loadgen=None)


@pytest.fixture(scope="module")
def loadgen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None and shutil.which("cc") is None:
        pytest.skip("no C compiler on PATH (the load generator needs one)")
    return build_loadgen(output=tmp_path_factory.mktemp("loadgen") / "loadgen")


def fanout(loadgen: Path, publisher: Server, sub_ports: list[int], **options: Any) -> Any:
    command = loadgen_command(
        loadgen,
        "fanout",
        publisher,
        {
            "conns": 6,
            "window": 2,
            "warmup": 0.1,
            "duration": 0.5,
            "timeout": 5,
            "ramp_timeout": 10,
            "sub_port": sub_ports,
            **options,
        },
        NO_PIN,
    )
    return run_loadgen(command, timeout=60)


def test_sub_port_spreads_subscribers_over_the_nodes(loadgen: Path) -> None:
    tokens = ["spread-token-0123456789"]
    with (
        Server("wshub", echo=False, tokens=tokens, pinning=NO_PIN, wshub_src=ROOT) as a,
        Server("wshub", echo=False, tokens=tokens, pinning=NO_PIN, wshub_src=ROOT) as b,
    ):
        both = fanout(loadgen, a, [a.port, b.port], token=tokens, hub=True, subprotocol=True)
        alone = fanout(loadgen, a, [a.port], token=tokens, hub=True, subprotocol=True)
    assert both["subscribers"] == alone["subscribers"] == 6
    # two unrelated nodes: the 3 subscribers on b never get a publication, so none
    # of the 2 publications of the window reaches everyone
    assert both["messages_done"] == 0
    assert both["deliveries_total"] == 2 * 3
    assert alone["messages_done"] > 0
    assert alone["deliveries_total"] >= 6 * alone["messages_done"]


@pytest.mark.redis
def test_socketio_server_refuses_an_unknown_token(loadgen: Path) -> None:
    with (
        RedisServer() as redis,
        Server(
            SOCKETIO_SERVER,
            echo=False,
            tokens=["the-right-token"],
            pinning=NO_PIN,
            wshub_src=ROOT,
            extra_args=("--redis", redis.url),
        ) as node,
    ):
        right = fanout(loadgen, node, [node.port], token=["the-right-token"], socketio=True)
        wrong = fanout(loadgen, node, [node.port], token=["a-wrong-token"], socketio=True)
    assert right["subscribers"] == 6
    assert right["publish_errors"] == 0
    assert right["messages_done"] > 0
    assert wrong["subscribers"] == 0
    assert wrong["publish_errors"] >= 1  # namespace connects refused ("44"): it stops at once
    assert wrong["deliveries_total"] == 0
