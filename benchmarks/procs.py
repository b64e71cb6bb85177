"""The processes of a run: servers under test and the load generator, pinned apart.

Each server runs in its own subprocess pinned to one core (``taskset -c``),
the load generator on the other, like the independent harness that judges
the project. Every child gets its file limit raised to the hard limit, so
the connection scenarios measure the servers, not a default of 1024.
"""

from __future__ import annotations

import json
import os
import re
import resource
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

HERE = Path(__file__).resolve().parent
SERVERS = ("wshub", "websockets", "floor")
#: Servers run only when asked for (``--server``): wshub's hub under uvicorn.
EXTRA_SERVERS = ("wshub-uvicorn",)
#: Servers of ``crossnode.py`` only (Socket.IO, not wshub's protocol: run.py's
#: scenarios cannot drive it): one python-socketio node with AsyncRedisManager.
SOCKETIO_SERVER = "socketio-redis"
_LISTENING = re.compile(r"listening on ws://([^:\s]+):(\d+)")


class BenchError(RuntimeError):
    """A process of the benchmark did not do its job (message says which and why)."""


@dataclass(frozen=True)
class Pinning:
    """Cores for the server and the load generator; None: leave to the scheduler."""

    server: int | None = 1
    loadgen: int | None = 0

    def wrap(self, command: list[str], cpu: int | None) -> list[str]:
        if cpu is None or shutil.which("taskset") is None:
            return command
        return ["taskset", "-c", str(cpu), *command]


def raise_nofile() -> None:
    """In the child before exec: soft file limit up to the hard limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def nofile_hard_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def server_command(
    name: str, *, echo: bool, tokens: list[str], ping_interval: float | None = None
) -> list[str]:
    """The command line of server ``name`` in echo or hub mode.

    ``ping_interval``: the keepalive interval of wshub and websockets (the
    floor has no keepalive); None leaves their default (20 s).
    """
    if name == "wshub":
        # The real CLI with its production defaults (hub mode: envelopes, auth,
        # limits and the slow-consumer policy on; --echo: plain echo, same auth).
        command = [sys.executable, "-m", "wshub", "serve", "--port", "0"]
    elif name == "websockets":
        command = [sys.executable, str(HERE / "servers" / "websockets_server.py"), "--port", "0"]
    elif name == "floor":
        command = [sys.executable, str(HERE / "servers" / "floor.py"), "--port", "0"]
    elif name == "wshub-uvicorn":
        command = [sys.executable, str(HERE / "servers" / "wshub_uvicorn.py"), "--port", "0"]
    elif name == SOCKETIO_SERVER:
        command = [sys.executable, str(HERE / "servers" / "socketio_redis.py"), "--port", "0"]
    else:
        raise ValueError(f"unknown server {name!r}")
    for token in tokens:
        command += ["--token", token]
    if echo:
        command.append("--echo")
    if ping_interval is not None and name != "floor":
        command += ["--ping-interval", str(ping_interval)]
    return command


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process ``pid`` used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_line(stream: IO[str], deadline: float) -> str:
    """One line from a child's pipe, or BenchError when the deadline passes."""
    remaining = deadline - time.monotonic()
    if remaining <= 0 or not select.select([stream], [], [], remaining)[0]:
        raise BenchError("timed out waiting for output")
    return stream.readline()


class Server:
    """A running server under test: ``with Server(...) as server: server.port``."""

    def __init__(
        self,
        name: str,
        *,
        echo: bool,
        tokens: list[str],
        pinning: Pinning,
        wshub_src: Path,
        ping_interval: float | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        """``extra_args`` go at the end of the server's command line (e.g. ``--redis URL``)."""
        self.name = name
        command = server_command(name, echo=echo, tokens=tokens, ping_interval=ping_interval)
        command += extra_args
        self.command = pinning.wrap(command, pinning.server)
        env = dict(os.environ)
        if name.startswith("wshub"):
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(wshub_src), env.get("PYTHONPATH", "")) if p
            )
        self.env = env
        # ``python -m`` puts the working directory first on sys.path: run wshub
        # from its source tree so that tree is what gets measured.
        self.cwd = str(wshub_src) if name.startswith("wshub") else None
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed in stop)
            prefix=f"bench-{name}-", suffix=".log", delete=False
        )
        self.process: subprocess.Popen[str] | None = None
        self.host = "127.0.0.1"
        self.port = 0

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 20.0) -> None:
        self.process = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=self.env,
            cwd=self.cwd,
            preexec_fn=raise_nofile,  # noqa: PLW1509 (no threads in this process)
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = read_line(self.process.stdout, deadline)
            except BenchError:
                tail = self.log_tail()
                self.stop()
                raise BenchError(f"{self.name} did not start: {tail}") from None
            if not line:
                self.process.wait(5)
                tail = self.log_tail()
                self.stop()
                raise BenchError(f"{self.name} exited: {tail}")
            match = _LISTENING.search(line)
            if match:
                self.host, self.port = match.group(1), int(match.group(2))
                return

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def rss_kib(self) -> int:
        """Resident memory of the server process (VmRSS, KiB)."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        if match is None:
            raise BenchError(f"no VmRSS for {self.name} (pid {self.pid})")
        return int(match.group(1))

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server used so far."""
        return cpu_seconds(self.pid)

    def log_tail(self, lines: int = 15) -> str:
        if self.log.closed:
            return "(log gone)"
        self.log.flush()
        text = Path(self.log.name).read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:]) or "(no output)"

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process is not None and process.stdout is not None:
            process.stdout.close()
        if not self.log.closed:
            self.log.close()
            Path(self.log.name).unlink(missing_ok=True)


def wshub_location(wshub_src: Path) -> str:
    """Where the measured wshub is imported from (run the way its server runs)."""
    done = subprocess.run(
        [sys.executable, "-c", "import wshub; print(wshub.__file__)"],
        capture_output=True,
        text=True,
        cwd=wshub_src,
        check=False,
    )
    return done.stdout.strip() or done.stderr.strip().splitlines()[-1]


def loadgen_command(
    binary: Path, scenario: str, server: Server, options: dict[str, Any], pinning: Pinning
) -> list[str]:
    command = [str(binary), scenario, "--host", server.host, "--port", str(server.port)]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            command.append(flag)
        elif isinstance(value, list):
            for item in value:
                command += [flag, str(item)]
        elif value is not False and value is not None:
            command += [flag, str(value)]
    return pinning.wrap(command, pinning.loadgen)


def parse_result(stdout: str, what: str) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            result: dict[str, Any] = json.loads(line)
            return result
    raise BenchError(f"{what}: no result from the load generator")


def run_loadgen(command: list[str], timeout: float) -> dict[str, Any]:
    """Run the load generator to completion; its JSON result."""
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            preexec_fn=raise_nofile,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"load generator timed out after {timeout:.0f} s") from None
    if done.returncode != 0:
        raise BenchError(f"load generator failed ({done.returncode}): {done.stderr.strip()}")
    return parse_result(done.stdout, "loadgen")


class Hold:
    """A load generator holding connections open until told to verify and finish."""

    def __init__(self, command: list[str]) -> None:
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=raise_nofile,  # noqa: PLW1509
        )

    def ready(self, timeout: float) -> dict[str, Any]:
        """Wait until every connection was tried; what was opened."""
        assert self.process.stdout is not None
        line = read_line(self.process.stdout, time.monotonic() + timeout)
        if not line:
            raise BenchError(f"load generator exited: {self.stderr()}")
        return parse_result(line, "hold")

    def finish(self, timeout: float = 30.0) -> dict[str, Any]:
        """Verify every connection is alive (ping/pong), close them; the result."""
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write("verify\n")
        self.process.stdin.flush()
        line = read_line(self.process.stdout, time.monotonic() + timeout)
        self.process.wait(timeout)
        return parse_result(line, "hold")

    def stderr(self) -> str:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        assert self.process.stderr is not None
        return self.process.stderr.read().strip()

    def kill(self) -> None:
        """Stop the generator if it still runs and release its pipes (idempotent)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            if pipe is not None and not pipe.closed:
                pipe.close()
