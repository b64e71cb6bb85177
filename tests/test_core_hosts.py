"""Host allowlist against DNS rebinding (core/hosts.py, ServerConnection(allowed_hosts=))."""

from __future__ import annotations

import pytest
from helpers import FakeClock, upgrade_request
from hypothesis import given, settings
from hypothesis import strategies as st

from wshub.core import (
    Closed,
    HandshakeRequest,
    HttpRequest,
    ServerConnection,
    is_loopback,
    loopback_hosts,
)
from wshub.core.hosts import normalize_hosts

PORT = 8765


def answer(data: bytes, allowed: object) -> tuple[type, int | None, bytes]:
    """(first event type, HTTP status written or None, response body)."""
    conn = ServerConnection(clock=FakeClock(), allowed_hosts=allowed)  # type: ignore[arg-type]
    conn.receive_data(data)
    events = conn.events_received()
    assert events, "no decision"
    out = conn.data_to_send()
    status = int(out[9:12]) if out else None
    return type(events[0]), status, out.split(b"\r\n\r\n", 1)[-1]


def upgrade(host: str, **kwargs: object) -> bytes:
    return upgrade_request(
        headers=[
            ("Host", host),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "AAECAwQFBgcICQoLDA0ODw=="),
            ("Sec-WebSocket-Version", "13"),
        ],
        **kwargs,  # type: ignore[arg-type]
    )


def test_loopback_hosts_name_the_port() -> None:
    assert loopback_hosts(PORT) == {"localhost:8765", "127.0.0.1:8765", "[::1]:8765"}


@pytest.mark.parametrize("port", [80, 443])
def test_default_ports_may_be_omitted(port: int) -> None:
    assert loopback_hosts(port) == {
        f"localhost:{port}",
        f"127.0.0.1:{port}",
        f"[::1]:{port}",
        "localhost",
        "127.0.0.1",
        "[::1]",
    }


@pytest.mark.parametrize("port", [0, -1, 65536, "80", 80.0])
def test_loopback_hosts_needs_a_real_port(port: object) -> None:
    with pytest.raises(ValueError, match="port"):
        loopback_hosts(port)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "LocalHost",
        "localhost.",
        "127.0.0.1",
        "127.8.9.10",
        "::1",
        "[::1]",
        " 127.0.0.1 ",
        "::ffff:127.0.0.1",
    ],
)
def test_is_loopback(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize(
    "host",
    [
        "",
        "0.0.0.0",
        "::",
        "[::]",
        "192.168.1.2",
        "10.0.0.1",
        "::ffff:10.0.0.1",
        "example.com",
        "localhost.evil.example",
        "127.0.0.1.nip.io",
        "fe80::1%eth0",
    ],
)
def test_is_not_loopback(host: str) -> None:
    assert not is_loopback(host)


@pytest.mark.parametrize(
    "host", ["localhost:8765", "LOCALHOST:8765", "127.0.0.1:8765", "[::1]:8765"]
)
def test_allowed_hosts_pass(host: str) -> None:
    kind, status, _ = answer(upgrade(host), loopback_hosts(PORT))
    assert (kind, status) == (HandshakeRequest, None)


@pytest.mark.parametrize(
    "host",
    [
        "evil.example:8765",  # DNS rebinding: the attacker's name, resolved to 127.0.0.1
        "evil.example",
        "localhost",  # the port is not the default one
        "localhost:8766",
        "localhost.:8765",
        "127.0.0.2:8765",
        "localhost:8765.evil.example",
    ],
)
def test_other_hosts_get_403_before_any_handler(host: str) -> None:
    kind, status, body = answer(upgrade(host), loopback_hosts(PORT))
    assert (kind, status, body) == (Closed, 403, b"host not allowed")


def test_rebinding_request_with_matching_origin_is_still_refused() -> None:
    data = upgrade("evil.example:8765", extra=[("Origin", "http://evil.example:8765")])
    assert answer(data, loopback_hosts(PORT))[:2] == (Closed, 403)


def test_plain_http_requests_are_checked_too() -> None:
    allowed = loopback_hosts(PORT)
    ok = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:8765\r\n\r\n"
    assert answer(ok, allowed)[:2] == (HttpRequest, None)
    bad = b"GET /health HTTP/1.1\r\nHost: evil.example:8765\r\n\r\n"
    assert answer(bad, allowed) == (Closed, 403, b"host not allowed")


def test_missing_host_is_403_and_repeated_host_is_400() -> None:
    allowed = loopback_hosts(PORT)
    assert answer(b"GET / HTTP/1.0\r\n\r\n", allowed)[:2] == (Closed, 403)
    assert answer(b"GET / HTTP/1.0\r\n\r\n", None)[:2] == (HttpRequest, None)
    twice = b"GET / HTTP/1.1\r\nHost: localhost:8765\r\nHost: evil.example\r\n\r\n"
    assert answer(twice, allowed)[:2] == (Closed, 400)  # refused by h11 (RFC 9112 §3.2)


def test_none_allows_any_host_and_empty_allows_none() -> None:
    assert answer(upgrade("anything.example"), None)[0] is HandshakeRequest
    assert answer(upgrade("localhost:8765"), [])[:2] == (Closed, 403)


def test_allowlist_arguments_are_checked() -> None:
    with pytest.raises(TypeError, match="not one string"):
        ServerConnection(clock=FakeClock(), allowed_hosts="localhost:8765")
    for bad in ("", " ", "a b:80"):
        with pytest.raises(ValueError, match="host"):
            normalize_hosts([bad])
    assert normalize_hosts([" LocalHost:80 ", "x"]) == {"localhost:80", "x"}


_host_chars = st.sampled_from("abcXYZ019.-:[]")
_hosts = st.text(_host_chars, min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(st.frozensets(_hosts, max_size=4), _hosts, st.booleans())
def test_exactly_the_listed_hosts_pass_case_insensitively(
    allowed: frozenset[str], other: str, pick_listed: bool
) -> None:
    if pick_listed and allowed:
        host = sorted(allowed)[0].swapcase()
    else:
        host = other
    kind, status, _ = answer(upgrade(host), allowed)
    if host.lower() in {h.lower() for h in allowed}:
        assert (kind, status) == (HandshakeRequest, None)
    else:
        assert (kind, status) == (Closed, 403)


def test_a_normalized_allowlist_is_shared_not_rebuilt() -> None:
    from wshub.core import ServerConnection
    from wshub.core.hosts import HostAllowlist

    allowlist = normalize_hosts(["LocalHost:8000", " 127.0.0.1:8000 "])
    assert isinstance(allowlist, HostAllowlist)
    assert allowlist == {"localhost:8000", "127.0.0.1:8000"}
    assert normalize_hosts(allowlist) is allowlist
    loopback = loopback_hosts(8000)
    conn = ServerConnection(clock=lambda: 0.0, allowed_hosts=loopback)
    assert conn.allowed_hosts is loopback
