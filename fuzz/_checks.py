"""Independent readers of what a connection writes: the oracles of the harnesses.

The harnesses must not trust the code they test, so nothing here calls
wshub's handshake or frame code. HTTP heads are read with h11 from the
*other* side (a client reads the server's response, a server reads the
client's request); frames are read by ``FrameReader``, a strict RFC 6455 /
RFC 7692 parser written for this purpose. Every rule a peer could rely on
is checked, and a break raises ``ContractError``, which atheris reports as a
crash.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import zlib
from dataclasses import dataclass

import h11

__all__ = [
    "SENDABLE_CLOSE_CODES",
    "TOLERATED",
    "ClientOutput",
    "ContractError",
    "DeflateTerms",
    "FrameReader",
    "ServerOutput",
    "accept_for",
    "check_switch",
]

#: RFC 6455 §7.4.1 plus the IANA codes 1012-1014 and the application range:
#: what an endpoint may put in a close frame it sends.
SENDABLE_CLOSE_CODES = frozenset(
    {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
) | frozenset(range(3000, 5000))
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_DATA_OPCODES = (0x1, 0x2)
_CONTROL_OPCODES = (0x8, 0x9, 0xA)
_DEFLATE_PARAMS = frozenset(
    {
        "server_no_context_takeover",
        "client_no_context_takeover",
        "server_max_window_bits",
        "client_max_window_bits",
    }
)
#: Bigger than any message a harness makes a connection send.
_MAX_MESSAGE = 1 << 24

#: Core bugs the harnesses found, reported, and step around until they are
#: fixed, so fuzzing can go on finding others. Each has a strict xfail test in
#: tests/test_fuzz_found.py that runs with the bug no longer tolerated: when
#: the core is fixed, that test passes (XPASS fails the run) and the entry
#: must be removed from here.
#: (None now; ``head_error_body``, the server's own error answers to a HEAD
#: request carrying a body, was fixed.)
TOLERATED: set[str] = set()


class ContractError(AssertionError):
    """The code under test broke a documented rule."""


def accept_for(key: str) -> str:
    """Sec-WebSocket-Accept for a key (RFC 6455 §4.2.2), computed here."""
    return base64.b64encode(hashlib.sha1(key.encode("latin-1") + _GUID).digest()).decode()


def _tokens(headers: list[tuple[bytes, bytes]], name: bytes) -> list[str]:
    out: list[str] = []
    for hname, value in headers:
        if hname == name:
            out += [t.strip().lower() for t in value.decode("latin-1").split(",") if t.strip()]
    return out


def _values(headers: list[tuple[bytes, bytes]], name: bytes) -> list[str]:
    return [value.decode("latin-1") for hname, value in headers if hname == name]


@dataclass(frozen=True, slots=True)
class DeflateTerms:
    """What a reader must know of the permessage-deflate agreement for one
    direction: whether the sender resets its compressor for every message."""

    no_context_takeover: bool


def parse_deflate_agreement(value: str, *, sender_is_server: bool) -> DeflateTerms:
    """Check a server's permessage-deflate answer (RFC 7692 §7.1); return the
    terms for the direction sent by the server or by the client."""
    name, *params = [p.strip() for p in value.split(";")]
    if name.lower() != "permessage-deflate":
        raise ContractError(f"extension other than permessage-deflate agreed: {value!r}")
    seen: set[str] = set()
    for param in params:
        key, _, arg = param.partition("=")
        key, arg = key.strip().lower(), arg.strip()
        if len(arg) >= 2 and arg[0] == arg[-1] == '"':
            arg = arg[1:-1]  # RFC 7692 §7.1: a quoted-string value is allowed
        if key not in _DEFLATE_PARAMS or key in seen:
            raise ContractError(f"bad permessage-deflate parameter {param!r} in {value!r}")
        seen.add(key)
        if key.endswith("window_bits") and not (arg.isdigit() and 8 <= int(arg) <= 15):
            raise ContractError(f"bad window bits in {value!r}")
        if not key.endswith("window_bits") and arg:
            raise ContractError(f"value on a flag parameter in {value!r}")
    side = "server" if sender_is_server else "client"
    return DeflateTerms(no_context_takeover=f"{side}_no_context_takeover" in seen)


class FrameReader:
    """Strict reader of one direction of a WebSocket connection.

    ``masked``: whether every frame must be masked (client to server) or none
    (server to client). ``deflate``: the agreed terms, or None when RSV1 must
    never be set. Collects whole messages (inflated, UTF-8 checked), ping and
    pong payloads and the close frame, after which nothing may follow.
    """

    def __init__(self, *, masked: bool, deflate: DeflateTerms | None) -> None:
        self.masked = masked
        self.deflate = deflate
        self.messages: list[str | bytes] = []
        self.pings: list[bytes] = []
        self.pongs: list[bytes] = []
        self.close: tuple[int | None, str] | None = None
        self._buffer = bytearray()
        self._opcode: int | None = None  # of the fragmented message in progress
        self._compressed = False
        self._fragments: list[bytes] = []
        self._size = 0
        self._inflater: zlib._Decompress | None = None

    def feed(self, data: bytes) -> None:
        self._buffer += data
        while self._next_frame():
            pass

    def finish(self) -> None:
        """The writer is done: it must have written whole frames only."""
        if self._buffer:
            raise ContractError(f"output ends inside a frame: {bytes(self._buffer[:32])!r}")

    def _next_frame(self) -> bool:
        buf = self._buffer
        if len(buf) < 2:
            return False
        first, second = buf[0], buf[1]
        if bool(second & 0x80) is not self.masked:
            raise ContractError(
                f"{'unmasked' if self.masked else 'masked'} frame: {bytes(buf[:16])!r}"
            )
        length = second & 0x7F
        pos = 2
        if length == 126:
            if len(buf) < 4:
                return False
            length = int.from_bytes(buf[2:4], "big")
            pos = 4
            if length < 126:
                raise ContractError(f"non-minimal 16-bit length {length}")
        elif length == 127:
            if len(buf) < 10:
                return False
            length = int.from_bytes(buf[2:10], "big")
            pos = 10
            if length >> 63 or length < 1 << 16:
                raise ContractError(f"invalid 64-bit length {length}")
        if length > _MAX_MESSAGE:
            raise ContractError(f"frame of {length} bytes")
        mask = b""
        if self.masked:
            if len(buf) < pos + 4:
                return False
            mask = bytes(buf[pos : pos + 4])
            pos += 4
        if len(buf) < pos + length:
            return False
        payload = bytes(buf[pos : pos + length])
        del buf[: pos + length]
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self._check_frame(bool(first & 0x80), first & 0x70, first & 0x0F, payload)
        return True

    def _check_frame(self, fin: bool, rsv: int, opcode: int, payload: bytes) -> None:
        if self.close is not None:
            raise ContractError(f"frame (opcode {opcode}) written after the close frame")
        if rsv & 0x30:
            raise ContractError(f"RSV2/RSV3 set (opcode {opcode})")
        rsv1 = bool(rsv & 0x40)
        if opcode in _CONTROL_OPCODES:
            if not fin or len(payload) > 125 or rsv1:
                raise ContractError(
                    f"control frame {opcode}: fin={fin} len={len(payload)} rsv1={rsv1}"
                )
            self._control(opcode, payload)
        elif opcode in _DATA_OPCODES:
            if self._opcode is not None:
                raise ContractError("new data message inside a fragmented one")
            if rsv1 and self.deflate is None:
                raise ContractError("RSV1 set without permessage-deflate")
            self._opcode, self._compressed = opcode, rsv1
            self._fragments, self._size = [], 0
            self._data(fin, payload)
        elif opcode == 0x0:
            if self._opcode is None:
                raise ContractError("continuation frame outside a message")
            if rsv1:
                raise ContractError("RSV1 on a continuation frame (RFC 7692 §6.1)")
            self._data(fin, payload)
        else:
            raise ContractError(f"reserved opcode {opcode}")

    def _control(self, opcode: int, payload: bytes) -> None:
        if opcode == 0x9:
            self.pings.append(payload)
        elif opcode == 0xA:
            self.pongs.append(payload)
        elif not payload:
            self.close = (None, "")
        else:
            if len(payload) < 2:
                raise ContractError("close frame with a 1-byte payload")
            code = int.from_bytes(payload[:2], "big")
            if code not in SENDABLE_CLOSE_CODES:
                raise ContractError(f"close code {code} may not be sent")
            try:
                reason = payload[2:].decode("utf-8")
            except UnicodeDecodeError:
                raise ContractError(f"close reason is not UTF-8: {payload!r}") from None
            self.close = (code, reason)

    def _data(self, fin: bool, payload: bytes) -> None:
        self._fragments.append(payload)
        self._size += len(payload)
        if self._size > _MAX_MESSAGE:
            raise ContractError("message larger than any the harnesses send")
        if not fin:
            return
        data = b"".join(self._fragments)
        if self._compressed:
            data = self._inflate(data)
        if self._opcode == 0x1:
            try:
                self.messages.append(data.decode("utf-8"))
            except UnicodeDecodeError:
                raise ContractError(f"text message is not UTF-8: {data[:40]!r}") from None
        else:
            self.messages.append(data)
        self._opcode = None

    def _inflate(self, data: bytes) -> bytes:
        assert self.deflate is not None
        if self._inflater is None or self.deflate.no_context_takeover:
            # Without context takeover every message must inflate on its own.
            self._inflater = zlib.decompressobj(-15)
        try:
            out = self._inflater.decompress(data + b"\x00\x00\xff\xff", _MAX_MESSAGE + 1)
        except zlib.error as exc:
            raise ContractError(f"compressed message does not inflate: {exc}") from None
        if len(out) > _MAX_MESSAGE or self._inflater.unconsumed_tail:
            raise ContractError("compressed message inflates past any sent message")
        return out


class ServerOutput:
    """Everything a server connection writes: one HTTP response, then frames
    after a 101. Read with an h11 *client* that sent the request the server
    reported (or a plain GET when it reported none)."""

    def __init__(self, *, compression: bool) -> None:
        self.compression = compression
        self.key: str | None = None  # of the HandshakeRequest, when one was reported
        self.offered_subprotocols: tuple[str, ...] = ()
        self.offered_deflate = False
        self.method = "GET"
        self.decided: int | None = None  # status the application chose
        self.subprotocol: str | None = None  # the one it accepted with
        self.status: int | None = None
        self.extensions: tuple[str, ...] = ()  # of the 101
        self.frames: FrameReader | None = None
        self._h11: h11.Connection | None = None
        self._done = False  # a whole non-101 response was read
        self._started = False

    # What the harness learnt from events and its own decisions.

    def upgrade_requested(
        self, key: str | None, subprotocols: tuple[str, ...], extensions: tuple[str, ...]
    ) -> None:
        if key is None:
            raise ContractError("HandshakeRequest without a Sec-WebSocket-Key")
        try:
            raw = base64.b64decode(key.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raw = b""
        if len(raw) != 16:
            raise ContractError(f"HandshakeRequest reported for a malformed key {key!r}")
        self.key = key
        self.offered_subprotocols = subprotocols
        self.offered_deflate = any("permessage-deflate" in e.lower() for e in extensions)

    def plain_requested(self, method: str) -> None:
        self.method = method

    def decide(self, status: int, subprotocol: str | None = None) -> None:
        self.decided = status
        self.subprotocol = subprotocol

    # Reading.

    def feed(self, data: bytes) -> None:
        if not data:
            return
        if self.frames is not None:
            self.frames.feed(data)
            return
        if self._done:
            raise ContractError(f"bytes after a complete HTTP response: {data[:32]!r}")
        conn = self._connection()
        conn.receive_data(data)
        try:
            self._read(conn)
        except h11.RemoteProtocolError as exc:
            raise ContractError(f"server output is not a valid HTTP response: {exc}") from None

    def finish(self) -> None:
        if self._started and not self._done and self.frames is None:
            raise ContractError("server output ends inside its HTTP response")
        if self.frames is not None:
            self.frames.finish()

    def _connection(self) -> h11.Connection:
        if self._h11 is None:
            self._started = True
            conn = h11.Connection(h11.CLIENT)
            headers = [("Host", "fuzz.test")]
            if self.key is not None:
                headers += [("Upgrade", "websocket"), ("Connection", "Upgrade")]
            conn.send(h11.Request(method=self.method, target="/", headers=headers))
            conn.send(h11.EndOfMessage())
            self._h11 = conn
        return self._h11

    def _read(self, conn: h11.Connection) -> None:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.InformationalResponse):
                if event.status_code != 101:
                    raise ContractError(f"server sent a {event.status_code} response")
                self._switch(event)
                trailing, _ = conn.trailing_data
                assert self.frames is not None
                self.frames.feed(trailing)
                return
            if isinstance(event, h11.Response):
                self._response(event)
            elif isinstance(event, h11.EndOfMessage):
                self._done = True
                if conn.trailing_data[0]:
                    raise ContractError("bytes after a complete HTTP response")
                return

    def _response(self, response: h11.Response) -> None:
        status = response.status_code
        self.status = status
        if self.decided is not None and status != self.decided:
            raise ContractError(f"application chose {self.decided}, server wrote {status}")
        if self.decided is None and status < 400:
            raise ContractError(f"{status} written without the application's decision")
        if "close" not in _tokens(list(response.headers), b"connection"):
            raise ContractError("non-101 response without 'Connection: close'")
        if len(_values(list(response.headers), b"content-length")) != 1:
            raise ContractError("non-101 response without exactly one Content-Length")

    def _switch(self, response: h11.InformationalResponse) -> None:
        self.status = 101
        if self.decided != 101 or self.key is None:
            raise ContractError("101 written without an accepted upgrade request")
        headers = list(response.headers)
        if "websocket" not in _tokens(headers, b"upgrade"):
            raise ContractError("101 without 'Upgrade: websocket'")
        if "upgrade" not in _tokens(headers, b"connection"):
            raise ContractError("101 without 'Connection: Upgrade'")
        if _values(headers, b"sec-websocket-accept") != [accept_for(self.key)]:
            raise ContractError("101 with a wrong or repeated Sec-WebSocket-Accept")
        protocols = _values(headers, b"sec-websocket-protocol")
        expected = [self.subprotocol] if self.subprotocol is not None else []
        if protocols != expected:
            raise ContractError(f"101 names subprotocol {protocols}, accepted {expected}")
        if self.subprotocol is not None and self.subprotocol not in self.offered_subprotocols:
            raise ContractError(f"subprotocol {self.subprotocol!r} was not offered")
        self.extensions = tuple(_values(headers, b"sec-websocket-extensions"))
        deflate = None
        if self.extensions:
            if len(self.extensions) != 1 or not self.compression or not self.offered_deflate:
                raise ContractError(f"extensions agreed without an offer: {self.extensions}")
            if "server_no_context_takeover" not in self.extensions[0].lower():
                raise ContractError("the server must answer server_no_context_takeover")
            deflate = parse_deflate_agreement(self.extensions[0], sender_is_server=True)
        self.frames = FrameReader(masked=False, deflate=deflate)


def check_switch(received: bytes, key: str) -> None:
    """What a client read before it reported ``Opened`` must begin with a valid
    101 for its key (after any other 1xx): read here with a fresh h11 client."""
    conn = h11.Connection(h11.CLIENT)
    upgrade = [("Host", "fuzz.test"), ("Upgrade", "websocket"), ("Connection", "Upgrade")]
    conn.send(h11.Request(method="GET", target="/", headers=upgrade))
    conn.send(h11.EndOfMessage())
    conn.receive_data(received)
    try:
        event = conn.next_event()
        while isinstance(event, h11.InformationalResponse) and event.status_code != 101:
            event = conn.next_event()
    except h11.RemoteProtocolError as exc:
        raise ContractError(f"client opened on an invalid response: {exc}") from None
    if not isinstance(event, h11.InformationalResponse):
        raise ContractError(f"client opened on {event!r}")
    headers = list(event.headers)
    if "websocket" not in _tokens(headers, b"upgrade"):
        raise ContractError("client opened on a 101 without 'Upgrade: websocket'")
    if "upgrade" not in _tokens(headers, b"connection"):
        raise ContractError("client opened on a 101 without 'Connection: Upgrade'")
    if _values(headers, b"sec-websocket-accept") != [accept_for(key)]:
        raise ContractError("client opened on a wrong Sec-WebSocket-Accept")


class ClientOutput:
    """Everything a client connection writes: its upgrade request, read with an
    h11 *server*, then masked frames once it reported ``Opened``."""

    def __init__(self) -> None:
        self.request: h11.Request | None = None
        self.frames: FrameReader | None = None
        self._h11 = h11.Connection(h11.SERVER)
        self._agreed: tuple[str, ...] | None = None  # extensions of Opened, once reported

    def opened(self, extensions: tuple[str, ...]) -> None:
        """The client reported Opened with these agreed extensions."""
        self._agreed = extensions
        if self.request is not None:
            self._start_frames(self.request)

    def feed(self, data: bytes) -> None:
        if not data:
            return
        if self.frames is not None:
            self.frames.feed(data)
            return
        if self.request is not None:
            raise ContractError(f"client wrote frames before it opened: {data[:32]!r}")
        self._h11.receive_data(data)
        try:
            event = self._h11.next_event()
            if event is h11.NEED_DATA:
                return
            if not isinstance(event, h11.Request):
                raise ContractError(f"client output starts with {event!r}")
            self._check_request(event)
            if not isinstance(self._h11.next_event(), h11.EndOfMessage):
                raise ContractError("upgrade request with a body")
        except h11.RemoteProtocolError as exc:
            raise ContractError(f"client output is not a valid HTTP request: {exc}") from None
        self.request = event
        trailing, _ = self._h11.trailing_data
        if self._agreed is not None:
            self._start_frames(event)
            assert self.frames is not None
            self.frames.feed(trailing)
        elif trailing:
            raise ContractError(f"client wrote frames before it opened: {trailing[:32]!r}")

    def finish(self) -> None:
        if self.request is None:
            raise ContractError("client never wrote a whole upgrade request")
        if self.frames is not None:
            self.frames.finish()

    def _start_frames(self, request: h11.Request) -> None:
        extensions = self._agreed or ()
        deflate = None
        if extensions:
            offers = _values(list(request.headers), b"sec-websocket-extensions")
            if len(extensions) != 1 or not any("permessage-deflate" in o for o in offers):
                raise ContractError(f"client agreed to extensions it did not offer: {extensions}")
            deflate = parse_deflate_agreement(extensions[0], sender_is_server=False)
        self.frames = FrameReader(masked=True, deflate=deflate)

    @staticmethod
    def _check_request(request: h11.Request) -> None:
        headers = list(request.headers)
        if request.method != b"GET" or request.http_version != b"1.1":
            raise ContractError(f"upgrade with {request.method!r} HTTP/{request.http_version!r}")
        if len(_values(headers, b"host")) != 1:
            raise ContractError("upgrade request without exactly one Host")
        if "websocket" not in _tokens(headers, b"upgrade"):
            raise ContractError("upgrade request without 'Upgrade: websocket'")
        if "upgrade" not in _tokens(headers, b"connection"):
            raise ContractError("upgrade request without 'Connection: Upgrade'")
        if _values(headers, b"sec-websocket-version") != ["13"]:
            raise ContractError("upgrade request without 'Sec-WebSocket-Version: 13'")
        keys = _values(headers, b"sec-websocket-key")
        try:
            raw = base64.b64decode(keys[0].encode("ascii"), validate=True) if keys else b""
        except (binascii.Error, UnicodeEncodeError):
            raw = b""
        if len(keys) != 1 or len(raw) != 16:
            raise ContractError(f"bad Sec-WebSocket-Key {keys!r}")
