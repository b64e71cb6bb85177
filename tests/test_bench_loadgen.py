"""The benchmark's C load generator: it builds, and its frame parser survives any split.

The generator reads server frames with a streaming parser (headers and
payloads cut anywhere by TCP). Its ``parse-test`` mode feeds stdin to that
parser in the chunk sizes given and prints each frame: opcode, FIN, length
and an FNV-1a hash of the payload, compared here with frames written by
wshub's own encoder. The benchmark itself is not part of the test run.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wshub.core.frames import encode_frame

SOURCE = Path(__file__).resolve().parent.parent / "benchmarks" / "loadgen" / "loadgen.c"
COMPILER = shutil.which("gcc") or shutil.which("cc")


@pytest.fixture(scope="module")
def loadgen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if COMPILER is None:
        pytest.skip("no C compiler on PATH")
    binary = tmp_path_factory.mktemp("loadgen") / "loadgen"
    result = subprocess.run(
        [COMPILER, "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(binary), str(SOURCE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return binary


def fnv1a(data: bytes) -> int:
    h = 2166136261
    for byte in data:
        h = ((h ^ byte) * 16777619) & 0xFFFFFFFF
    return h


def parse(binary: Path, stream: bytes, chunks: list[int]) -> list[str]:
    done = subprocess.run(
        [str(binary), "parse-test", *map(str, chunks)],
        input=stream,
        capture_output=True,
        check=True,
    )
    return done.stdout.decode().splitlines()


# Lengths around the 7/16/64-bit boundaries of the length field, and small ones.
lengths = st.one_of(
    st.integers(0, 300),
    st.sampled_from([125, 126, 127, 65535, 65536, 70000]),
)
frames = st.lists(
    st.tuples(st.sampled_from([0x0, 0x1, 0x2, 0x8, 0x9, 0xA]), st.booleans(), lengths),
    min_size=1,
    max_size=6,
)


@settings(max_examples=60, deadline=None)
@given(
    frames=frames,
    chunks=st.lists(st.integers(1, 40), min_size=1, max_size=8),
    seed=st.integers(0, 255),
)
def test_parser_reads_any_split_of_server_frames(
    loadgen: Path, frames: list[tuple[int, bool, int]], chunks: list[int], seed: int
) -> None:
    stream = b""
    expected = []
    for i, (opcode, fin, length) in enumerate(frames):
        payload = bytes((seed + i + k) % 256 for k in range(length))
        stream += encode_frame(opcode, payload, fin=fin)
        expected.append(f"{opcode} {int(fin)} {length} {fnv1a(payload):08x}")
    assert parse(loadgen, stream, chunks) == [*expected, "end 0 0"]


def test_parser_reports_a_frame_cut_short(loadgen: Path) -> None:
    whole = encode_frame(0x1, b"x" * 300)
    lines = parse(loadgen, encode_frame(0x2, b"ab") + whole[:-10], [7])
    assert lines == [f"2 1 2 {fnv1a(b'ab'):08x}", "end 1 10"]


def test_parser_reports_a_header_cut_short(loadgen: Path) -> None:
    header_only = encode_frame(0x1, b"y" * 70000)[:5]  # 64-bit length field half read
    assert parse(loadgen, header_only, [1]) == ["end 1 0"]


def test_the_instruction_counter_wraps_only_the_server_and_reads_callgrind_totals() -> None:
    from benchmarks.instructions import _TOTALS, UnderCallgrind

    pinning = UnderCallgrind(out="/tmp/x")
    server = pinning.wrap(["python", "-m", "wshub"], pinning.server)
    assert server[server.index("valgrind") :][:3] == [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/tmp/x/callgrind.%p",
    ]
    assert "valgrind" not in pinning.wrap(["loadgen"], pinning.loadgen)
    dump = "events: Ir\nfn=(1) main\n16 3\n\ntotals: 123456789\n"
    match = _TOTALS.search(dump)
    assert match is not None
    assert match.group(1) == "123456789"
