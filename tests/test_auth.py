"""Access control at the handshake (core/auth.py): origins and bearer tokens."""

from __future__ import annotations

import asyncio
import inspect

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
    Verifier,
    bearer_token,
    select_subprotocol,
)
from wshub.core.tokens import SignedTokens

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
    req = request(
        authorization="Bearer other",
        subprotocols=(SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX + "s3cret"),
    )
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


# -- signed tokens, verifier protocol, async verifiers -------------------------

KEY = bytes(range(32))
EPOCH = 1_700_000_000.0


def resolve(decision: object) -> object:
    """The verdict of ``authenticate``/``verify_token``, awaiting it if async."""
    if inspect.isawaitable(decision):

        async def wait() -> object:
            return await decision

        return asyncio.run(wait())
    return decision


def signed_policy(clock: FakeClock, *extra: object) -> tuple[AccessPolicy, SignedTokens]:
    signed = SignedTokens({"k1": KEY}, signing_key_id="k1")
    sources = [*extra, signed] if extra else signed
    return AccessPolicy(tokens=sources, clock=clock), signed  # type: ignore[arg-type]


def test_signed_tokens_need_a_clock() -> None:
    signed = SignedTokens({"k1": KEY}, signing_key_id="k1")
    with pytest.raises(ValueError, match="clock"):
        AccessPolicy(tokens=signed)
    with pytest.raises(ValueError, match="clock"):
        AccessPolicy(tokens=[StaticTokens(["x"]), signed])


def test_signed_token_by_header_and_subprotocol() -> None:
    clock = FakeClock(EPOCH)
    access, signed = signed_policy(clock)
    token = signed.mint("carol", ["read"], ttl=60, now=EPOCH)
    expected = Principal(id="carol", scopes=frozenset({"read"}), expires_at=EPOCH + 60)
    assert access.authenticate(request(authorization=f"Bearer {token}")) == expected
    by_subprotocol = request(subprotocols=(SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX + token))
    assert access.authenticate(by_subprotocol) == expected
    assert access.verify_token(token) == expected


def test_expired_signed_token_is_401_token_expired() -> None:
    clock = FakeClock(EPOCH)
    access, signed = signed_policy(clock)
    token = signed.mint("carol", ttl=60, now=EPOCH)
    clock.advance(59.9)
    assert isinstance(access.verify_token(token), Principal)
    clock.advance(0.1)
    for denial in (
        access.verify_token(token),
        access.authenticate(request(authorization=f"Bearer {token}")),
    ):
        assert isinstance(denial, Denial)
        assert (denial.status, denial.reason) == (401, "token expired")
        assert (
            "WWW-Authenticate",
            'Bearer error="invalid_token", error_description="token expired"',
        ) in denial.headers


def test_tampered_or_unknown_signed_token_is_401_invalid() -> None:
    clock = FakeClock(EPOCH)
    access, signed = signed_policy(clock)
    token = signed.mint("carol", ttl=60, now=EPOCH)
    other = SignedTokens({"k2": KEY}, signing_key_id="k2").mint("carol", ttl=60, now=EPOCH)
    for bad in (token[:-1] + ("A" if token[-1] != "A" else "B"), other, "s3cret"):
        denial = access.verify_token(bad)
        assert isinstance(denial, Denial)
        assert (denial.status, denial.reason) == (401, "invalid bearer token")


def test_static_and_signed_tokens_together() -> None:
    clock = FakeClock(EPOCH)
    access, signed = signed_policy(clock, StaticTokens({"s3cret": ALICE}))
    token = signed.mint("carol", ttl=60, now=EPOCH)
    assert access.verify_token("s3cret") == ALICE
    assert access.verify_token(token) == Principal("carol", expires_at=EPOCH + 60)
    clock.advance(60)
    denial = access.verify_token(token)
    assert isinstance(denial, Denial)
    assert denial.reason == "token expired"
    denial = access.verify_token("nope")
    assert isinstance(denial, Denial)
    assert denial.reason == "invalid bearer token"


def test_async_function_verifier_makes_authenticate_awaitable() -> None:
    seen: list[str] = []

    async def lookup(token: str) -> Principal | None:
        seen.append(token)
        return ALICE if token == "db-token" else None

    access = AccessPolicy(tokens=lookup, allowed_origins=["https://app.example"])
    decision = access.authenticate(request(authorization="Bearer db-token"))
    assert inspect.isawaitable(decision)
    assert resolve(decision) == ALICE
    denial = resolve(access.authenticate(request(authorization="Bearer other")))
    assert isinstance(denial, Denial)
    assert (denial.status, denial.reason) == (401, "invalid bearer token")
    assert seen == ["db-token", "other"]
    # Origin and missing-token decisions need no verifier: answered at once.
    assert isinstance(access.authenticate(request(origin="https://evil.test")), Denial)
    assert isinstance(access.authenticate(request()), Denial)
    assert seen == ["db-token", "other"]


def test_sync_function_and_verifier_objects() -> None:
    class Directory:
        def verify(self, token: str) -> Principal | None:
            return BOB if token == "dir" else None

    assert isinstance(Directory(), Verifier)
    access = AccessPolicy(tokens=[Directory(), lambda t: ALICE if t == "fn" else None])
    assert access.verify_token("dir") == BOB
    assert access.verify_token("fn") == ALICE
    assert isinstance(access.verify_token("none"), Denial)


def test_sources_are_tried_in_order_across_sync_and_async() -> None:
    calls: list[str] = []

    class AsyncDirectory:
        def __init__(self, name: str, token: str, principal: Principal) -> None:
            self.name, self.token, self.principal = name, token, principal

        async def verify(self, token: str) -> Principal | None:
            calls.append(self.name)
            return self.principal if token == self.token else None

    def static(token: str) -> Principal | None:
        calls.append("static")
        return ALICE if token == "s" else None

    access = AccessPolicy(
        tokens=[AsyncDirectory("first", "a", BOB), static, AsyncDirectory("last", "z", ALICE)]
    )
    assert resolve(access.verify_token("a")) == BOB
    assert calls == ["first"]
    calls.clear()
    assert resolve(access.verify_token("s")) == ALICE
    assert calls == ["first", "static"]
    calls.clear()
    assert resolve(access.verify_token("z")) == ALICE
    assert calls == ["first", "static", "last"]
    calls.clear()
    denial = resolve(access.verify_token("?"))
    assert isinstance(denial, Denial)
    assert denial.reason == "invalid bearer token"
    # A sync source that answers first never makes the verdict awaitable.
    quick = AccessPolicy(tokens=[static, AsyncDirectory("never", "a", BOB)])
    assert quick.verify_token("s") == ALICE


def test_expired_principal_from_any_verifier_is_refused_when_a_clock_is_given() -> None:
    clock = FakeClock(EPOCH)
    soon = Principal("dave", expires_at=EPOCH + 5)

    async def provider(token: str) -> Principal | None:
        return soon

    with_clock = AccessPolicy(tokens=provider, clock=clock)
    without_clock = AccessPolicy(tokens=provider)
    assert resolve(with_clock.verify_token("t")) == soon
    clock.advance(5)
    denial = resolve(with_clock.verify_token("t"))
    assert isinstance(denial, Denial)
    assert denial.reason == "token expired"
    assert resolve(without_clock.verify_token("t")) == soon  # nothing to compare with


def test_expired_signed_then_async_miss_still_says_expired() -> None:
    clock = FakeClock(EPOCH)
    signed = SignedTokens({"k1": KEY}, signing_key_id="k1")
    token = signed.mint("carol", ttl=1, now=EPOCH)

    async def miss(token: str) -> Principal | None:
        return None

    access = AccessPolicy(tokens=[signed, miss], clock=clock)
    clock.advance(2)
    denial = resolve(access.verify_token(token))
    assert isinstance(denial, Denial)
    assert denial.reason == "token expired"


def test_verifier_returning_something_else_is_a_bug_not_a_principal() -> None:
    access = AccessPolicy(tokens=lambda t: "alice")  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="returned 'alice'"):
        access.verify_token("x")


def test_policy_refuses_things_that_are_not_verifiers() -> None:
    with pytest.raises(TypeError, match="not a token verifier"):
        AccessPolicy(tokens=42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one"):
        AccessPolicy(tokens=[])


def test_verify_token_in_no_auth_mode_is_anonymous() -> None:
    assert AccessPolicy(require_auth=False).verify_token("anything") == Principal("anonymous")


def test_static_tokens_give_no_expiry() -> None:
    found = StaticTokens(["a"]).verify("a")
    assert found is not None
    assert found.expires_at is None
