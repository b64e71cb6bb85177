"""The floor: the least a Python process can do for the same jobs.

A bare ``asyncio.Protocol`` with a tiny upgrade parser (bearer token checked),
a frame parser, echo, and a hub that decodes the JSON envelope, encodes the
outgoing envelope once, frames it once and calls ``transport.write`` once per
subscriber. No limits, no keepalive, no validation beyond what the jobs need:
it is not a server to use, it is the ceiling a Python server can approach.
If it is not clearly faster than the servers under test, the load generator
is the bottleneck.

    python benchmarks/servers/floor.py --port 0 --token T [--echo]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import struct
import time
from typing import Any

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_PACK_H = struct.Struct("!BBH").pack
_PACK_Q = struct.Struct("!BBQ").pack


def frame(opcode: int, payload: bytes) -> bytes:
    """An unmasked server frame."""
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 1 << 16:
        return _PACK_H(0x80 | opcode, 126, n) + payload
    return _PACK_Q(0x80 | opcode, 127, n) + payload


def unmask(mask: bytes, data: bytes) -> bytes:
    n = len(data)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def envelope(**fields: Any) -> bytes:
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()


class State:
    """Server-wide: accepted tokens, topics and their sequence numbers."""

    def __init__(self, tokens: list[str], echo: bool) -> None:
        self.tokens = {token.encode(): f"token-{i}" for i, token in enumerate(tokens)}
        self.echo = echo
        self.topics: dict[str, set[Floor]] = {}
        self.seqs: dict[str, int] = {}
        self.next_id = 0


class Floor(asyncio.Protocol):
    __slots__ = ("buf", "mine", "open", "state", "transport")

    def __init__(self, state: State) -> None:
        self.state = state
        self.buf = b""
        self.open = False
        self.mine: set[str] = set()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002
        for topic in self.mine:
            members = self.state.topics.get(topic)
            if members is not None:
                members.discard(self)
                if not members:
                    del self.state.topics[topic]
                    self.state.seqs.pop(topic, None)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            if not self.upgrade(buf[:end]):
                return
            buf = buf[end + 4 :]
        self.buf = self.frames(buf)

    def upgrade(self, head: bytes) -> bool:
        assert self.transport is not None
        headers = {}
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        auth = headers.get(b"authorization", b"")
        principal = self.state.tokens.get(auth[7:]) if auth[:7].lower() == b"bearer " else None
        if principal is None:
            self.transport.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
            self.transport.close()
            return False
        key = headers.get(b"sec-websocket-key", b"")
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        protocol = b""
        if b"wshub.v1" in headers.get(b"sec-websocket-protocol", b""):
            protocol = b"Sec-WebSocket-Protocol: wshub.v1\r\n"
        reply = (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n" + protocol + b"\r\n"
        )
        if not self.state.echo:
            self.state.next_id += 1
            welcome = envelope(
                message_type="welcome",
                payload={"conn_id": f"c{self.state.next_id}", "principal": principal},
                timestamp=int(time.time() * 1000),
            )
            reply += frame(0x1, welcome)
        self.transport.write(reply)
        self.open = True
        return True

    def frames(self, buf: bytes) -> bytes:
        """Handle every whole frame in ``buf``; return the incomplete rest."""
        pos, size = 0, len(buf)
        while size - pos >= 6:
            b0, b1 = buf[pos], buf[pos + 1]
            n, start = b1 & 0x7F, pos + 2
            if n == 126:
                if size - pos < 8:
                    break
                n, start = int.from_bytes(buf[start : start + 2], "big"), start + 2
            elif n == 127:
                if size - pos < 14:
                    break
                n, start = int.from_bytes(buf[start : start + 8], "big"), start + 8
            end = start + 4 + n
            if end > size:
                break
            payload = unmask(buf[start : start + 4], buf[start + 4 : end])
            pos = end
            self.on_frame(b0 & 0x0F, payload)
            if self.transport is None or self.transport.is_closing():
                return b""
        return buf[pos:]

    def on_frame(self, opcode: int, payload: bytes) -> None:
        transport = self.transport
        assert transport is not None
        if opcode == 0x8:
            transport.write(frame(0x8, payload[:2]))
            transport.close()
        elif opcode == 0x9:
            transport.write(frame(0xA, payload))
        elif opcode in (0x1, 0x2):
            if self.state.echo:
                transport.write(frame(opcode, payload))
            else:
                self.hub(payload)

    def hub(self, payload: bytes) -> None:
        assert self.transport is not None
        request = json.loads(payload)
        kind, topic, request_id = request["message_type"], request.get("topic"), request.get("id")
        state = self.state
        result: Any = None
        if kind == "subscribe":
            state.topics.setdefault(topic, set()).add(self)
            self.mine.add(topic)
            result = {"topic": topic, "seq": state.seqs.get(topic, 0)}
        elif kind == "publish":
            members = state.topics.get(topic, ())
            seq = 0
            if members:
                seq = state.seqs[topic] = state.seqs.get(topic, 0) + 1
                shared = frame(
                    0x1,
                    envelope(
                        message_type="message",
                        topic=topic,
                        seq=seq,
                        payload=request.get("payload"),
                        timestamp=int(time.time() * 1000),
                    ),
                )
                for member in members:
                    if member.transport is not None:
                        member.transport.write(shared)
            result = {"topic": topic, "seq": seq, "delivered": len(members)}
        if request_id is not None:
            reply = envelope(
                message_type="reply",
                id=request_id,
                ok=True,
                payload=result,
                timestamp=int(time.time() * 1000),
            )
            self.transport.write(frame(0x1, reply))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--token", action="append", default=[], required=True)
    parser.add_argument("--echo", action="store_true")
    args = parser.parse_args()
    state = State(args.token, args.echo)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Floor(state), args.host, args.port)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"listening on ws://{host}:{port}", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
