"""Every expected failure of the ``wshub`` command is one line on stderr and a
documented exit status (``wshub --help``), checked on the real process.

The misbehaving servers here are written by hand over raw TCP, so each test
decides exactly how the connection ends.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
import trustme
from anyio.abc import SocketStream
from test_cli import run, serving, wshub

pytestmark = pytest.mark.anyio

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def lines(data: bytes) -> list[str]:
    return data.decode().splitlines()


# -- servers that misbehave on purpose ------------------------------------------------

Behaviour = Callable[[SocketStream], Awaitable[None]]


async def _read_head(stream: SocketStream) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        head += await stream.receive()
    return head


async def upgrade(stream: SocketStream) -> None:
    """Answer the client's upgrade with 101 (subprotocol wshub.v1), nothing more."""
    head = await _read_head(stream)
    key = next(
        line.split(b":", 1)[1].strip()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key:")
    )
    accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
    await stream.send(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\nSec-WebSocket-Protocol: wshub.v1\r\n\r\n"
    )


async def drain(stream: SocketStream) -> None:
    """Read (and ignore) until the client goes away."""
    try:
        while await stream.receive():
            pass
    except (anyio.EndOfStream, anyio.BrokenResourceError):
        pass


@asynccontextmanager
async def raw_server(behaviour: Behaviour) -> AsyncIterator[str]:
    """A TCP server running ``behaviour`` on each connection; yields its ws:// URL."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)

    async def handle(stream: SocketStream) -> None:
        async with stream:
            await behaviour(stream)

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        try:
            yield f"ws://127.0.0.1:{port}"
        finally:
            tg.cancel_scope.cancel()


async def run_with_open_stdin(*args: str) -> tuple[int, bytes, bytes]:
    """Run ``wshub *args`` with a stdin that stays open (it never reaches EOF)."""
    with anyio.fail_after(30):
        async with await anyio.open_process(wshub(*args)) as process:
            assert process.stdout is not None
            assert process.stderr is not None
            out, err = b"", b""
            async for chunk in process.stdout:
                out += chunk
            async for chunk in process.stderr:
                err += chunk
            code = await process.wait()
    return code, out, err


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- serve ------------------------------------------------------------------------------


async def test_serve_on_a_busy_port_is_one_line_and_status_3() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = await run("serve", "--port", str(port), "--token", "t")
    assert result.returncode == 3
    assert lines(result.stderr) == [
        f"wshub: cannot listen on 127.0.0.1:{port}: address already in use"
    ]


async def test_serve_with_unreadable_tls_files_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "cert.pem"
    result = await run("serve", "--port", "0", "--tls-cert", str(missing))
    assert result.returncode == 1
    assert lines(result.stderr) == [
        f"wshub: cannot load the TLS certificate ({missing}): No such file or directory"
    ]
    result = await run("serve", "--port", "0", "--tls-key", str(missing))
    assert result.returncode == 2
    assert lines(result.stderr) == ["wshub: --tls-key needs --tls-cert"]


@pytest.mark.parametrize("content", ["", "# only a comment\n\n"])
async def test_serve_with_an_empty_token_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "tokens"
    path.write_text(content)
    result = await run("serve", "--port", "0", "--token-file", str(path))
    assert result.returncode == 1
    assert lines(result.stderr) == [f"wshub: {path}: no token in the file"]


# -- connect: how the connection ended ------------------------------------------------


async def _close_1008(stream: SocketStream) -> None:
    await upgrade(stream)
    await stream.send(b"\x88\x0b" + (1008).to_bytes(2, "big") + b"go away!!")
    await drain(stream)


async def _drop(stream: SocketStream) -> None:
    await upgrade(stream)  # then the connection is dropped without a close frame


async def _close_without_code(stream: SocketStream) -> None:
    await upgrade(stream)
    await stream.send(b"\x88\x00")
    await drain(stream)


@pytest.mark.parametrize(
    ("behaviour", "status", "stderr"),
    [
        (_close_1008, 1, ["wshub: closed with 1008: go away!!"]),
        (_drop, 1, ["wshub: closed with 1006: connection lost"]),
        (_close_without_code, 0, []),  # 1005: a close frame without a code is a normal end
    ],
    ids=["1008", "1006", "1005"],
)
async def test_connect_reports_how_the_connection_ended(
    behaviour: Behaviour, status: int, stderr: list[str]
) -> None:
    async with raw_server(behaviour) as url:
        code, out, err = await run_with_open_stdin("connect", url, "--token", "t")
    assert (code, lines(err), out) == (status, stderr, b"")


async def test_connect_gives_up_when_the_upgrade_is_never_answered() -> None:
    async with raw_server(_never_answer_the_upgrade) as url:
        result = await run("connect", url, "--token", "t", "--open-timeout", "0.5", stdin=b"")
    assert result.returncode == 4
    assert lines(result.stderr) == [f"wshub: timed out connecting to {url}"]


async def test_connect_to_a_port_nobody_listens_on() -> None:
    url = f"ws://127.0.0.1:{free_port()}"
    result = await run("connect", url, "--token", "t", stdin=b"")
    assert result.returncode == 3
    assert lines(result.stderr) == [f"wshub: cannot connect to {url}: connection refused"]


@pytest.mark.parametrize("command", ["connect", "publish"])
async def test_a_url_that_is_not_a_websocket_one_is_a_usage_error(command: str) -> None:
    extra = ["topic", "1"] if command == "publish" else []
    result = await run(command, "http://127.0.0.1:1/", *extra, stdin=b"")
    assert result.returncode == 2
    assert lines(result.stderr) == [
        "wshub: expected a ws:// or wss:// URL, got 'http://127.0.0.1:1/'"
    ]


# -- publish ------------------------------------------------------------------------------


async def _never_reply(stream: SocketStream) -> None:
    await upgrade(stream)
    await drain(stream)


async def _never_answer_the_upgrade(stream: SocketStream) -> None:
    await drain(stream)


@pytest.mark.parametrize("behaviour", [_never_reply, _never_answer_the_upgrade])
async def test_publish_to_a_server_that_never_replies_times_out(behaviour: Behaviour) -> None:
    async with raw_server(behaviour) as url:
        result = await run("publish", url, "room", "1", "--token", "t", "--timeout", "0.5")
    assert result.returncode == 4
    assert lines(result.stderr) == [f"wshub: no reply from {url} within 0.5 s"]
    assert result.stdout == b""


async def test_publish_refused_prints_the_reply_and_the_error_line() -> None:
    async with serving("--token", "t") as served:
        result = await run("publish", served.url, "x" * 300, "1", "--token", "t")
    assert result.returncode == 1
    reply = json.loads(result.stdout)
    assert reply["ok"] is False
    error = reply["error"]
    assert lines(result.stderr) == [f"wshub: publish refused: {error['code']}: {error['message']}"]


async def test_publish_with_a_payload_that_is_not_json() -> None:
    result = await run("publish", "ws://127.0.0.1:1", "room", "{nope", "--token", "t")
    assert result.returncode == 2
    assert lines(result.stderr) == [
        "wshub: payload is not JSON: Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1)"
    ]


# -- credentials ------------------------------------------------------------------------


async def test_token_file_for_connect_and_publish(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("# the hub's token\n\nsecret-token\n")
    async with serving("--token", "secret-token") as served:
        result = await run("publish", served.url, "room", '"hi"', "--token-file", str(path))
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["ok"] is True
        stdin = json.dumps({"message_type": "whoami", "id": 1}).encode() + b"\n"
        result = await run("connect", served.url, "--token-file", str(path), stdin=stdin)
        assert result.returncode == 0, result.stderr
        printed = [json.loads(line) for line in lines(result.stdout)]
        assert printed[1]["payload"]["principal"] == "token-0"


@pytest.mark.parametrize("command", ["connect", "publish"])
async def test_token_file_errors_name_the_file(tmp_path: Path, command: str) -> None:
    extra = ["topic", "1"] if command == "publish" else []
    missing, empty = tmp_path / "missing", tmp_path / "empty"
    empty.write_text("\n# nothing\n")
    for path, reason in [(missing, "No such file or directory"), (empty, "no token in the file")]:
        result = await run(command, "ws://127.0.0.1:1", *extra, "--token-file", str(path))
        assert result.returncode == 1
        assert lines(result.stderr) == [f"wshub: {path}: {reason}"]
    both = await run(command, "ws://127.0.0.1:1", *extra, "--token", "a", "--token-file", "b")
    assert both.returncode == 2
    assert "not allowed with argument" in both.stderr.decode()


@pytest.mark.parametrize("command", ["connect", "publish"])
async def test_a_401_hints_at_the_token_options(command: str) -> None:
    extra = ["room", "1"] if command == "publish" else []
    async with serving("--token", "right") as served:
        for credentials in (["--token", "wrong"], []):
            result = await run(command, served.url, *extra, *credentials, stdin=b"")
            assert result.returncode == 1
            reason = "invalid bearer token" if credentials else "missing bearer token"
            assert lines(result.stderr) == [
                f"wshub: server rejected the WebSocket handshake with HTTP 401: {reason} "
                "(pass the hub's token with --token or --token-file)"
            ]


# -- wss:// with a certificate the client does not trust -------------------------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A self-signed certificate (the CA's own) and a leaf the CA issued for 127.0.0.1."""
    folder = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    paths = {name: folder / f"{name}.pem" for name in ("ca", "ca_key", "leaf")}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    ca.private_key_pem.write_to_path(str(paths["ca_key"]))
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(paths["leaf"]))
    return paths


def hint(url: str, reason: str) -> str:
    return (
        f"wshub: TLS certificate verification failed for {url}: {reason}; trust the "
        "server's certificate with --cafile FILE (or skip verification with --insecure, "
        "for testing only)"
    )


async def test_self_signed_certificate_gives_a_hint(certificates: dict[str, Path]) -> None:
    cert, key = str(certificates["ca"]), str(certificates["ca_key"])
    async with serving("--token", "t", "--tls-cert", cert, "--tls-key", key) as served:
        assert served.url.startswith("wss://")
        result = await run("publish", served.url, "room", "1", "--token", "t")
        assert result.returncode == 3
        assert lines(result.stderr) == [hint(served.url, "self-signed certificate")]
        result = await run("connect", served.url, "--token", "t", stdin=b"")
        assert result.returncode == 3
        assert lines(result.stderr) == [hint(served.url, "self-signed certificate")]
        result = await run("publish", served.url, "room", "1", "--token", "t", "--insecure")
        assert result.returncode == 0, result.stderr


async def test_cafile_trusts_a_private_ca(certificates: dict[str, Path]) -> None:
    async with serving("--token", "t", "--tls-cert", str(certificates["leaf"])) as served:
        result = await run("publish", served.url, "room", "1", "--token", "t")
        assert result.returncode == 3
        assert lines(result.stderr) == [hint(served.url, "unable to get local issuer certificate")]
        ca = str(certificates["ca"])
        result = await run("publish", served.url, "room", "1", "--token", "t", "--cafile", ca)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["ok"] is True


async def test_cafile_that_cannot_be_read(tmp_path: Path) -> None:
    path = tmp_path / "nope.pem"
    result = await run("publish", "wss://127.0.0.1:1", "t", "1", "--cafile", str(path))
    assert result.returncode == 1
    assert lines(result.stderr) == [f"wshub: {path}: No such file or directory"]


# -- help ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [[], ["serve"], ["connect"], ["publish"], ["token"], ["token", "keygen"], ["token", "mint"]],
    ids=lambda c: " ".join(c) or "wshub",
)
def test_help_is_plain_text_and_lists_the_exit_statuses(command: list[str]) -> None:
    result = subprocess.run(
        wshub(*command, "--help"), capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0
    assert "``" not in result.stdout
    assert ":class:" not in result.stdout
    if not command:
        assert "exit status: 0 success" in result.stdout


def test_an_invalid_log_level_is_a_usage_error() -> None:
    result = subprocess.run(
        wshub("--log-level", "loud", "token", "mint"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "invalid choice: 'LOUD'" in result.stderr
    assert "Traceback" not in result.stderr
