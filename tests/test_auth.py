"""Access control at the handshake (core/auth.py): origins and bearer tokens."""

from __future__ import annotations

import pytest
from helpers import FakeClock, upgrade_request
from hypothesis import given, settings
from hypothesis import strategies as st

from wshub.core import HandshakeRequest, ServerConnection
from wshub.core.auth import (
    SUBPROTOCOL,
    TOKEN_SUBPROTOCOL_PREFIX,
    AccessPolicy,
    Denial,
    Principal,
    StaticTokens,
    bearer_token,
    select_subprotocol,
)

ALICE = Principal(id="alice", scopes=frozenset({"read"}))
BOB = Principal(id="bob")


def request(
    *,
    authorization: str | None = None,
    origin: str | None = None,
    subprotocols: tuple[str, ...] = (),
    query: str = "",
) -> HandshakeRequest:
    headers: list[tuple[str, str]] = [("host", "example.com")]
    if authorization is not None:
        headers.append(("authorization", authorization))
    if origin is not None:
        headers.append(("origin", origin))
    return HandshakeRequest(
        method="GET",
        path="/ws",
        query=query,
        host="example.com",
        headers=tuple(headers),
        origin=origin,
        subprotocols=subprotocols,
        extensions=(),
    )


def policy(**kwargs: object) -> AccessPolicy:
    tokens = StaticTokens({"s3cret": ALICE, "other": BOB})
    return AccessPolicy(
        tokens=tokens,
        allowed_origins=["https://app.example", "http://localhost:5173"],
        **kwargs,  # type: ignore[arg-type]
    )


def test_valid_header_token_gives_its_principal() -> None:
    assert policy().authenticate(request(authorization="Bearer s3cret")) == ALICE
    assert policy().authenticate(request(authorization="bearer   other ")) == BOB


@pytest.mark.parametrize("origin", ["https://app.example", "http://localhost:5173"])
def test_allowed_origins(origin: str) -> None:
    assert policy().authenticate(request(authorization="Bearer s3cret", origin=origin)) == ALICE


@pytest.mark.parametrize(
    "origin",
    [
        "https://app.example.evil.test",
        "https://evil.test",
        "http://app.example",  # other scheme
        "https://app.example:8443",  # other port
        "http://localhost:5174",
        "http://localhost",
        "null",
        "",
    ],
)
def test_other_origins_are_403_even_with_a_valid_token(origin: str) -> None:
    denial = policy().authenticate(request(authorization="Bearer s3cret", origin=origin))
    assert isinstance(denial, Denial)
    assert denial.status == 403


def test_missing_origin_is_allowed_but_still_needs_a_token() -> None:
    denial = policy().authenticate(request())
    assert isinstance(denial, Denial)
    assert denial.status == 401
    assert policy().authenticate(request(authorization="Bearer s3cret")) == ALICE


def test_missing_token_is_401_with_www_authenticate() -> None:
    denial = policy().authenticate(request(origin="https://app.example"))
    assert isinstance(denial, Denial)
    assert denial.status == 401
    assert any(name.lower() == "www-authenticate" and "Bearer" in v for name, v in denial.headers)


@pytest.mark.parametrize(
    "authorization", ["Bearer wrong", "Bearer s3cret2", "Bearer S3CRET", "Basic czNjcmV0", "Bearer"]
)
def test_wrong_token_is_401_with_www_authenticate(authorization: str) -> None:
    denial = policy().authenticate(request(authorization=authorization))
    assert isinstance(denial, Denial)
    assert denial.status == 401
    assert any(name.lower() == "www-authenticate" for name, _ in denial.headers)


def test_token_in_subprotocol() -> None:
    req = request(subprotocols=(SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX + "s3cret"))
    assert bearer_token(req) == "s3cret"
    assert policy().authenticate(req) == ALICE


def test_empty_token_subprotocol_is_no_token() -> None:
    req = request(subprotocols=(TOKEN_SUBPROTOCOL_PREFIX,))
    assert bearer_token(req) is None


def test_query_token_only_when_enabled() -> None:
    req = request(query="room=1&token=s3cret")
    assert bearer_token(req) is None
    denial = policy().authenticate(req)
    assert isinstance(denial, Denial)
    assert denial.status == 401
    assert bearer_token(req, allow_query=True) == "s3cret"
    assert policy(allow_query_token=True).authenticate(req) == ALICE


def test_header_token_takes_precedence() -> None:
    req = request(authorization="Bearer other", subprotocols=(TOKEN_SUBPROTOCOL_PREFIX + "s3cret",))
    assert policy().authenticate(req) == BOB


def test_select_subprotocol_never_picks_a_token() -> None:
    token_proto = TOKEN_SUBPROTOCOL_PREFIX + "s3cret"
    req = request(subprotocols=(token_proto, SUBPROTOCOL))
    assert select_subprotocol(req, [token_proto, SUBPROTOCOL]) == SUBPROTOCOL
    assert select_subprotocol(request(subprotocols=(token_proto,)), [token_proto]) is None
    assert select_subprotocol(request(subprotocols=("x",)), [SUBPROTOCOL]) is None


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=12), max_size=6), st.lists(st.text(max_size=12)))
def test_select_subprotocol_property(offered: list[str], supported: list[str]) -> None:
    req = request(subprotocols=tuple(offered))
    chosen = select_subprotocol(req, supported)
    if chosen is not None:
        assert chosen in offered
        assert chosen in supported
        assert not chosen.startswith(TOKEN_SUBPROTOCOL_PREFIX)
        # the first acceptable one in the client's order of preference
        ok = [p for p in offered if p in supported and not p.startswith(TOKEN_SUBPROTOCOL_PREFIX)]
        assert chosen == ok[0]
    else:
        assert all(p not in supported or p.startswith(TOKEN_SUBPROTOCOL_PREFIX) for p in offered)


@pytest.mark.parametrize("tokens", [[], [""], ["ok", ""], {"": ALICE}, {}])
def test_static_tokens_reject_empty(tokens: object) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        StaticTokens(tokens)  # type: ignore[arg-type]


def test_static_tokens_from_iterable() -> None:
    tokens = StaticTokens(["a", "b"])
    found_a, found_b = tokens.verify("a"), tokens.verify("b")
    assert found_a is not None
    assert found_b is not None
    assert found_a != found_b
    assert tokens.verify("") is None
    assert tokens.verify("c") is None
    assert tokens.verify("é") is None


def test_require_auth_needs_tokens() -> None:
    with pytest.raises(ValueError, match="require_auth"):
        AccessPolicy()


def test_explicit_no_auth_mode_still_checks_origin() -> None:
    open_policy = AccessPolicy(require_auth=False, allowed_origins=["https://app.example"])
    assert open_policy.authenticate(request()) == Principal(id="anonymous")
    denial = open_policy.authenticate(request(origin="https://evil.test"))
    assert isinstance(denial, Denial)
    assert denial.status == 403


def test_policy_on_a_request_parsed_by_the_server() -> None:
    conn = ServerConnection(clock=FakeClock())
    conn.receive_data(
        upgrade_request(
            target="/ws?token=x",
            extra=[
                ("Origin", "https://app.example"),
                ("Sec-WebSocket-Protocol", f"{SUBPROTOCOL}, {TOKEN_SUBPROTOCOL_PREFIX}s3cret"),
            ],
        )
    )
    [req] = conn.events_received()
    assert isinstance(req, HandshakeRequest)
    assert policy().authenticate(req) == ALICE
    chosen = select_subprotocol(req, [SUBPROTOCOL])
    conn.accept(ALICE, subprotocol=chosen)
    assert b"Sec-WebSocket-Protocol: wshub.v1\r\n" in conn.data_to_send()


def test_query_token_is_percent_decoded() -> None:
    req = request(query="token=a%2Bb%3D")
    assert bearer_token(req, allow_query=True) == "a+b="


def test_static_tokens_of_different_lengths_all_verify() -> None:
    tokens = StaticTokens({"short": ALICE, "a-much-longer-token-value": Principal(id="bob")})
    assert tokens.verify("short") == ALICE
    assert tokens.verify("a-much-longer-token-value") == Principal(id="bob")
    assert tokens.verify("shor") is None
    assert tokens.verify("") is None
