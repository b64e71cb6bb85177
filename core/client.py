"""Client side: send the upgrade request, check the 101, then speak frames.

Every frame is masked with bytes from the injected random source (RFC 6455
§5.3); the Sec-WebSocket-Key comes from the same source.
"""

from __future__ import annotations

import base64
import os

import h11

from .connection import Clock, Connection, RandomSource, State
from .deflate import client_offer, parse_server_response
from .events import Closed, Headers, Rejected, Side
from .handshake import accept_token, client_request, decode_headers, split_tokens
from .limits import Limits

__all__ = ["ClientConnection"]

_MAX_REJECTION_BODY = 64 * 1024


class ClientConnection(Connection):
    """One client connection; the request is queued for sending at construction."""

    is_client = True

    def __init__(
        self,
        *,
        host: str,
        target: str = "/",
        subprotocols: tuple[str, ...] = (),
        headers: Headers = (),
        compression: bool = False,
        limits: Limits | None = None,
        clock: Clock,
        random: RandomSource = os.urandom,
    ) -> None:
        super().__init__(limits=limits or Limits(), clock=clock, random=random)
        self._key = base64.b64encode(self._random(16)).decode("ascii")
        self._offered_subprotocols = subprotocols
        self._compression = compression
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=self.limits.max_head_size)
        request = client_request(
            host=host,
            target=target,
            key=self._key,
            subprotocols=subprotocols,
            extension_offer=client_offer() if compression else None,
            headers=headers,
        )
        self._queue_raw(self._h11.send(request) or b"")
        self._rejection: h11.Response | None = None
        self._rejection_body = bytearray()
        self._head_bytes = 0

    def _receive_handshake(self, data: bytes) -> None:
        self._head_bytes += len(data)
        self._h11.receive_data(data)
        while self._state is State.CONNECTING:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                self._abort(f"invalid handshake response: {exc}")
                return
            if event is h11.NEED_DATA:
                return
            if isinstance(event, h11.InformationalResponse | h11.Response) and (
                self._head_bytes - len(self._h11.trailing_data[0]) > self.limits.max_head_size
            ):
                # h11 bounds only incomplete heads; apply the limit to complete
                # ones too, so the outcome does not depend on how bytes were split.
                self._abort("handshake response head too large")
                return
            if isinstance(event, h11.InformationalResponse) and event.status_code == 101:
                self._on_switch(event)
            elif isinstance(event, h11.InformationalResponse):
                continue  # 1xx other than 101: keep waiting (RFC 9110 §15.2)
            elif isinstance(event, h11.Response):
                self._rejection = event
            elif isinstance(event, h11.Data):
                room = _MAX_REJECTION_BODY - len(self._rejection_body)
                self._rejection_body += event.data[: max(room, 0)]
            else:  # the rejection is complete (h11 never sees EOF: receive_eof handles it)
                assert isinstance(event, h11.EndOfMessage), event
                self._on_rejected()

    def receive_eof(self) -> None:
        if self._state is State.CONNECTING and self._rejection is not None and not self._eof:
            self._eof = True
            self._close_transport = True
            self._on_rejected()
            return
        super().receive_eof()

    def _on_rejected(self) -> None:
        response = self._rejection
        assert response is not None  # called once a response head came
        self._events.append(
            Rejected(
                status=response.status_code,
                headers=decode_headers(response.headers),
                body=bytes(self._rejection_body),
            )
        )
        self._abort(f"handshake rejected with HTTP {response.status_code}", clean=True)

    def _on_switch(self, response: h11.InformationalResponse) -> None:
        headers = decode_headers(response.headers)
        if not any(t.lower() == "websocket" for t in split_tokens(headers, "upgrade")):
            self._abort("101 response without 'Upgrade: websocket'")
            return
        if not any(t.lower() == "upgrade" for t in split_tokens(headers, "connection")):
            self._abort("101 response without 'Connection: Upgrade'")
            return
        accepts = [v for n, v in headers if n == "sec-websocket-accept"]
        if accepts != [accept_token(self._key)]:
            self._abort("wrong Sec-WebSocket-Accept")
            return
        protocols = split_tokens(headers, "sec-websocket-protocol")
        if len(protocols) > 1 or (protocols and protocols[0] not in self._offered_subprotocols):
            self._abort("server chose a subprotocol we did not offer")
            return
        extensions = tuple(v for n, v in headers if n == "sec-websocket-extensions")
        if extensions:
            params = parse_server_response(list(extensions)) if self._compression else None
            if params is None:
                self._abort("server chose extensions we did not offer")
                return
            self._deflate = params
        self.subprotocol = protocols[0] if protocols else None
        trailing, _closed = self._h11.trailing_data
        self._open(trailing, extensions)

    def _handshake_timed_out(self) -> None:
        self._abort("handshake timed out")

    def _abort(self, reason: str, *, clean: bool = False) -> None:
        self._close_transport = True
        self._finish(Closed(code=1006, reason=reason, clean=clean, initiator=Side.LOCAL))
