"""Record what each server connection's core was given, to replay it later.

A sans-IO connection is a function of its inputs: the bytes and end of
stream it received, the timers it was asked to handle, the clock and random
values it read, and the application's decisions (accept, send, close). The
``Recorder`` writes all of them, and the bytes the core produced, as JSON
lines; ``wshub replay`` (``adapters.replay``) feeds them to a fresh core and
checks that it produces the same bytes, so a production incident can be
replayed, stepped through and added to the fuzz corpus.

Secrets are redacted before anything reaches the file, by overwriting them
with ``x`` of the same length so that every chunk keeps its size and the
core's output does not change: the bearer token of an ``Authorization``
header, of a ``wshub.bearer.<token>`` subprotocol and of a ``token=`` query
parameter, and every JSON ``"token"`` string in the client's text messages
(first-message auth and refreshes) of up to ``SCANNED_MESSAGE_SIZE`` bytes.
To redact a message the recorder holds that connection's entries until the
message is complete. Compressed messages cannot be rewritten at the same
length: on a connection that negotiated permessage-deflate only the head is
redacted (``wshub serve`` has compression off unless asked).

Recording costs a JSON line per call and is meant for investigations, not
for every production server.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from ..core import Limits, ServerConnection
from ..core.connection import Clock, RandomSource
from ..core.events import Headers
from ..core.frames import Opcode, PreparedMessage
from .redaction import SCANNED_MESSAGE_SIZE, ClientStreamRedactor

__all__ = ["FORMAT_VERSION", "SCANNED_MESSAGE_SIZE", "Recorder", "RecordingServerConnection"]

logger = logging.getLogger("wshub.recording")

#: Written in every connection's first entry; ``wshub replay`` refuses others.
FORMAT_VERSION = 1


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _headers(headers: Headers) -> list[list[str]]:
    return [[_text(k), _text(v)] for k, v in headers]


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


class _Connection:
    """What the recorder keeps per connection: its entries held back for redaction."""

    __slots__ = ("held", "redactor", "sizes")

    def __init__(self, redact: bool) -> None:
        self.redactor = ClientStreamRedactor() if redact else None
        self.held: list[dict[str, Any]] = []
        self.sizes: list[int] = []  # of the held "data" entries, in order


class Recorder:
    """Writes every recorded connection of a server to one JSON-lines file.

    ``directory`` gets ``wshub-<pid>-<unix time>.jsonl``; each line is one
    entry ``{"c": <connection number>, "op": <what>, ...}`` (bytes in base64).
    A write that fails (disk full) is logged once and recording stops; the
    server goes on.
    """

    def __init__(self, directory: str | os.PathLike[str], *, redact: bool = True) -> None:
        self.directory = Path(directory)
        self.redact = redact
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / f"wshub-{os.getpid()}-{int(time.time())}.jsonl"
        self._file: IO[str] | None = self.path.open("a", encoding="utf-8", buffering=1)
        self._numbers = itertools.count(1)
        self._connections: dict[int, _Connection] = {}

    def server_connection(
        self,
        *,
        limits: Limits | None = None,
        compression: bool = False,
        clock: Clock,
        random: RandomSource = os.urandom,
        allowed_hosts: Iterable[str] | None = None,
        remote: object = None,
    ) -> RecordingServerConnection:
        """A ``ServerConnection`` whose every input and output is recorded here."""
        number = next(self._numbers)
        self._connections[number] = _Connection(self.redact)
        return RecordingServerConnection(
            self,
            number,
            limits=limits,
            compression=compression,
            clock=clock,
            random=random,
            allowed_hosts=allowed_hosts,
            remote=remote,
        )

    def _entry(self, number: int, entry: dict[str, Any], data: bytes | None = None) -> None:
        state = self._connections.get(number)
        if state is None:
            return
        entry["c"] = number
        if state.redactor is None:
            if data is not None:
                entry["b"] = _b64(data)
            self._write(entry)
            return
        state.held.append(entry)
        if data is not None:
            state.sizes.append(len(data))
            if not state.redactor.feed(data):
                return
            self._release(state, state.redactor.release())
        elif not state.sizes:
            self._release(state, b"")

    def _release(self, state: _Connection, data: bytes) -> None:
        sizes = iter(state.sizes)
        offset = 0
        for entry in state.held:
            if entry["op"] == "data":
                size = next(sizes)
                entry["b"] = _b64(data[offset : offset + size])
                offset += size
            self._write(entry)
        state.held.clear()
        state.sizes.clear()

    def _compressed(self, number: int) -> None:
        state = self._connections.get(number)
        if state is not None and state.redactor is not None:
            state.redactor.compressed()

    def finish(self, number: int) -> None:
        """The connection is over: write what was held back and its end."""
        state = self._connections.pop(number, None)
        if state is None:
            return
        if state.redactor is not None and state.held:
            self._connections[number] = state
            self._release(state, state.redactor.flush())
            del self._connections[number]
        self._write({"c": number, "op": "end"})

    def _write(self, entry: dict[str, Any]) -> None:
        if self._file is None:
            return
        try:
            self._file.write(json.dumps(entry, separators=(",", ":")) + "\n")
        except (OSError, ValueError) as exc:
            logger.error("recording to %s stopped: %s", self.path, exc)
            self._file = None

    def close(self) -> None:
        for number in list(self._connections):
            self.finish(number)
        if self._file is not None:
            self._file.close()
            self._file = None


def _recorded(
    op: str, describe: Callable[..., dict[str, Any]] | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Wrap a public method of ``ServerConnection``: record the call and its result."""

    def wrap(method: Callable[..., Any]) -> Callable[..., Any]:
        def recorded(self: RecordingServerConnection, *args: Any, **kwargs: Any) -> Any:
            entry: dict[str, Any] = {"op": op}
            if describe is not None:
                entry.update(describe(*args, **kwargs))
            try:
                result = method(self, *args, **kwargs)
            except Exception as exc:
                entry["raised"] = type(exc).__name__
                self._record(entry)
                raise
            if result is not None:
                entry["r"] = _b64(result) if isinstance(result, bytes) else result
            self._record(entry)
            return result

        recorded.__name__ = method.__name__
        recorded.__doc__ = method.__doc__
        return recorded

    return wrap


def _accept(
    _principal: object = None, *, subprotocol: str | None = None, headers: Headers = ()
) -> dict[str, Any]:
    return {"subprotocol": subprotocol, "headers": _headers(headers)}


def _respond(status: int, *, headers: Headers = (), body: bytes = b"") -> dict[str, Any]:
    return {"status": status, "headers": _headers(headers), "body": _b64(body)}


def _status(status: int, reason: str = "", **kw: Any) -> dict[str, Any]:
    return {"status": status, "reason": reason, "headers": _headers(kw.get("headers", ()))}


def _close(code: int = 1000, reason: str = "") -> dict[str, Any]:
    return {"code": code, "reason": reason}


class RecordingServerConnection(ServerConnection):
    """A ``ServerConnection`` that reports every call, clock read and output to a ``Recorder``.

    The principal given to ``accept`` is not recorded (it never reaches the
    wire, and may hold personal data); a replay accepts with ``None``.
    """

    def __init__(
        self,
        recorder: Recorder,
        number: int,
        *,
        limits: Limits | None = None,
        compression: bool = False,
        clock: Clock,
        random: RandomSource = os.urandom,
        allowed_hosts: Iterable[str] | None = None,
        remote: object = None,
    ) -> None:
        self.recorder = recorder
        self.number = number
        limits = limits or Limits()
        recorder._entry(
            number,
            {
                "op": "open",
                "version": FORMAT_VERSION,
                "limits": dataclasses.asdict(limits),
                "compression": compression,
                "allowed_hosts": None if allowed_hosts is None else sorted(allowed_hosts),
                "remote": None if remote is None else str(remote),
            },
        )

        def recorded_clock() -> float:
            now = clock()
            recorder._entry(number, {"op": "clock", "v": now})
            return now

        def recorded_random(size: int) -> bytes:
            value = random(size)
            recorder._entry(number, {"op": "random", "v": _b64(value)})
            return value

        super().__init__(
            limits=limits,
            compression=compression,
            clock=recorded_clock,
            random=recorded_random,
            allowed_hosts=allowed_hosts,
        )

    def _record(self, entry: dict[str, Any]) -> None:
        self.recorder._entry(self.number, entry)

    def receive_data(self, data: bytes) -> None:
        self.recorder._entry(self.number, {"op": "data"}, bytes(data))
        super().receive_data(data)

    receive_eof = _recorded("eof")(ServerConnection.receive_eof)
    handle_timer = _recorded("timer", lambda now=None: {"now": now})(ServerConnection.handle_timer)
    reject = _recorded("reject", _status)(ServerConnection.reject)
    respond = _recorded("respond", _respond)(ServerConnection.respond)
    refuse = _recorded("refuse", _status)(ServerConnection.refuse)
    send_text = _recorded("text", lambda text: {"text": text})(ServerConnection.send_text)
    send_binary = _recorded("binary", lambda data: {"data": _b64(bytes(data))})(
        ServerConnection.send_binary
    )
    send_ping = _recorded(
        "ping", lambda payload=None: {"payload": None if payload is None else _b64(payload)}
    )(ServerConnection.send_ping)
    close = _recorded("close", _close)(ServerConnection.close)

    _recorded_accept = _recorded("accept", _accept)(ServerConnection.accept)

    def accept(
        self, principal: object = None, *, subprotocol: str | None = None, headers: Headers = ()
    ) -> None:
        self._recorded_accept(principal, subprotocol=subprotocol, headers=headers)
        if self.deflate is not None:
            self.recorder._compressed(self.number)

    def send_prepared(self, message: PreparedMessage) -> bool:
        entry: dict[str, Any] = {
            "op": "prepared",
            "text": message.opcode is Opcode.TEXT,
            "data": _b64(message.payload),
        }
        try:
            result = super().send_prepared(message)
        except Exception as exc:
            entry["raised"] = type(exc).__name__
            self._record(entry)
            raise
        entry["r"] = result
        self._record(entry)
        return result

    def data_to_send(self) -> bytes:
        data = super().data_to_send()
        if data:
            self._record({"op": "out", "b": _b64(data)})
        return data
