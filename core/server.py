"""Server side: read the request head, then accept, reject or respond.

A head that arrives whole and clean is read in one pass (``http_head``);
any other goes through h11, which also gives every malformed-request answer.

A WebSocket upgrade is reported as ``HandshakeRequest``; anything else that
parses as HTTP is reported as ``HttpRequest`` (health checks, metrics, a demo
page). Malformed requests are answered with 400, oversized heads with 414 or
431 (see ``Limits``), by the machine itself; they are never reported as
requests.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from enum import Enum, auto

import h11

from .connection import Clock, Connection, RandomSource, State
from .deflate import negotiate_server
from .errors import LocalProtocolError
from .events import Closed, HandshakeRequest, Headers, HttpRequest, Side
from .handshake import (
    HandshakeFailure,
    http_response,
    is_upgrade_request,
    parse_upgrade_request,
    upgrade_fields,
    upgrade_response,
)
from .hosts import normalize_hosts
from .http_head import RequestHead, from_h11, parse_common_head
from .limits import Limits
from .request_head import HeadScanner

__all__ = ["HOST_REFUSED", "ServerConnection"]

_HOST_BODY = b"host not allowed"
#: The ``Closed.reason`` of a request refused by the Host allowlist (adapters log it).
HOST_REFUSED = f"HTTP 403: {_HOST_BODY.decode()}"


class _Pending(Enum):
    NOTHING = auto()
    UPGRADE = auto()
    HTTP = auto()


class ServerConnection(Connection):
    """One server-side connection, from the first request byte to the last frame.

    ``compression`` enables permessage-deflate when the client offers it.
    ``principal`` is whatever the application passed to ``accept`` (the hub
    uses it to route messages per user).

    ``allowed_hosts``: ``None`` accepts any ``Host``; otherwise a collection
    of exact ``host[:port]`` values (compared case-insensitively, e.g.
    ``hosts.loopback_hosts(port)``), and any request, upgrade or plain HTTP,
    whose ``Host`` is not one of them is answered 403 "host not allowed"
    without being reported (DNS rebinding, see ``hosts``).
    """

    is_client = False

    __slots__ = (
        "_early",
        "_h11",
        "_head",
        "_head_only",
        "_key",
        "_pending",
        "allowed_hosts",
        "compression",
        "principal",
        "request",
    )

    def __init__(
        self,
        *,
        limits: Limits | None = None,
        compression: bool = False,
        clock: Clock,
        random: RandomSource = os.urandom,
        allowed_hosts: Iterable[str] | None = None,
    ) -> None:
        super().__init__(limits=limits or Limits(), clock=clock, random=random)
        self.compression = compression
        self.allowed_hosts = None if allowed_hosts is None else normalize_hosts(allowed_hosts)
        self.principal: object = None
        self.request: HandshakeRequest | None = None
        # The h11 parser and the head scanner exist only while a head is read
        # the slow way (``_receive_handshake``); an idle connection keeps neither.
        self._h11: h11.Connection | None = None
        self._head: HeadScanner | None = None
        self._pending = _Pending.NOTHING
        self._key = ""
        self._early = bytearray()
        self._head_only = False  # the pending plain request is a HEAD

    # -- handshake input -------------------------------------------------

    def _receive_handshake(self, data: bytes) -> None:
        if self._state is State.DECIDING:
            # Frames sent before our 101 (pipelined): keep them, within reason.
            if self._pending is _Pending.UPGRADE:
                self._early += data
                self._check_early()
            return
        parser = self._h11
        if parser is None:
            common = parse_common_head(data, self.limits)
            if common is not None:
                head, end = common
                self._on_request(head, data[end:])
                return
            limits = self.limits
            parser = self._h11 = h11.Connection(
                h11.SERVER, max_incomplete_event_size=limits.max_head_size
            )
            self._head = HeadScanner(
                max_request_line=limits.max_request_line,
                max_header_size=limits.max_header_size,
                max_header_count=limits.max_header_count,
                max_head_size=limits.max_head_size,
            )
        # The head limits are checked first, byte by byte; h11 then parses only
        # the bytes before a breaking one, so an error it finds there wins, as it
        # would have had the bytes come one at a time.
        assert self._head is not None
        allowed, violation = self._head.feed(data)
        if violation is not None:
            data = data[:allowed]
        if data:  # h11 reads b"" as end of stream
            parser.receive_data(data)
        try:
            event = parser.next_event()
        except h11.RemoteProtocolError:
            # A fixed text: echoing h11's message would reflect the client's
            # bytes and vary with how they were split.
            self._answer(400, b"malformed HTTP request", (), clean=False)
            return
        if event is h11.NEED_DATA:
            if violation is not None:
                self._answer(violation.status, violation.reason.encode(), (), clean=False)
            return
        if isinstance(event, h11.Request):
            self._on_request(from_h11(event), parser.trailing_data[0])
        else:  # pragma: no cover - h11 yields only Request first for a server
            self._answer(400, b"unexpected HTTP event", (), clean=False)

    def _check_early(self) -> None:
        if len(self._early) > self.limits.max_message_size + self.limits.max_head_size:
            self._answer(413, b"too much data before the handshake completed", ())

    def _on_request(self, request: RequestHead, trailing: bytes) -> None:
        """A whole head was read; ``trailing`` are the bytes after it."""
        headers = request.headers
        self._transition(State.DECIDING)
        if not request.http_version.startswith("1."):
            # RFC 9110 §15.6.6: a major version we do not speak.
            self._answer(505, b"HTTP version not supported", (), clean=False)
            return
        fields = upgrade_fields(headers)
        if self.allowed_hosts is not None:
            # h11 has already refused a repeated Host (RFC 9112 §3.2: 400).
            hosts = fields.get("host", ())
            if len(hosts) != 1 or hosts[0].strip().lower() not in self.allowed_hosts:
                self._answer(403, _HOST_BODY, ())
                return
        if not is_upgrade_request(headers, fields):
            path, _, query = request.target.partition("?")
            self._pending = _Pending.HTTP
            method = request.method
            self._head_only = method == "HEAD"
            self._events.append(HttpRequest(method=method, path=path, query=query, headers=headers))
            return
        parsed = parse_upgrade_request(request, fields)
        if isinstance(parsed, HandshakeFailure):
            self._answer(parsed.status, parsed.reason.encode(), parsed.headers, clean=False)
            return
        self.request, self._key = parsed
        self._pending = _Pending.UPGRADE
        self._early += trailing
        self._events.append(self.request)
        self._check_early()

    def _handshake_timed_out(self) -> None:
        if self._state is State.DECIDING:
            self._answer(503, b"handshake decision timed out", (), clean=False)
        else:
            self._answer(408, b"handshake timed out", (), clean=False)

    # -- application decisions -------------------------------------------

    def accept(
        self,
        principal: object = None,
        *,
        subprotocol: str | None = None,
        headers: Headers = (),
    ) -> None:
        """Complete the upgrade (101). ``subprotocol`` must be one the client offered."""
        if self._state is not State.DECIDING or self._pending is not _Pending.UPGRADE:
            raise LocalProtocolError(f"no upgrade request to accept ({self._state.name})")
        assert self.request is not None
        if subprotocol is not None and subprotocol not in self.request.subprotocols:
            raise LocalProtocolError(f"subprotocol {subprotocol!r} was not offered")
        agreed = None
        if self.compression and self.request.extensions:
            agreed = negotiate_server(list(self.request.extensions))
        extensions = () if agreed is None else (agreed[1],)
        # Serialize (which validates the caller's headers) before any state change.
        response = upgrade_response(
            self._key, subprotocol, None if agreed is None else agreed[1], headers
        )
        if agreed is not None:
            self._deflate = agreed[0]
        self.principal = principal
        self.subprotocol = subprotocol
        self._pending = _Pending.NOTHING
        self._queue_raw(response)
        early = bytes(self._early)
        self._early.clear()
        self._h11 = self._head = None
        self._open(early, extensions)

    def reject(self, status: int, reason: str = "", *, headers: Headers = ()) -> None:
        """Refuse the upgrade (or any request) with an HTTP status and a text reason."""
        self.respond(status, headers=headers, body=reason.encode("utf-8"))

    def respond(self, status: int, *, headers: Headers = (), body: bytes = b"") -> None:
        """Answer the pending request with a complete HTTP response, then close."""
        if self._state is not State.DECIDING:
            raise LocalProtocolError(f"no request to answer ({self._state.name})")
        if not 200 <= status <= 599:
            raise ValueError(f"status must be 200-599, got {status}")
        http_response(status, headers, body)  # validates the headers before any state change
        self._answer(status, body, headers, clean=True)

    def refuse(self, status: int, reason: str = "") -> None:
        """Answer with an HTTP error now, even before the request has fully arrived.

        For a server that is stopping (503): a client still sending its
        request head gets an answer instead of a dropped connection
        (RFC 9110 allows a server to respond before reading the whole request).
        """
        if self._state not in (State.CONNECTING, State.DECIDING):
            raise LocalProtocolError(f"no handshake to refuse ({self._state.name})")
        if not 400 <= status <= 599:
            raise ValueError(f"status must be 400-599, got {status}")
        self._answer(status, reason.encode("utf-8"), (), clean=False)

    def _answer(self, status: int, body: bytes, headers: Headers, *, clean: bool = True) -> None:
        response = http_response(status, headers, body)
        if self._head_only and body:
            # RFC 9110 §9.3.2: a HEAD response has the headers of the GET one,
            # no body -- whoever answers (the application, a timeout, shutdown).
            response = response[: len(response) - len(body)]
        self._answer_raw(status, response, body, clean=clean)

    def _answer_raw(self, status: int, response: bytes, body: bytes, *, clean: bool = True) -> None:
        self._queue_raw(response)
        self._close_transport = True
        self._pending = _Pending.NOTHING
        reason = (
            f"HTTP {status}: {body[:80].decode('utf-8', 'replace')}" if body else f"HTTP {status}"
        )
        self._finish(Closed(code=1006, reason=reason, clean=clean, initiator=Side.LOCAL))
