"""Record and replay: what a server's cores were given comes back byte for byte,
and no token reaches the recording.

The redactor is checked as a property against streams built twice, once with
the tokens and once with them already blanked; the recorder and ``replay``
over real servers (the hub on both backends, TLS-free echo with deflate, a
handshake that times out) and through the CLI.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wshub.adapters import EchoHandler, HubServer, WebSocketServer, connect
from wshub.adapters.recording import Recorder
from wshub.adapters.redaction import SCANNED_MESSAGE_SIZE, ClientStreamRedactor
from wshub.adapters.replay import (
    RecordingError,
    ReplayDiverged,
    corpus_input,
    read_recording,
    replay,
)
from wshub.core import Limits, TextMessage
from wshub.core.auth import AccessPolicy, StaticTokens
from wshub.core.frames import encode_frame

TOKEN = "s3cret-T0ken_value"
WSHUB = (sys.executable, "-m", "wshub")


def recorded_text(path: Path) -> str:
    """Everything in the recording, with every base64 field decoded too."""
    parts = [path.read_text()]
    for line in path.read_text().splitlines():
        for value in json.loads(line).values():
            if isinstance(value, str):
                with contextlib.suppress(ValueError):
                    parts.append(base64.b64decode(value, validate=True).decode("latin-1"))
    return "\n".join(parts)


def replay_all(path: Path) -> dict[int, int]:
    """Replay every connection in the file; the number of steps of each."""
    return {n: sum(1 for _ in replay(entries)) for n, entries in read_recording(path).items()}


def only_recording(directory: Path) -> Path:
    files = list(directory.glob("wshub-*.jsonl"))
    assert len(files) == 1, files
    return files[0]


# -- the redactor, as a property ----------------------------------------------

# What a token may hold in all three places (RFC 9110 tchar, as percent-encoded
# in a query): no separators such as "&", "#", "," or quotes.
token_text = st.text(
    alphabet=st.sampled_from(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!$%'*+-.^_`|~"
    ),
    min_size=1,
    max_size=40,
)
filler = st.text(alphabet="abc xyz{}:,", max_size=30)


@st.composite
def client_streams(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A client's bytes with secrets, and the same bytes with them blanked."""
    secret, blank = bytearray(), bytearray()

    def both(with_secret: bytes, without: bytes | None = None) -> None:
        secret.extend(with_secret)
        blank.extend(with_secret if without is None else without)

    token = draw(token_text).encode()
    x = b"x" * len(token)
    both(b"GET /ws?a=1&token=", b"GET /ws?a=1&token=")
    both(token, x)
    both(b" HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer ")
    both(token, x)
    both(b"\r\nSec-WebSocket-Protocol: wshub.v1, wshub.bearer.")
    both(token, x)
    both(b"\r\n\r\n")
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["auth", "text", "binary", "ping", "compressed"]))
        mask = draw(st.binary(min_size=4, max_size=4))
        if kind == "auth":
            value = draw(token_text).encode()
            before, after = draw(filler).encode(), draw(filler).encode()
            plain = b'{"message_type":"auth","payload":{"token": "' + value + b'"}} ' + before
            blanked = (
                b'{"message_type":"auth","payload":{"token": "' + b"x" * len(value) + b'"}} '
            ) + before
            plain += after
            blanked += after
            # Split into fragments, with a ping between two of them at times.
            cuts = sorted(draw(st.lists(st.integers(0, len(plain)), max_size=3)))
            pieces = list(zip([0, *cuts], [*cuts, len(plain)], strict=True))
            for i, (a, b) in enumerate(pieces):
                opcode = 1 if i == 0 else 0
                fin = i == len(pieces) - 1
                both(
                    encode_frame(opcode, plain[a:b], fin=fin, mask=mask),
                    encode_frame(opcode, blanked[a:b], fin=fin, mask=mask),
                )
                if not fin and draw(st.booleans()):
                    both(encode_frame(9, b"p", mask=mask))
        elif kind == "text":
            both(encode_frame(1, draw(filler).encode(), mask=mask))
        elif kind == "binary":
            # Binary messages are not scanned: a token there is application data.
            both(encode_frame(2, b'{"token":"' + token + b'"}', mask=mask))
        elif kind == "compressed":
            both(encode_frame(1, b'{"token":"' + token + b'"}', rsv1=True, mask=mask))
        else:
            both(encode_frame(9, draw(st.binary(max_size=10)), mask=mask))
    return bytes(secret), bytes(blank)


@settings(max_examples=300, deadline=None)
@given(client_streams(), st.lists(st.integers(0, 10_000), max_size=12))
def test_redaction_blanks_every_token_and_keeps_every_size(
    streams: tuple[bytes, bytes], cuts: list[int]
) -> None:
    secret, blank = streams
    redactor = ClientStreamRedactor()
    bounds = sorted({c % (len(secret) + 1) for c in cuts} | {0, len(secret)})
    released = bytearray()
    fed = 0
    for a, b in itertools.pairwise(bounds):
        fed += b - a
        if redactor.feed(secret[a:b]):
            released += redactor.release()
            assert len(released) == fed  # a release is everything fed so far
    released += redactor.flush()
    assert bytes(released) == blank


def test_a_message_cut_short_is_redacted_as_far_as_it_came() -> None:
    redactor = ClientStreamRedactor()
    head = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
    frame = encode_frame(1, b'{"token":"' + TOKEN.encode() + b'", "x": 1}', mask=b"abcd")
    assert redactor.feed(head) is True
    assert redactor.release() == head
    assert redactor.feed(frame[:-3]) is False  # held: the message may hold a token
    out = redactor.flush()
    assert len(out) == len(frame) - 3
    assert TOKEN.encode() not in bytes(b ^ b"abcd"[i % 4] for i, b in enumerate(out[6:]))


def test_a_head_that_never_ends_is_blanked_when_released() -> None:
    redactor = ClientStreamRedactor()
    assert redactor.feed(b"GET /?token=" + TOKEN.encode() + b" HTTP/1.1\r\nHost") is False
    assert TOKEN.encode() not in redactor.flush()
    huge = ClientStreamRedactor()
    head = b"GET /?token=" + TOKEN.encode() + b" HTTP/1.1\r\nX: " + b"a" * (70 * 1024)
    assert huge.feed(head) is True  # past the hold limit: released, blanked
    assert TOKEN.encode() not in huge.release()


def test_messages_over_the_scanned_size_are_not_held() -> None:
    redactor = ClientStreamRedactor()
    redactor.feed(b"GET / HTTP/1.1\r\n\r\n")
    redactor.release()
    big = b'{"token":"' + TOKEN.encode() + b'","pad":"' + b"p" * SCANNED_MESSAGE_SIZE + b'"}'
    frame = encode_frame(1, big, mask=b"\x00\x00\x00\x00")
    assert redactor.feed(frame[:100]) is True  # its header says: too large to hold back
    assert redactor.release() == frame[:100]  # documented: written as it is


# -- recorder and replay over real servers --------------------------------------


def hub_server(directory: Path, **kwargs: Any) -> HubServer:
    return HubServer(
        AccessPolicy(tokens=StaticTokens([TOKEN]), allow_query_token=True),
        record=directory,
        **kwargs,
    )


@pytest.mark.anyio
async def test_hub_connections_replay_byte_for_byte_without_their_tokens(
    tmp_path: Path,
) -> None:
    server = hub_server(tmp_path)
    server.configure_topic("news", publish="all", subscribe="all")
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)
        url = server.url
        async with connect(url, token=TOKEN, subprotocols=["wshub.v1"]) as alice:
            json.loads(await alice.recv())  # welcome
            await alice.send('{"message_type":"subscribe","topic":"news","id":1}')
            json.loads(await alice.recv())
            async with (
                connect(url, subprotocols=["wshub.v1", f"wshub.bearer.{TOKEN}"]) as bob,
                connect(f"{url}/?token={TOKEN}", subprotocols=["wshub.v1"]) as carol,
            ):
                await bob.recv()
                await carol.recv()
                await bob.send('{"message_type":"publish","topic":"news","id":2,"payload":[1]}')
                await bob.recv()  # its reply
                published = json.loads(await alice.recv())
                assert published["payload"] == [1]
                await carol.ping()
            await alice.send("not json")
            await alice.recv()  # an error envelope
        server.shutdown()
    path = only_recording(tmp_path)
    assert TOKEN not in recorded_text(path)
    steps = replay_all(path)
    assert len(steps) == 3
    assert all(n > 5 for n in steps.values()), steps


@pytest.mark.anyio
async def test_first_message_auth_token_is_redacted(tmp_path: Path) -> None:
    server = hub_server(tmp_path, auth_message=True)
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)
        async with connect(server.url, subprotocols=["wshub.v1"]) as client:
            auth = {"message_type": "auth", "id": 1, "payload": {"token": TOKEN}}
            await client.send(json.dumps(auth))
            reply = json.loads(await client.recv())
            assert reply["ok"] is True, reply
        server.shutdown()
    path = only_recording(tmp_path)
    assert TOKEN not in recorded_text(path)
    events = [e for step in replay(read_recording(path)[1]) for e in step.events]
    texts = [e.data for e in events if isinstance(e, TextMessage)]
    assert texts
    assert '"token": "' + "x" * len(TOKEN) + '"' in texts[0]


@pytest.mark.anyio
async def test_timers_clock_and_compression_replay(tmp_path: Path) -> None:
    # A handshake that times out (a timer firing), and a compressed echo.
    async with anyio.create_task_group() as tg:
        server = WebSocketServer(
            EchoHandler(AccessPolicy(tokens=StaticTokens([TOKEN]))),
            limits=Limits(handshake_timeout=0.3),
            compression=True,
            record=tmp_path,
        )
        await tg.start(server.serve)
        stream = await anyio.connect_tcp("127.0.0.1", server.port)
        async with stream:
            await stream.send(b"GET /?token=" + TOKEN.encode() + b" HTTP/1.1\r\nHost: x")
            answer = b""
            with anyio.fail_after(5):
                while b"\r\n\r\n" not in answer:
                    answer += await stream.receive()
            assert answer.startswith(b"HTTP/1.1 408")
        async with connect(server.url, token=TOKEN, compression=True) as client:
            for size in (1, 5000, 70_000):
                await client.send("ab" * size)
                assert await client.recv() == "ab" * size
        server.shutdown()
    path = only_recording(tmp_path)
    assert TOKEN not in recorded_text(path)
    entries = read_recording(path)
    assert any(e["op"] == "timer" for e in entries[1])
    assert replay_all(path)[2] > 6


def tamper(path: Path, op: str, change: Any) -> Path:
    """A copy of the recording with the first ``op`` entry changed (or dropped: None)."""
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        entry = json.loads(line)
        if entry["op"] == op:
            if change is None:
                del lines[i]
            else:
                change(entry)
                lines[i] = json.dumps(entry)
            break
    else:
        raise AssertionError(f"no {op} entry")
    out = path.with_name("tampered.jsonl")
    out.write_text("\n".join(lines) + "\n")
    return out


def flip_last_byte(entry: dict[str, Any]) -> None:
    data = bytearray(base64.b64decode(entry["b"]))
    data[-1] ^= 1
    entry["b"] = base64.b64encode(bytes(data)).decode()


@pytest.mark.anyio
async def test_a_recording_that_does_not_match_the_core_diverges(tmp_path: Path) -> None:
    server = hub_server(tmp_path / "rec")
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)
        async with connect(server.url, token=TOKEN, subprotocols=["wshub.v1"]) as client:
            await client.recv()
            await client.send('{"message_type":"publish","topic":"t","id":1,"payload":1}')
            await client.recv()
        server.shutdown()
    path = only_recording(tmp_path / "rec")
    assert replay_all(path)
    with pytest.raises(ReplayDiverged, match="output differs at byte"):
        replay_all(tamper(path, "out", flip_last_byte))
    with pytest.raises(ReplayDiverged, match="clock"):
        replay_all(tamper(path, "clock", None))
    with pytest.raises(ReplayDiverged, match="recorded result"):
        replay_all(tamper(path, "prepared", lambda e: e.update(r=False)))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"c": 1, "op": "open", "version": 99}\n')
    with pytest.raises(RecordingError, match="format 99"):
        read_recording(bad)


def test_a_failing_disk_stops_recording_not_the_connection(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path)
    conn = recorder.server_connection(clock=lambda: 0.0)
    assert recorder._file is not None
    recorder._file.close()  # writes now raise ValueError, as a full disk raises OSError
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    conn.respond(200, body=b"ok")
    assert conn.data_to_send().startswith(b"HTTP/1.1 200")
    recorder.close()


# -- the command line -------------------------------------------------------------


def wshub(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*WSHUB, *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        **kwargs,
    )


def test_cli_records_replays_and_exports_a_fuzz_input(tmp_path: Path) -> None:
    record = tmp_path / "rec"
    server = subprocess.Popen(
        [*WSHUB, "serve", "--port", "0", f"--token={TOKEN}", "--record", str(record)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().split()[-1]
        assert url.startswith("ws://127.0.0.1:"), url
        line = server.stdout.readline()
        assert line.startswith(f"recording connections to {record}"), line
        published = wshub("publish", url, f"--token={TOKEN}", "news", '{"n": 1}')
        assert published.returncode == 0, published.stderr
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=20)
    path = only_recording(record)
    assert TOKEN not in recorded_text(path)
    corpus = tmp_path / "corpus"
    replayed = wshub("replay", str(path), "--corpus", str(corpus))
    assert replayed.returncode == 0, replayed.stderr
    assert "connection 1: " in replayed.stdout
    assert replayed.stdout.splitlines()[-1].endswith("steps replayed, output identical")
    assert "event TextMessage" in replayed.stdout
    (exported,) = corpus.iterdir()
    data = exported.read_bytes()
    assert data == corpus_input(read_recording(path)[1])
    assert data.startswith(b"\x00\x00GET / HTTP/1.1\r\n")
    # The exported input runs through the fuzz harness's checks.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))
    try:
        import fuzz_server_bytes

        assert fuzz_server_bytes.run_corpus([exported]) == 1
    finally:
        sys.path.pop(0)

    tampered = tamper(path, "out", flip_last_byte)
    diverged = wshub("replay", str(tampered), "--quiet")
    assert diverged.returncode == 1
    assert diverged.stderr.startswith("wshub: connection 1 diverged after ")
    missing = wshub("replay", str(path), "--conn", "7")
    assert (missing.returncode, missing.stderr.strip()) == (
        1,
        f"wshub: no connection 7 in {path}",
    )
    unreadable = wshub("replay", os.fspath(tmp_path / "nope.jsonl"))
    assert unreadable.returncode == 1
    assert unreadable.stderr.startswith("wshub: cannot read ")
