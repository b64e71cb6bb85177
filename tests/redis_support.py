"""A private ``redis-server`` per test: started on a free loopback port, stopped by PID.

Tests of the Redis backplane never touch a Redis they did not start (a
developer's own on 6379 is not ours to flush). ``RedisServer`` runs the
``redis-server`` binary found on PATH with no persistence (``--save ""
--appendonly no``) in a directory of its own, so a restart on the same port
is a Redis that lost its data, as after a crash. ``kill`` is ``kill -9``;
``freeze``/``thaw`` stop and continue it (a Redis that hangs, not one that
refuses).

Policy (see ``conftest.py``): tests that use the ``redis_server`` fixture
carry the ``redis`` marker. Without ``redis-server`` on PATH they are skipped
with that reason and the run ends with a line saying how many did not run,
except under ``CI=true``, where CI installs Redis and its absence fails them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = [
    "RedisError",
    "RedisServer",
    "redis_command",
    "redis_server_binary",
    "skip_reason",
]

#: The marker's reason when the binary is missing (also the terminal summary's).
MISSING = "redis-server is not on PATH (Debian: apt-get install redis-server)"


class RedisError(RuntimeError):
    """The private Redis could not be started, or answered an error."""


def redis_server_binary() -> str | None:
    """The ``redis-server`` on PATH, or None."""
    return shutil.which("redis-server")


def in_ci(environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return env.get("CI", "").lower() == "true"


def skip_reason(binary: str | None, environ: dict[str, str] | None = None) -> str | None:
    """Why Redis tests may not run here, or None when they must run.

    None when the binary exists, and under ``CI=true`` whatever happens: CI
    installs Redis, so a missing one fails there instead of hiding.
    """
    if binary is not None or in_ci(environ):
        return None
    return MISSING


def free_port() -> int:
    """A loopback port nobody listens on now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _encode(args: tuple[str | bytes | int, ...]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


RespValue = bytes | int | None | list["RespValue"]


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("redis closed the connection")
        self.buf += chunk

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        end = self.buf.index(b"\r\n")
        data = bytes(self.buf[:end])
        del self.buf[: end + 2]
        return data

    def exact(self, n: int) -> bytes:
        while len(self.buf) < n + 2:
            self._fill()
        data = bytes(self.buf[:n])
        del self.buf[: n + 2]
        return data

    def value(self) -> RespValue:
        line = self.line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RedisError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.value() for _ in range(n)]
        raise RedisError(f"unexpected reply {line!r}")


def redis_command(port: int, *args: str | bytes | int, timeout: float = 5.0) -> RespValue:
    """One command on a fresh connection to 127.0.0.1:``port``; its decoded reply
    (RESP2: bytes, int, None or a list). Enough for tests to look inside Redis
    without depending on the client library under test."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(_encode(args))
        return _Reader(sock).value()


class RedisServer:
    """A private ``redis-server``: ``with RedisServer() as redis: redis.url``."""

    def __init__(self, binary: str | None = None, *, port: int = 0) -> None:
        found = binary or redis_server_binary()
        if found is None:
            raise RedisError(MISSING)
        self.binary = found
        self.port = port
        self.dir = Path(tempfile.mkdtemp(prefix="wshub-redis-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RedisError("redis-server is not running")
        return self.process.pid

    @property
    def log_path(self) -> Path:
        return self.dir / "redis.log"

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def command_line(self) -> list[str]:
        return [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.dir),
            "--logfile",
            str(self.log_path),
            "--daemonize",
            "no",
        ]

    def start(self, timeout: float = 10.0) -> None:
        """Start it (on a free port the first time, on the same port after) and
        wait until it answers PING. A port taken meanwhile by someone else is
        retried on another only if no port was fixed yet."""
        if self.alive():
            raise RedisError("redis-server already running")
        fixed = self.port != 0
        for _ in range(1 if fixed else 5):
            if not fixed:
                self.port = free_port()
            if self._try_start(timeout):
                self.starts += 1
                return
        raise RedisError(f"redis-server did not start on port {self.port}: {self.log_tail()}")

    def _try_start(self, timeout: float) -> bool:
        self.process = subprocess.Popen(
            self.command_line(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:  # e.g. the port was taken
                self.process = None
                return False
            try:
                if redis_command(self.port, "PING", timeout=1.0) == b"PONG":
                    return True
            except (OSError, RedisError):
                pass
            time.sleep(0.02)
        self._end(signal.SIGKILL)
        return False

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _end(self, sig: signal.Signals, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            os.kill(process.pid, sig)  # by its PID: ours, nobody else's
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()

    def stop(self) -> None:
        """SIGTERM (no persistence configured, so nothing is saved), then wait."""
        if self.process is not None and self.process.poll() is None:
            self.thaw()  # a stopped process would not act on SIGTERM
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """``kill -9``: gone at once, like a crash; the port refuses connections."""
        self._end(signal.SIGKILL)

    def restart(self, *, hard: bool = True) -> None:
        """Kill (``hard``) or stop it, and start a new one on the same port: empty."""
        if hard:
            self.kill()
        else:
            self.stop()
        self.start()

    def freeze(self) -> None:
        """SIGSTOP: connections stay open but nothing is answered."""
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def command(self, *args: str | bytes | int) -> RespValue:
        return redis_command(self.port, *args)

    def log_tail(self, lines: int = 10) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:]) or "(empty log)"

    def close(self) -> None:
        """Stop it and remove its directory (idempotent)."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
