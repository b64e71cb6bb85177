"""``wshub token keygen|mint``, ``serve --signing-key-file``, ``--write-token-file``
and the Host flags, run as subprocesses (the server is stopped by its PID)."""

from __future__ import annotations

import base64
import http.client
import os
import stat
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import pytest
from test_cli import recv, serving, wshub
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from wshub.cli import allowed_hosts, build_parser
from wshub.core.auth import TOKEN_SUBPROTOCOL_PREFIX
from wshub.core.tokens import SignedTokens, parse_key_file


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def cli(*args: str, umask: int = -1) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        wshub(*args), capture_output=True, text=True, timeout=60, umask=umask, check=False
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def keygen(path: Path, *extra: str) -> str:
    result = cli("token", "keygen", "--out", str(path), *extra, umask=0)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("key id: ")
    return result.stdout.split()[2]


def mint(keys: Path, principal: str, *extra: str) -> str:
    result = cli("token", "mint", "--key-file", str(keys), "--principal", principal, *extra)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


# -- keygen --------------------------------------------------------------------------


def test_keygen_writes_an_owner_only_key_file_even_with_umask_0(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    key_id = keygen(path)
    assert mode(path) == 0o600
    [(found_id, key)] = parse_key_file(path.read_text())
    assert found_id == key_id
    assert len(key) == 32


def test_keygen_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    keygen(path)
    before = path.read_text()
    result = cli("token", "keygen", "--out", str(path))
    assert result.returncode == 1
    assert "exists (use --rotate" in result.stderr
    assert path.read_text() == before


def test_keygen_does_not_follow_a_planted_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    (tmp_path / "keys").symlink_to(target)
    result = cli("token", "keygen", "--out", str(tmp_path / "keys"))
    assert result.returncode == 1
    assert not target.exists()


def test_keygen_rotate_puts_the_new_key_first_and_keeps_the_old(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    first = keygen(path, "--key-id", "old")
    os.chmod(path, 0o644)  # whatever the old mode, the rotated file is owner-only
    second = keygen(path, "--rotate", "--key-id", "new")
    assert (first, second) == ("old", "new")
    assert [k for k, _ in parse_key_file(path.read_text())] == ["new", "old"]
    assert mode(path) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys"]  # no temporary left
    again = cli("token", "keygen", "--out", str(path), "--rotate", "--key-id", "old")
    assert again.returncode == 1
    assert "already present" in again.stderr


def test_keygen_rotate_needs_an_existing_valid_file(tmp_path: Path) -> None:
    result = cli("token", "keygen", "--out", str(tmp_path / "missing"), "--rotate")
    assert result.returncode == 1
    assert result.stderr.startswith("wshub: ")
    assert "Traceback" not in result.stderr


# -- mint ----------------------------------------------------------------------------


def test_mint_prints_a_token_the_key_file_verifies(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keygen(keys)
    before = time.time()
    token = mint(keys, "alice", "--scope", "read", "--scope", "write", "--ttl", "120")
    after = time.time()
    principal = SignedTokens.from_key_file(keys.read_text()).verify(token, after)
    assert principal is not None
    assert (principal.id, principal.scopes) == ("alice", {"read", "write"})
    assert principal.expires_at is not None
    assert before + 119 <= principal.expires_at <= after + 120


def test_mint_default_ttl_is_an_hour(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keygen(keys)
    before = time.time()
    principal = SignedTokens.from_key_file(keys.read_text()).verify(mint(keys, "a"), before)
    assert principal is not None
    assert principal.expires_at is not None
    assert before + 3599 <= principal.expires_at <= time.time() + 3600


def test_mint_with_an_older_key(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keygen(keys, "--key-id", "old")
    keygen(keys, "--rotate", "--key-id", "new")
    assert mint(keys, "a").split(".")[1] == "new"
    assert mint(keys, "a", "--key-id", "old").split(".")[1] == "old"


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--key-id", "nope"], 1, "no key with id 'nope'"),
        (["--ttl", "0"], 2, "positive"),
        (["--ttl", "-5"], 2, "positive"),
        (["--key-id", "bad.id"], 2, "key id"),
    ],
)
def test_mint_errors(tmp_path: Path, extra: list[str], code: int, message: str) -> None:
    keys = tmp_path / "keys"
    keygen(keys)
    result = cli("token", "mint", "--key-file", str(keys), "--principal", "a", *extra)
    assert result.returncode == code
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_mint_with_a_missing_or_malformed_key_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_text("k1:padded==\n")
    for path in (tmp_path / "missing", bad):
        result = cli("token", "mint", "--key-file", str(path), "--principal", "a")
        assert result.returncode == 1
        assert result.stderr.startswith(f"wshub: {path}: ")


# -- serve with signed tokens ----------------------------------------------------------


@pytest.mark.anyio
async def test_serve_accepts_minted_tokens_by_header_and_subprotocol(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keygen(keys)
    token = mint(keys, "alice", "--ttl", "600")
    async with serving("--signing-key-file", str(keys)) as served:
        assert served.token is None  # signed tokens only: no static token generated
        headers = {"Authorization": f"Bearer {token}"}
        async with ws_connect(served.url, additional_headers=headers) as ws:
            assert (await recv(ws))["payload"]["principal"] == "alice"
        offered = ["wshub.v1", TOKEN_SUBPROTOCOL_PREFIX + token]
        async with ws_connect(served.url, subprotocols=offered) as ws:  # type: ignore[arg-type]
            assert ws.subprotocol == "wshub.v1"  # the token is never echoed back
            assert (await recv(ws))["payload"]["principal"] == "alice"


@pytest.mark.anyio
async def test_serve_refuses_expired_and_foreign_tokens(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keygen(keys)
    ring = SignedTokens.from_key_file(keys.read_text())
    expired = ring.mint("alice", expires_at=time.time() - 5)
    other = tmp_path / "other"
    keygen(other)
    foreign = mint(other, "alice")
    async with serving("--signing-key-file", str(keys)) as served:
        for token, reason in [
            (expired, b"token expired"),
            (foreign, b"invalid bearer token"),
            ("not-a-token", b"invalid bearer token"),
        ]:
            with pytest.raises(InvalidStatus) as refused:
                async with ws_connect(
                    served.url, additional_headers={"Authorization": f"Bearer {token}"}
                ):
                    pass
            assert refused.value.response.status_code == 401
            assert refused.value.response.body == reason


@pytest.mark.anyio
async def test_serve_accepts_static_and_signed_tokens_together(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keygen(keys)
    token = mint(keys, "bob")
    async with serving("--signing-key-file", str(keys), "--token", "fixed") as served:
        for bearer, principal in [(token, "bob"), ("fixed", "token-0")]:
            headers = {"Authorization": f"Bearer {bearer}"}
            async with ws_connect(served.url, additional_headers=headers) as ws:
                assert (await recv(ws))["payload"]["principal"] == principal


def test_serve_with_a_bad_key_file_exits_with_a_message(tmp_path: Path) -> None:
    bad = tmp_path / "keys"
    bad.write_text("nonsense\n")
    result = cli("serve", "--port", "0", "--signing-key-file", str(bad))
    assert result.returncode == 1
    assert result.stderr.strip() == f"wshub: {bad}: line 1: expected '<key id>:<base64url key>'"


# -- generated token and --write-token-file ------------------------------------------------


@pytest.mark.anyio
async def test_generated_token_is_128_bits_base64url_and_written_owner_only(
    tmp_path: Path,
) -> None:
    path = tmp_path / "token"
    async with serving("--write-token-file", str(path), umask=0) as served:
        assert served.token is not None
        assert len(served.token) == 22
        assert len(base64.urlsafe_b64decode(served.token + "==")) == 16
        assert set(served.token) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        )
        assert mode(path) == 0o600
        written = path.read_text()
        assert written == served.token  # no newline: usable as read
        headers = {"Authorization": f"Bearer {written}"}
        async with ws_connect(served.url, additional_headers=headers) as ws:
            assert (await recv(ws))["message_type"] == "welcome"


@pytest.mark.anyio
async def test_write_token_file_replaces_an_existing_file_and_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("an old, longer token value\n")
    os.chmod(path, 0o644)
    async with serving("--token", "given", "--write-token-file", str(path)) as served:
        assert served.token is None
        assert mode(path) == 0o600
        assert path.read_text() == "given"


@pytest.mark.anyio
async def test_write_token_file_with_signed_tokens_generates_one(tmp_path: Path) -> None:
    keys, path = tmp_path / "keys", tmp_path / "token"
    keygen(keys)
    async with serving("--signing-key-file", str(keys), "--write-token-file", str(path)) as served:
        assert served.token is not None
        assert path.read_text() == served.token
        for bearer in (served.token, mint(keys, "carol")):
            headers = {"Authorization": f"Bearer {bearer}"}
            async with ws_connect(served.url, additional_headers=headers) as ws:
                assert (await recv(ws))["message_type"] == "welcome"


@pytest.mark.parametrize("kind", ["symlink", "directory"])
def test_write_token_file_refuses_symlinks_and_non_files(tmp_path: Path, kind: str) -> None:
    path, target = tmp_path / "token", tmp_path / "target"
    if kind == "symlink":
        target.write_text("keep me")
        path.symlink_to(target)
    else:
        path.mkdir()
    result = cli("serve", "--port", "0", "--write-token-file", str(path))
    assert result.returncode == 1
    assert result.stderr.startswith("wshub: ")
    assert "Traceback" not in result.stderr
    if kind == "symlink":
        assert target.read_text() == "keep me"


def test_no_auth_refuses_token_options(tmp_path: Path) -> None:
    result = cli("serve", "--no-auth", "--write-token-file", str(tmp_path / "t"))
    assert result.returncode == 1
    assert "--no-auth cannot be combined" in result.stderr
    assert not (tmp_path / "t").exists()


# -- Host flags ---------------------------------------------------------------------------


def test_host_flags_map_to_allowed_hosts() -> None:
    parse = build_parser().parse_args
    assert allowed_hosts(parse(["serve"])) == "auto"
    assert allowed_hosts(parse(["serve", "--any-host"])) is None
    assert allowed_hosts(
        parse(["serve", "--allow-host", "app.test:8000", "--allow-host", "localhost:8000"])
    ) == ["app.test:8000", "localhost:8000"]


def test_host_flags_are_exclusive() -> None:
    result = cli("serve", "--any-host", "--allow-host", "x")
    assert result.returncode == 2
    assert "not allowed with argument" in result.stderr


def status_for_host(url: str, host: str) -> tuple[int, bytes]:
    parts = urlsplit(url)
    assert parts.hostname is not None
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.putrequest("GET", "/", skip_host=True)
        conn.putheader("Host", host)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.anyio
@pytest.mark.parametrize("mode_args", [[], ["--echo", "--no-auth"]])
async def test_serve_on_loopback_refuses_foreign_hosts_by_default(mode_args: list[str]) -> None:
    async with serving(*mode_args) as served:
        port = urlsplit(served.url).port
        refused = await anyio.to_thread.run_sync(status_for_host, served.url, "evil.example")
        assert refused == (403, b"host not allowed")
        status, _ = await anyio.to_thread.run_sync(status_for_host, served.url, f"localhost:{port}")
        assert status != 403


@pytest.mark.anyio
async def test_serve_allow_host_and_any_host() -> None:
    async with serving("--allow-host", "app.test") as served:
        assert (await anyio.to_thread.run_sync(status_for_host, served.url, "app.test"))[0] != 403
        port = urlsplit(served.url).port
        local = await anyio.to_thread.run_sync(status_for_host, served.url, f"localhost:{port}")
        assert local[0] == 403  # the list replaces the default
    async with serving("--any-host") as served:
        assert (await anyio.to_thread.run_sync(status_for_host, served.url, "evil.example"))[
            0
        ] != 403
