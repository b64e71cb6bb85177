"""Replay a recorded connection through a fresh core (see ``adapters.recording``).

The recording holds every input of one ``ServerConnection`` and every value
it read from its clock and random source, so the same calls on a new core
must produce the same bytes: ``replay`` checks that at each recorded output
and raises ``ReplayDiverged`` at the first difference (a core changed since
the recording, or a tampered file). A replay needs no socket, no event loop
and no clock: it is the core, driven by a file.
"""

from __future__ import annotations

import base64
import json
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..core import Limits, ServerConnection
from ..core.events import Event
from ..core.frames import PreparedMessage
from .recording import FORMAT_VERSION

__all__ = [
    "RecordingError",
    "ReplayDiverged",
    "Step",
    "corpus_input",
    "read_recording",
    "replay",
]

Entry = dict[str, Any]


class RecordingError(ValueError):
    """The file is not a recording this version can read."""


class ReplayDiverged(AssertionError):
    """The core did something other than what was recorded."""


@dataclass(frozen=True, slots=True)
class Step:
    """One replayed entry, the events it produced and the bytes checked at it."""

    entry: Entry
    events: list[Event] = field(default_factory=list)
    output: bytes = b""


def read_recording(path: str | Path) -> dict[int, list[Entry]]:
    """The entries of every connection in the file, in order, by connection number."""
    connections: dict[int, list[Entry]] = {}
    with Path(path).open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                conn = int(entry["c"])
                op = entry["op"]
            except (ValueError, KeyError, TypeError) as exc:
                raise RecordingError(f"{path}:{number}: not a recording entry ({exc})") from None
            if op == "open" and entry.get("version") != FORMAT_VERSION:
                raise RecordingError(
                    f"{path}:{number}: recording format {entry.get('version')!r}, "
                    f"this wshub reads {FORMAT_VERSION}"
                )
            connections.setdefault(conn, []).append(entry)
    return connections


def _bytes(value: str | None) -> bytes:
    return b"" if value is None else base64.b64decode(value)


def _headers(value: Sequence[Sequence[str]]) -> tuple[tuple[str, str], ...]:
    return tuple((k, v) for k, v in value)


def _limits(recorded: dict[str, Any]) -> Limits:
    known = {f.name for f in fields(Limits)}
    return Limits(**{k: v for k, v in recorded.items() if k in known})


class _Recorded:
    """The clock and random source of a replay: the recorded values, in order."""

    def __init__(self, entries: Sequence[Entry]) -> None:
        self.clock: deque[float] = deque(e["v"] for e in entries if e["op"] == "clock")
        self.random: deque[bytes] = deque(_bytes(e["v"]) for e in entries if e["op"] == "random")

    def now(self) -> float:
        if not self.clock:
            raise ReplayDiverged("the core read the clock more often than recorded")
        return self.clock.popleft()

    def bytes(self, size: int) -> bytes:
        if not self.random:
            raise ReplayDiverged("the core read more random values than recorded")
        value = self.random.popleft()
        if len(value) != size:
            raise ReplayDiverged(f"the core read {size} random bytes, {len(value)} were recorded")
        return value


def _call(conn: ServerConnection, entry: Entry) -> object:
    """Make the recorded call; its result (None for the calls that have none)."""
    op = entry["op"]
    if op == "text":
        return conn.send_text(entry["text"])
    if op == "binary":
        return conn.send_binary(_bytes(entry["data"]))
    if op == "prepared":
        return conn.send_prepared(PreparedMessage(_bytes(entry["data"]), text=entry["text"]))
    if op == "ping":
        payload = entry.get("payload")
        return conn.send_ping(None if payload is None else _bytes(payload))
    if op == "data":
        conn.receive_data(_bytes(entry["b"]))
    elif op == "eof":
        conn.receive_eof()
    elif op == "timer":
        conn.handle_timer(entry.get("now"))
    elif op == "accept":
        conn.accept(None, subprotocol=entry.get("subprotocol"), headers=_headers(entry["headers"]))
    elif op == "reject":
        conn.reject(entry["status"], entry["reason"], headers=_headers(entry["headers"]))
    elif op == "respond":
        conn.respond(
            entry["status"], headers=_headers(entry["headers"]), body=_bytes(entry["body"])
        )
    elif op == "refuse":
        conn.refuse(entry["status"], entry["reason"])
    elif op == "close":
        conn.close(entry["code"], entry["reason"])
    else:
        raise RecordingError(f"unknown entry {op!r}")
    return None


def replay(entries: Sequence[Entry]) -> Iterator[Step]:
    """Feed one connection's entries to a new core, yielding a ``Step`` per call.

    Raises ``ReplayDiverged`` when a result, a raised error or an output
    differs from the recording, and ``RecordingError`` when the entries do
    not start with the connection's ``open``.
    """
    if not entries or entries[0]["op"] != "open":
        raise RecordingError("a connection's entries start with 'open'")
    opening = entries[0]
    values = _Recorded(entries)
    conn = ServerConnection(
        limits=_limits(opening["limits"]),
        compression=opening["compression"],
        clock=values.now,
        random=values.bytes,
        allowed_hosts=opening["allowed_hosts"],
    )
    for entry in entries[1:]:
        op = entry["op"]
        if op in ("clock", "random"):
            continue
        if op == "end":
            break
        if op == "out":
            expected = _bytes(entry["b"])
            got = conn.data_to_send()
            if got != expected:
                at = next(
                    (i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b),
                    min(len(got), len(expected)),
                )
                raise ReplayDiverged(
                    f"output differs at byte {at} of {len(expected)} "
                    f"(recorded {expected[at : at + 16]!r}, replayed {got[at : at + 16]!r})"
                )
            yield Step(entry, conn.events_received(), got)
            continue
        raised = None
        try:
            result = _call(conn, entry)
        except (RecordingError, ReplayDiverged):
            raise
        except Exception as exc:
            raised = type(exc).__name__
            result = None
        if raised != entry.get("raised"):
            raise ReplayDiverged(f"{op}: recorded {entry.get('raised')}, replayed {raised}")
        if isinstance(result, bytes):
            result = base64.b64encode(result).decode("ascii")
        if raised is None and result != entry.get("r"):
            raise ReplayDiverged(f"{op}: recorded result {entry.get('r')!r}, replayed {result!r}")
        yield Step(entry, conn.events_received())
    if values.clock or values.random:
        raise ReplayDiverged(
            f"the core read {len(values.clock)} clock and {len(values.random)} random "
            "values fewer than recorded"
        )


def corpus_input(entries: Sequence[Entry]) -> bytes:
    """The connection's received bytes as an input of ``fuzz/fuzz_server_bytes.py``.

    Its two option bytes say: no prefix (the recording has the request
    itself), compression as recorded, accept at once, everything in one read.
    """
    compression = bool(entries and entries[0].get("compression"))
    received = b"".join(_bytes(e["b"]) for e in entries if e["op"] == "data")
    return bytes((0x08 if compression else 0x00, 0x00)) + received
