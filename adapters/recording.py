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
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from ..core import Limits, ServerConnection
from ..core.connection import Clock, RandomSource
from ..core.events import Headers
from ..core.frames import Opcode, PreparedMessage

__all__ = ["FORMAT_VERSION", "SCANNED_MESSAGE_SIZE", "Recorder", "RecordingServerConnection"]

logger = logging.getLogger("wshub.recording")

#: Written in every connection's first entry; ``wshub replay`` refuses others.
FORMAT_VERSION = 1
#: Client text messages up to this size are scanned for ``"token"`` strings.
SCANNED_MESSAGE_SIZE = 64 * 1024
#: A request head longer than this is released as it is (the core refuses it).
_HEAD_HOLD_LIMIT = 64 * 1024

_BEARER = re.compile(rb"(?im)^authorization:[ \t]*bearer[ \t]+([^\r\n]*)")
_SUBPROTOCOL = re.compile(rb"(?i)wshub\.bearer\.([^,\s]*)")
_QUERY = re.compile(rb"[?&]token=([^&\s#]*)")
_JSON_TOKEN = re.compile(rb'"token"\s*:\s*"((?:[^"\\]|\\.)*)"')
_JSON_TOKEN_CUT = re.compile(rb'"token"\s*:\s*"((?:[^"\\]|\\.)*\\?)\Z')


def _blank(data: bytearray, pattern: re.Pattern[bytes], start: int = 0, end: int = -1) -> None:
    """Overwrite group 1 of every match in ``data[start:end]`` with ``x``."""
    if end < 0:
        end = len(data)
    for match in pattern.finditer(data, start, end):
        a, b = match.span(1)
        data[a:b] = b"x" * (b - a)


def redact_head(head: bytearray) -> None:
    """Blank the tokens a request head may carry (header, subprotocol, query)."""
    line_end = head.find(b"\r\n")
    _blank(head, _QUERY, 0, len(head) if line_end < 0 else line_end)
    _blank(head, _BEARER)
    _blank(head, _SUBPROTOCOL)


def redact_json_tokens(payload: bytes, *, cut: bool = False) -> bytes:
    """``payload`` with the value of every ``"token"`` string blanked, same length.

    ``cut``: the payload may end inside a token string (a message cut short).
    """
    data = bytearray(payload)
    _blank(data, _JSON_TOKEN)
    if cut:
        _blank(data, _JSON_TOKEN_CUT)
    return bytes(data)


def _unmask(data: bytes, mask: bytes | None) -> bytes:
    if mask is None:
        return data
    key = (mask * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(len(data), "big")


class ClientStreamRedactor:
    """Blanks secrets in a client's byte stream without changing any chunk's size.

    ``feed`` takes each chunk as it arrives and answers whether everything fed
    so far may be written (``release``): not while the request head is
    incomplete, nor while a text message that may hold a token is.
    """

    __slots__ = (
        "_buf",
        "_compressed",
        "_done",
        "_final",
        "_head_done",
        "_message",
        "_pos",
        "_size",
    )

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0  # where the next frame header starts (may be past the end)
        self._head_done = False
        self._compressed = False
        self._message: list[tuple[int, int, bytes | None]] | None = None  # frames read so far
        self._size = 0
        self._final = False  # the message's last frame has begun
        self._done: list[list[tuple[int, int, bytes | None]]] = []

    def compressed(self) -> None:
        """Permessage-deflate was agreed: payloads can no longer be rewritten."""
        self._compressed = True
        self._message, self._final = None, False

    def feed(self, data: bytes) -> bool:
        self._buf += data
        if not self._head_done:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) <= _HEAD_HOLD_LIMIT:
                    return False
                # Not a head the core will take (it answers 431): blank what
                # may be a token and stop looking for frames.
                self._compressed = True
                end = len(self._buf) - 4
            self._head_done = True
            self._pos = end + 4
            head = self._buf[: self._pos]
            redact_head(head)
            self._buf[: self._pos] = head
        if not self._compressed:
            self._scan()
        return self._message is None and self._pos >= len(self._buf)

    def _scan(self) -> None:
        buf = self._buf
        while True:
            if self._final and self._pos <= len(buf):
                # The last frame of the text message is all here: it can be rewritten.
                assert self._message is not None
                self._done.append(self._message)
                self._message, self._final = None, False
            pos = self._pos
            if len(buf) - pos < 2:
                return
            first, second = buf[pos], buf[pos + 1]
            length = second & 0x7F
            start = pos + 2
            if length == 126:
                start += 2
            elif length == 127:
                start += 8
            if second & 0x80:
                start += 4
            if len(buf) < start:
                return
            if length >= 126:
                length = int.from_bytes(buf[pos + 2 : pos + (4 if length == 126 else 10)], "big")
            mask = bytes(buf[start - 4 : start]) if second & 0x80 else None
            opcode, fin, rsv1 = first & 0x0F, first & 0x80, first & 0x40
            if opcode == 1 and not rsv1 and self._message is None:
                self._message, self._size = [], 0
            if opcode in (0, 1) and self._message is not None:
                self._size += length
                if self._size > SCANNED_MESSAGE_SIZE:
                    self._message = None  # too large to hold back: written as it is
                else:
                    self._message.append((start, length, mask))
                    self._final = bool(fin)
            self._pos = start + length

    def release(self) -> bytes:
        """Everything fed since the last release, redacted."""
        buf = self._buf
        for message in self._done:
            # Only a message cut short by ``flush`` has frames past the end.
            frames = [(s, min(n, len(buf) - s), m) for s, n, m in message if s <= len(buf)]
            cut = frames != message
            payload = b"".join(_unmask(bytes(buf[s : s + n]), m) for s, n, m in frames)
            redacted = redact_json_tokens(payload, cut=cut)
            if redacted == payload:
                continue
            offset = 0
            for start, length, mask in frames:
                buf[start : start + length] = _unmask(redacted[offset : offset + length], mask)
                offset += length
        self._done.clear()
        data = bytes(buf)
        self._pos -= len(buf)
        buf.clear()
        return data

    def flush(self) -> bytes:
        """Release what is held when the connection ends (a message cut short included)."""
        if self._message is not None:
            self._done.append(self._message)
            self._message, self._final = None, False
        if not self._head_done:
            head = bytearray(self._buf)
            redact_head(head)
            self._buf[:] = head
        return self.release()


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
