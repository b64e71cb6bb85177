"""The private Redis of the backplane's tests, and the policy for machines without one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from redis_support import MISSING, RedisError, RedisServer, redis_command, skip_reason

ROOT = Path(__file__).resolve().parent.parent


def refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_skip_reason_policy() -> None:
    assert skip_reason("/usr/bin/redis-server", {}) is None
    assert skip_reason(None, {}) == MISSING
    assert skip_reason(None, {"CI": "false"}) == MISSING
    assert skip_reason(None, {"CI": "true"}) is None  # CI must run them, and fails without
    assert skip_reason(None, {"CI": "TRUE"}) is None


def test_private_server_answers_and_is_empty(redis_server: RedisServer) -> None:
    assert redis_server.port not in (0, 6379)
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert redis_server.command("PING") == b"PONG"
    assert redis_server.command("DBSIZE") == 0
    config = redis_server.command("CONFIG", "GET", "save")
    assert config == [b"save", b""]
    assert redis_server.command("CONFIG", "GET", "appendonly") == [b"appendonly", b"no"]
    assert redis_server.command("CONFIG", "GET", "dir") == [b"dir", str(redis_server.dir).encode()]


def test_restart_keeps_the_port_and_loses_the_data(redis_server: RedisServer) -> None:
    port, pid = redis_server.port, redis_server.pid
    assert redis_server.command("SET", "k", "v") == b"OK"
    assert redis_server.command("GET", "k") == b"v"
    redis_server.restart()
    assert (redis_server.port, redis_server.starts) == (port, 2)
    assert redis_server.pid != pid
    assert redis_server.command("GET", "k") is None
    redis_server.restart(hard=False)
    assert redis_server.command("DBSIZE") == 0


@pytest.mark.redis
def test_kill_refuses_connections_and_close_removes_everything() -> None:
    server = RedisServer()
    server.start()
    port, pid, folder = server.port, server.pid, server.dir
    server.kill()
    assert not server.alive()
    assert refuses(port)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # reaped: the PID is gone
    server.close()
    assert not folder.exists()
    server.close()  # idempotent


def test_freeze_holds_replies_until_thaw(redis_server: RedisServer) -> None:
    redis_server.freeze()
    with pytest.raises(socket.timeout):
        redis_command(redis_server.port, "PING", timeout=0.3)
    redis_server.thaw()
    assert redis_server.command("PING") == b"PONG"


def test_errors_are_raised(
    redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(RedisError, match="unknown command"):
        redis_server.command("NOSUCHCOMMAND")
    with pytest.raises(RedisError, match="already running"):
        redis_server.start()
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RedisError, match="not on PATH"):
        RedisServer()


def _pytest_without_redis(tmp_path: Path, *, ci: bool) -> subprocess.CompletedProcess[str]:
    """This file's fixture test in a child pytest whose PATH has no redis-server."""
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PATH"] = str(empty)
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "tests/test_redis_support.py::test_private_server_answers_and_is_empty",
            "tests/test_redis_support.py::test_skip_reason_policy",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_without_redis_server_the_run_passes_and_says_what_did_not_run(tmp_path: Path) -> None:
    done = _pytest_without_redis(tmp_path, ci=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed, 1 skipped" in done.stdout
    assert "SKIPPED [1] tests/test_redis_support.py:" in done.stdout
    assert "Redis tests not run: 1 (marker 'redis')" in done.stdout


def test_under_ci_a_missing_redis_server_fails(tmp_path: Path) -> None:
    done = _pytest_without_redis(tmp_path, ci=True)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 passed, 1 error" in done.stdout
    assert "redis-server is not on PATH" in done.stdout
    assert "Redis tests not run" not in done.stdout
