"""Server side of the opening handshake (RFC 6455 §4.2) and plain HTTP."""

from __future__ import annotations

import base64

import pytest
from helpers import (
    KEY,
    FakeClock,
    closed_events,
    expected_accept,
    open_server,
    upgrade_request,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from wshub.core import (
    Closed,
    HandshakeRequest,
    HttpRequest,
    Limits,
    LocalProtocolError,
    Opened,
    ServerConnection,
    State,
)
from wshub.core.events import Side
from wshub.core.handshake import accept_token, http_response, upgrade_response


def server(**kwargs: object) -> ServerConnection:
    return ServerConnection(clock=FakeClock(), **kwargs)  # type: ignore[arg-type]


def status_of(data: bytes) -> int:
    assert data.startswith(b"HTTP/1.1 "), data[:40]
    return int(data[9:12])


def header_lines(data: bytes) -> list[str]:
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    return head.split("\r\n")[1:]


def refused(request: bytes, limits: Limits | None = None) -> tuple[int, bytes, Closed]:
    """Feed a request that must be refused by the machine itself."""
    conn = server(limits=limits) if limits else server()
    conn.receive_data(request)
    events = conn.events_received()
    assert len(events) == 1, events
    [closed] = events
    assert isinstance(closed, Closed)
    assert closed.initiator is Side.LOCAL
    assert conn.state is State.CLOSED
    assert conn.should_close_transport()
    out = conn.data_to_send()
    return status_of(out), out, closed


def test_valid_upgrade_is_reported_then_accepted() -> None:
    conn = server()
    conn.receive_data(upgrade_request(target="/chat?room=1", extra=[("Origin", "https://a.test")]))
    [request] = conn.events_received()
    assert isinstance(request, HandshakeRequest)
    assert (request.method, request.path, request.query) == ("GET", "/chat", "room=1")
    assert request.host == "example.com"
    assert request.origin == "https://a.test"
    assert request.header("SEC-WEBSOCKET-KEY") == KEY
    assert conn.state is State.DECIDING
    assert conn.data_to_send() == b""
    conn.accept("alice")
    out = conn.data_to_send()
    assert status_of(out) == 101
    assert f"Sec-WebSocket-Accept: {expected_accept(KEY)}" in header_lines(out)
    assert conn.principal == "alice"
    assert conn.events_received() == [Opened(subprotocol=None, extensions=())]
    assert not conn.should_close_transport()


def test_missing_host_is_400() -> None:
    status, _, _ = refused(upgrade_request(omit=["Host"]))
    assert status == 400


def test_repeated_host_is_400() -> None:
    status, _, _ = refused(upgrade_request(extra=[("Host", "other.test")]))
    assert status == 400


@pytest.mark.parametrize("version", ["8", "14", "13, 8"])
def test_wrong_version_is_426_with_supported_version(version: str) -> None:
    request = upgrade_request(
        omit=["Sec-WebSocket-Version"], extra=[("Sec-WebSocket-Version", version)]
    )
    status, out, closed = refused(request)
    assert status == 426
    assert "Sec-WebSocket-Version: 13" in header_lines(out)
    assert not closed.clean


def test_missing_version_is_refused_with_supported_version() -> None:
    status, out, _ = refused(upgrade_request(omit=["Sec-WebSocket-Version"]))
    assert status in (400, 426)
    assert "Sec-WebSocket-Version: 13" in header_lines(out)


@pytest.mark.parametrize(
    "key",
    [
        None,  # missing
        "not base64!!",
        "AAAA",  # valid base64, 3 bytes
        "AAAAAAAAAAAAAAAAAAAAAAAAAAA=",  # 20 bytes
        "AAAAAAAAAAAAAAAAAAAAAA",  # 16 bytes without padding: malformed base64
        "AAAAAAAAAAAAAAAAAAAAAA=\u00e9",
    ],
)
def test_bad_key_is_400(key: str | None) -> None:
    extra = [] if key is None else [("Sec-WebSocket-Key", key)]
    status, _, _ = refused(upgrade_request(omit=["Sec-WebSocket-Key"], extra=extra))
    assert status == 400


def test_repeated_key_is_400() -> None:
    status, _, _ = refused(upgrade_request(extra=[("Sec-WebSocket-Key", KEY)]))
    assert status == 400


def test_sixteen_byte_key_is_accepted() -> None:
    other = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3 example
    conn = server()
    conn.receive_data(
        upgrade_request(omit=["Sec-WebSocket-Key"], extra=[("Sec-WebSocket-Key", other)])
    )
    assert isinstance(conn.events_received()[0], HandshakeRequest)
    conn.accept()
    assert "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in header_lines(conn.data_to_send())


@pytest.mark.parametrize("method", ["POST", "PUT", "HEAD"])
def test_non_get_upgrade_is_405(method: str) -> None:
    status, out, _ = refused(upgrade_request(method=method, extra=[("Content-Length", "0")]))
    assert status == 405
    assert "Allow: GET" in header_lines(out)


def test_http_10_upgrade_is_400() -> None:
    status, _, _ = refused(upgrade_request(version="1.0"))
    assert status == 400


def test_upgrade_without_connection_upgrade_is_400() -> None:
    request = upgrade_request(omit=["Connection"], extra=[("Connection", "keep-alive")])
    status, _, _ = refused(request)
    assert status == 400


def test_connection_header_token_list_is_accepted() -> None:
    conn = server()
    request = upgrade_request(omit=["Connection"], extra=[("Connection", "keep-alive, Upgrade")])
    conn.receive_data(request)
    assert isinstance(conn.events_received()[0], HandshakeRequest)


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n",  # TLS hello
        b"HELLO\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: \x00\r\n\r\n",
    ],
)
def test_garbage_is_400(garbage: bytes) -> None:
    status, _, closed = refused(garbage)
    assert status == 400
    assert not closed.clean


def test_unknown_major_http_version_is_505() -> None:
    status, _, _ = refused(b"GET / HTTP/9.9\r\nHost: x\r\n\r\n")
    assert status == 505


def test_oversized_head_is_431_in_one_chunk() -> None:
    limits = Limits(max_head_size=256)
    request = upgrade_request(extra=[("X-Pad", "a" * 400)])
    status, _, _ = refused(request, limits)
    assert status == 431


def test_oversized_head_is_431_byte_by_byte() -> None:
    conn = server(limits=Limits(max_head_size=256))
    request = upgrade_request(extra=[("X-Pad", "a" * 400)])
    for i in range(len(request)):
        conn.receive_data(request[i : i + 1])
    [closed] = conn.events_received()
    assert isinstance(closed, Closed)
    assert status_of(conn.data_to_send()) == 431


def test_head_exactly_at_limit_is_accepted() -> None:
    request = upgrade_request()
    conn = server(limits=Limits(max_head_size=len(request)))
    conn.receive_data(request)
    assert isinstance(conn.events_received()[0], HandshakeRequest)
    conn = server(limits=Limits(max_head_size=len(request) - 1))
    conn.receive_data(request)
    assert isinstance(conn.events_received()[0], Closed)
    assert status_of(conn.data_to_send()) == 431


def test_plain_get_is_http_request_and_respond_closes() -> None:
    conn = server()
    conn.receive_data(b"GET /health?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n")
    [request] = conn.events_received()
    assert isinstance(request, HttpRequest)
    assert (request.method, request.path, request.query) == ("GET", "/health", "x=1")
    with pytest.raises(LocalProtocolError):
        conn.accept()
    assert conn.state is State.DECIDING
    conn.respond(200, headers=(("Content-Type", "application/json"),), body=b"{}")
    out = conn.data_to_send()
    assert status_of(out) == 200
    assert out.endswith(b"\r\n\r\n{}")
    assert "Content-Length: 2" in header_lines(out)
    [closed] = conn.events_received()
    assert isinstance(closed, Closed)
    assert closed.clean
    assert conn.should_close_transport()


def test_reject_sends_status_and_reason() -> None:
    conn = server()
    conn.receive_data(upgrade_request())
    conn.events_received()
    conn.reject(403, "origin not allowed", headers=(("X-Why", "origin"),))
    out = conn.data_to_send()
    assert status_of(out) == 403
    assert "X-Why: origin" in header_lines(out)
    assert out.endswith(b"origin not allowed")
    [closed] = conn.events_received()
    assert isinstance(closed, Closed)
    assert closed.clean
    assert closed.initiator is Side.LOCAL
    assert conn.state is State.CLOSED


def test_refuse_answers_before_the_request_has_arrived() -> None:
    conn = server()
    conn.receive_data(upgrade_request()[:20])
    conn.refuse(503, "server shutting down")
    out = conn.data_to_send()
    assert status_of(out) == 503
    assert out.endswith(b"server shutting down")
    assert conn.should_close_transport()
    [closed] = conn.events_received()
    assert isinstance(closed, Closed)
    assert not closed.clean
    assert closed.initiator is Side.LOCAL


def test_refuse_after_the_handshake_or_with_a_success_status_raises() -> None:
    conn = server()
    with pytest.raises(ValueError, match="400-599"):
        conn.refuse(200)
    assert conn.state is State.CONNECTING
    opened = open_server()
    with pytest.raises(LocalProtocolError):
        opened.refuse(503)
    assert opened.state is State.OPEN


def test_decisions_before_a_request_raise_and_change_nothing() -> None:
    conn = server()
    for call in (conn.accept, lambda: conn.reject(400), lambda: conn.respond(200)):
        with pytest.raises(LocalProtocolError):
            call()
        assert conn.state is State.CONNECTING
        assert conn.data_to_send() == b""
        assert conn.events_received() == []
    with pytest.raises(LocalProtocolError):
        conn.send_text("x")
    with pytest.raises(LocalProtocolError):
        conn.close()


def test_decisions_after_accept_raise_and_change_nothing() -> None:
    conn = open_server()
    for call in (conn.accept, lambda: conn.reject(400), lambda: conn.respond(200)):
        with pytest.raises(LocalProtocolError):
            call()
        assert conn.state is State.OPEN
        assert conn.data_to_send() == b""


def test_subprotocol_not_offered_raises_and_leaves_state() -> None:
    conn = server()
    conn.receive_data(upgrade_request(extra=[("Sec-WebSocket-Protocol", "chat, wshub.v1")]))
    [request] = conn.events_received()
    assert isinstance(request, HandshakeRequest)
    assert request.subprotocols == ("chat", "wshub.v1")
    with pytest.raises(LocalProtocolError):
        conn.accept(subprotocol="other")
    assert conn.state is State.DECIDING
    assert conn.data_to_send() == b""
    conn.accept(subprotocol="wshub.v1")
    assert "Sec-WebSocket-Protocol: wshub.v1" in header_lines(conn.data_to_send())
    assert conn.subprotocol == "wshub.v1"


def test_bad_response_arguments_raise_and_leave_state() -> None:
    conn = server()
    conn.receive_data(upgrade_request())
    conn.events_received()
    with pytest.raises(ValueError, match="status"):
        conn.respond(101)
    with pytest.raises(ValueError, match="CR"):
        conn.reject(400, headers=(("X-Evil", "a\r\nSet-Cookie: x"),))
    with pytest.raises(ValueError, match="CR"):
        conn.accept(headers=(("X-Evil", "a\r\nb"),))
    assert conn.state is State.DECIDING
    assert conn.deflate is None
    assert conn.data_to_send() == b""
    assert conn.events_received() == []
    conn.accept()
    assert status_of(conn.data_to_send()) == 101


def test_accept_with_bad_headers_keeps_deflate_unset() -> None:
    conn = server(compression=True)
    conn.receive_data(upgrade_request(extra=[("Sec-WebSocket-Extensions", "permessage-deflate")]))
    conn.events_received()
    with pytest.raises(ValueError, match="CR"):
        conn.accept(headers=(("X-Evil", "a\nb"),))
    assert conn.deflate is None
    assert conn.state is State.DECIDING


def test_pipelined_frames_after_the_request_are_delivered_after_accept() -> None:
    from helpers import client_frame

    conn = server()
    data = upgrade_request() + client_frame(0x1, b"early")
    conn.receive_data(data[:-3])
    conn.receive_data(data[-3:])
    [request] = conn.events_received()
    assert isinstance(request, HandshakeRequest)
    conn.accept()
    events = conn.events_received()
    assert [type(e).__name__ for e in events] == ["Opened", "TextMessage"]


@pytest.mark.parametrize("split", [True, False])
def test_pipelined_data_before_accept_is_bounded(split: bool) -> None:
    limits = Limits(max_message_size=1000, max_head_size=1000)
    conn = server(limits=limits)
    request = upgrade_request()
    flood = b"\x00" * 2001
    if split:
        conn.receive_data(request)
        conn.receive_data(flood)
    else:
        conn.receive_data(request + flood)
    events = conn.events_received()
    assert isinstance(events[0], HandshakeRequest)
    assert len(closed_events(events)) == 1
    assert conn.state is State.CLOSED
    assert status_of(conn.data_to_send()) == 413
    with pytest.raises(LocalProtocolError):
        conn.accept()


def test_pipelined_data_up_to_the_bound_is_kept() -> None:
    limits = Limits(max_message_size=1000, max_head_size=1000)
    conn = server(limits=limits)
    conn.receive_data(upgrade_request() + b"\x00" * 2000)
    assert conn.state is State.DECIDING


def test_receive_eof_during_handshake_closes_once() -> None:
    conn = server()
    conn.receive_data(upgrade_request()[:10])
    conn.receive_eof()
    conn.receive_eof()
    events = conn.events_received()
    assert events == [Closed(code=1006, reason="connection lost during handshake")]
    conn.receive_data(b"more")
    assert conn.events_received() == []


def test_accept_after_eof_raises() -> None:
    conn = server()
    conn.receive_data(upgrade_request())
    conn.receive_eof()
    with pytest.raises(LocalProtocolError):
        conn.accept()
    assert len(closed_events(conn.events_received())) == 1


def _http_server() -> ServerConnection:
    conn = server()
    conn.receive_data(b"GET /x HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert isinstance(conn.events_received()[0], HttpRequest)
    return conn


@pytest.mark.parametrize(
    "headers",
    [
        (("Content-Length", "3"),),
        (("Content-Length", "2"), ("Content-Length", "2")),
        (("Transfer-Encoding", "chunked"),),
        (("Bad Name", "x"),),
        (("X-A:", "x"),),
        (("", "x"),),
        (("X-Uni", "\u2603"),),
    ],
)
def test_respond_refuses_ambiguous_or_malformed_headers(
    headers: tuple[tuple[str, str], ...],
) -> None:
    conn = _http_server()
    with pytest.raises(ValueError, match=r"(?i)header|length|encoding|latin"):
        conn.respond(200, headers=headers, body=b"ok")
    assert conn.state is State.DECIDING
    assert conn.data_to_send() == b""


def test_respond_with_matching_content_length_sends_one() -> None:
    conn = _http_server()
    conn.respond(200, headers=(("Content-Length", "2"),), body=b"ok")
    out = conn.data_to_send()
    assert [h for h in header_lines(out) if h.lower().startswith("content-length")] == [
        "Content-Length: 2"
    ]


def test_head_response_has_length_but_no_body() -> None:
    conn = server()
    conn.receive_data(b"HEAD /health HTTP/1.1\r\nHost: example.com\r\n\r\n")
    [request] = conn.events_received()
    assert isinstance(request, HttpRequest)
    assert request.method == "HEAD"
    conn.respond(200, body=b"healthy")
    out = conn.data_to_send()
    assert out.endswith(b"\r\n\r\n")
    assert "Content-Length: 7" in header_lines(out)
    [closed] = conn.events_received()
    assert isinstance(closed, Closed)
    assert closed.clean


def test_repeated_origin_is_400() -> None:
    request = upgrade_request(
        extra=[("Origin", "https://ok.test"), ("Origin", "https://evil.test")]
    )
    status, _, _ = refused(request)
    assert status == 400


@pytest.mark.parametrize(
    "extra",
    [
        [("Content-Length", "5")],
        [("Transfer-Encoding", "chunked")],
        [("Content-Length", "0"), ("Transfer-Encoding", "chunked")],
    ],
)
def test_upgrade_with_a_body_is_400(extra: list[tuple[str, str]]) -> None:
    server = ServerConnection(clock=FakeClock())
    server.receive_data(upgrade_request(extra=extra) + b"hello")
    [closed] = server.events_received()
    assert isinstance(closed, Closed)
    assert closed.reason == "HTTP 400: WebSocket upgrade must not have a body"
    status = server.data_to_send().split(b"\r\n", 1)[0]
    assert status == b"HTTP/1.1 400 Bad Request"


def test_upgrade_with_content_length_zero_is_accepted() -> None:
    server = ServerConnection(clock=FakeClock())
    server.receive_data(upgrade_request(extra=[("Content-Length", "0")]))
    [request] = server.events_received()
    assert isinstance(request, HandshakeRequest)


# -- the 101 answer, joined directly when the application adds no header -----------

_PROTOCOL_TOKENS = st.text(
    st.sampled_from(
        "-!#$%&'*+.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(
    key=st.binary(min_size=16, max_size=16).map(lambda b: base64.b64encode(b).decode()),
    subprotocol=st.none() | _PROTOCOL_TOKENS,
    extension=st.none()
    | st.sampled_from(["permessage-deflate", "permessage-deflate; server_max_window_bits=12"]),
)
def test_the_joined_101_is_the_checked_one(
    key: str, subprotocol: str | None, extension: str | None
) -> None:
    fields = [("Upgrade", "websocket"), ("Connection", "Upgrade")]
    fields.append(("Sec-WebSocket-Accept", accept_token(key)))
    if subprotocol is not None:
        fields.append(("Sec-WebSocket-Protocol", subprotocol))
    if extension is not None:
        fields.append(("Sec-WebSocket-Extensions", extension))
    assert upgrade_response(key, subprotocol, extension) == http_response(101, tuple(fields))
    with pytest.raises(ValueError, match="invalid header name"):
        upgrade_response(key, subprotocol, extension, (("Bad Name", "x"),))
    extra = (("X-Trace", "1"),)
    assert upgrade_response(key, subprotocol, extension, extra) == http_response(
        101, (*fields, *extra)
    )
