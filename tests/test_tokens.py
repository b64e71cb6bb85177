"""Signed expiring tokens (core/tokens.py): format, round trip, tampering, rotation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re

import pytest
from helpers import FakeClock, upgrade_request
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from wshub.core import HandshakeRequest, ServerConnection
from wshub.core import tokens as tokens_module
from wshub.core.auth import TOKEN_SUBPROTOCOL_PREFIX, Principal, bearer_token
from wshub.core.tokens import (
    MAX_TOKEN_LENGTH,
    SignedTokens,
    TokenRejection,
    b64url_decode,
    b64url_encode,
    format_key_file,
    parse_key_file,
)

KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 132))
NOW = 1_700_000_000.0
# RFC 9110 §5.6.2 token: 1*tchar
TCHAR = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

ids = st.text(min_size=1, max_size=40)
scope_sets = st.frozensets(st.text(max_size=12), max_size=6)
expiries = st.integers(min_value=1, max_value=2**53 - 1)


def ring(signing: str = "a", **keys: bytes) -> SignedTokens:
    return SignedTokens(keys or {"a": KEY_A}, signing_key_id=signing)


def independent_signature(key: bytes, signed: str) -> str:
    """HMAC-SHA256, base64url without padding, computed without the code under test."""
    digest = hmac.new(key, signed.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


# -- format ----------------------------------------------------------------


def test_token_layout_matches_the_documented_format() -> None:
    token = ring().mint("alice", ["read", "write"], expires_at=2_000_000_000)
    version, key_id, claims, signature = token.split(".")
    assert (version, key_id) == ("wst1", "a")
    decoded = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    assert decoded == {"exp": 2_000_000_000, "scp": ["read", "write"], "sub": "alice"}
    assert signature == independent_signature(KEY_A, f"wst1.a.{claims}")


@settings(max_examples=200, deadline=None)
@given(ids, scope_sets, expiries)
def test_minted_tokens_are_http_tokens(principal: str, scopes: frozenset[str], exp: int) -> None:
    token = ring().mint(principal, scopes, expires_at=exp)
    assert TCHAR.fullmatch(token), token
    assert not set(token) & set("=+/ ")


@settings(max_examples=50, deadline=None)
@given(ids, scope_sets)
def test_token_survives_as_a_subprotocol_through_the_server(
    principal: str, scopes: frozenset[str]
) -> None:
    token = ring().mint(principal, scopes, ttl=60, now=NOW)
    conn = ServerConnection(clock=FakeClock())
    conn.receive_data(
        upgrade_request(extra=[("Sec-WebSocket-Protocol", TOKEN_SUBPROTOCOL_PREFIX + token)])
    )
    [request] = conn.events_received()
    assert isinstance(request, HandshakeRequest)
    assert bearer_token(request) == token
    assert ring().verify(token, NOW) == Principal(principal, scopes, NOW + 60)


# -- round trip and expiry -----------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(ids, scope_sets, st.integers(1, 2**40), st.integers(0, 999))
def test_round_trip(principal: str, scopes: frozenset[str], exp: int, millis: int) -> None:
    tokens = ring()
    before = millis / 1000
    token = tokens.mint(principal, scopes, expires_at=exp + before)  # rounded down to exp
    now = exp - 1 + before
    assert tokens.verify(token, now) == Principal(principal, scopes, float(exp))
    assert tokens.check(token, exp) is TokenRejection.EXPIRED
    assert tokens.verify(token, exp) is None


def test_ttl_counts_from_now_and_rounds_down() -> None:
    tokens = ring()
    token = tokens.mint("bob", ttl=30.9, now=NOW + 0.5)
    principal = tokens.verify(token, NOW)
    assert principal is not None
    assert principal.expires_at == NOW + 31  # floor(NOW + 31.4)
    assert tokens.verify(token, NOW + 30.999) is not None
    assert tokens.check(token, NOW + 31) is TokenRejection.EXPIRED


# -- tampering -------------------------------------------------------------------

_printable = st.characters(min_codepoint=0, max_codepoint=0x2FF)


@settings(max_examples=500, deadline=None)
@given(ids, scope_sets, st.data())
def test_any_single_character_change_is_rejected(
    principal: str, scopes: frozenset[str], data: st.DataObject
) -> None:
    tokens = ring()
    token = tokens.mint(principal, scopes, expires_at=NOW + 100)
    i = data.draw(st.integers(0, len(token) - 1))
    kind = data.draw(st.sampled_from(["replace", "delete", "insert"]))
    if kind == "replace":
        char = data.draw(_printable)
        assume(char != token[i])
        tampered = token[:i] + char + token[i + 1 :]
    elif kind == "delete":
        tampered = token[:i] + token[i + 1 :]
    else:
        tampered = token[:i] + data.draw(_printable) + token[i:]
    assert tampered != token
    assert not isinstance(tokens.check(tampered, NOW), Principal)
    assert tokens.verify(tampered, NOW) is None


def test_stray_low_bits_in_the_last_signature_character_are_rejected() -> None:
    """base64 'A' and 'B' may decode alike in the last position; we compare text."""
    tokens = ring()
    token = tokens.mint("x", expires_at=NOW + 100)
    last = token[-1]
    for other in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_":
        if other != last:
            assert tokens.check(token[:-1] + other, NOW) is TokenRejection.BAD_SIGNATURE


def test_claims_re_signed_with_another_key_are_rejected() -> None:
    token = ring().mint("alice", ["read"], expires_at=NOW + 100)
    version, key_id, _, _ = token.split(".")
    forged_claims = b64url_encode(b'{"exp":9999999999,"scp":["admin"],"sub":"alice"}')
    forged = f"{version}.{key_id}.{forged_claims}"
    forged += "." + independent_signature(b"attacker key, 32 bytes long....", forged)
    assert ring().check(forged, NOW) is TokenRejection.BAD_SIGNATURE


@pytest.mark.parametrize(
    "token",
    [
        "",
        "wst1",
        "wst1.a.b",
        "wst1.a.b.c.d",
        "wst2.a.e30.sig",
        "wst1..e30.sig",
        "wst1.a.e30.sig\u00e9",
        "x" * (MAX_TOKEN_LENGTH + 1),
    ],
)
def test_malformed_tokens(token: str) -> None:
    assert ring().check(token, NOW) is TokenRejection.MALFORMED


@pytest.mark.parametrize(
    "claims",
    [
        b"[]",
        b"not json",
        b'{"exp":1,"scp":[]}',
        b'{"exp":1.5,"scp":[],"sub":"a"}',
        b'{"exp":true,"scp":[],"sub":"a"}',
        b'{"exp":-1,"scp":[],"sub":"a"}',
        b'{"exp":1,"scp":"read","sub":"a"}',
        b'{"exp":1,"scp":[1],"sub":"a"}',
        b'{"exp":1,"scp":[],"sub":""}',
        b'{"exp":1,"scp":[],"sub":"a","extra":1}',
    ],
)
def test_correctly_signed_but_malformed_claims_are_refused(claims: bytes) -> None:
    """Only a key holder could make these; they must still not crash or pass."""
    signed = f"wst1.a.{b64url_encode(claims)}"
    token = f"{signed}.{independent_signature(KEY_A, signed)}"
    assert ring().check(token, 0) is TokenRejection.MALFORMED


def test_signature_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return original(a, b)

    monkeypatch.setattr(tokens_module.hmac, "compare_digest", spy)
    tokens = ring()
    token = tokens.mint("x", expires_at=NOW + 1)
    assert tokens.verify(token[:-2] + "AA", NOW) is None
    assert tokens.verify(token, NOW) is not None
    assert len(calls) == 2


# -- keys and rotation -----------------------------------------------------------


def test_rotation_old_tokens_verify_new_ones_are_signed_with_the_new_key() -> None:
    old = ring("a", a=KEY_A)
    rotated = ring("b", a=KEY_A, b=KEY_B)
    old_token = old.mint("alice", expires_at=NOW + 10)
    new_token = rotated.mint("alice", expires_at=NOW + 10)
    assert new_token.split(".")[1] == "b"
    assert rotated.verify(old_token, NOW) is not None
    assert rotated.verify(new_token, NOW) is not None
    assert old.check(new_token, NOW) is TokenRejection.UNKNOWN_KEY
    retired = ring("b", b=KEY_B)
    assert retired.check(old_token, NOW) is TokenRejection.UNKNOWN_KEY
    assert retired.key_ids == frozenset({"b"})


def test_same_key_id_with_another_key_is_a_bad_signature() -> None:
    token = ring("a", a=KEY_A).mint("alice", expires_at=NOW + 10)
    assert ring("a", a=KEY_B).check(token, NOW) is TokenRejection.BAD_SIGNATURE


@pytest.mark.parametrize(
    ("keys", "signing", "match"),
    [
        ({}, "a", "at least one key"),
        ({"a": b"short"}, "a", "at least 16 bytes"),
        ({"a": "not bytes" * 4}, "a", "at least 16 bytes"),
        ({"a.b": KEY_A}, "a.b", "key id"),
        ({"": KEY_A}, "", "key id"),
        ({"a" * 65: KEY_A}, "a" * 65, "key id"),
        ({"a": KEY_A}, "b", "not among"),
    ],
)
def test_bad_key_rings(keys: dict[str, bytes], signing: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SignedTokens(keys, signing_key_id=signing)


def test_sixteen_byte_key_is_the_minimum() -> None:
    SignedTokens({"a": bytes(16)}, signing_key_id="a")
    with pytest.raises(ValueError, match="at least 16"):
        SignedTokens({"a": bytes(15)}, signing_key_id="a")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one"),
        ({"ttl": 5, "expires_at": NOW, "now": NOW}, "exactly one"),
        ({"ttl": 5}, "needs now"),
        ({"ttl": 0, "now": NOW}, "positive"),
        ({"ttl": -1, "now": NOW}, "positive"),
        ({"ttl": float("nan"), "now": NOW}, "positive"),
        ({"expires_at": float("inf")}, "expires_at"),
        ({"expires_at": -1}, "expires_at"),
        ({"expires_at": 2.0**53}, "expires_at"),
    ],
)
def test_mint_argument_errors(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ring().mint("alice", **kwargs)


def test_mint_refuses_bad_principals_scopes_and_oversized_tokens() -> None:
    with pytest.raises(ValueError, match="principal_id"):
        ring().mint("", expires_at=NOW)
    with pytest.raises(ValueError, match="scopes"):
        ring().mint("a", [1], expires_at=NOW)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="characters"):
        ring().mint("a", [f"scope-{i}" for i in range(400)], expires_at=NOW)


# -- base64url and key files -----------------------------------------------------


@given(st.binary(max_size=80))
def test_b64url_round_trip(raw: bytes) -> None:
    text = b64url_encode(raw)
    assert "=" not in text
    assert b64url_decode(text) == raw


@pytest.mark.parametrize("text", ["A", "AB=", "AB+/", "AB C", "AR", "AAB", "é"])
def test_b64url_refuses_non_canonical_text(text: str) -> None:
    # "AR" and "AAB" carry stray low bits: "AQ" and "AAA" are the canonical spellings.
    assert b64url_decode(text) is None


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True),
            st.binary(min_size=16, max_size=64),
        ),
        min_size=1,
        max_size=5,
        unique_by=lambda kv: kv[0],
    )
)
def test_key_file_round_trip(keys: list[tuple[str, bytes]]) -> None:
    text = format_key_file(keys)
    assert parse_key_file(text) == keys
    tokens = SignedTokens.from_key_file(text)
    assert tokens.signing_key_id == keys[0][0]
    assert tokens.key_ids == {k for k, _ in keys}


def test_key_file_ignores_comments_and_blank_lines() -> None:
    text = f"\n# comment\n  k1 : {b64url_encode(KEY_A)}  \n\n#k2:xx\nk2:{b64url_encode(KEY_B)}\n"
    assert parse_key_file(text) == [("k1", KEY_A), ("k2", KEY_B)]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "no key"),
        ("# only a comment\n", "no key"),
        ("k1\n", "line 1"),
        (f"k.1:{b64url_encode(KEY_A)}\n", "line 1"),
        ("k1:not base64!\n", "line 1"),
        (f"k1:{base64.b64encode(KEY_A).decode()}\n", "line 1"),  # padded standard base64
        (f"\nk1:{b64url_encode(b'short')}\n", "line 2: key shorter"),
        (f"k1:{b64url_encode(KEY_A)}\nk1:{b64url_encode(KEY_B)}\n", "line 2: key id 'k1'"),
    ],
)
def test_malformed_key_files(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_key_file(text)


@pytest.mark.parametrize("claims_text", ["not*base64", "QR", "A"])
def test_correctly_signed_claims_that_are_not_canonical_base64url_are_refused(
    claims_text: str,
) -> None:
    """Claims that do not decode (a character outside base64url, stray low
    bits in the last character, an impossible length) are malformed, even
    signed with a key of the ring."""
    signed = f"wst1.a.{claims_text}"
    token = f"{signed}.{independent_signature(KEY_A, signed)}"
    assert ring().check(token, 0) is TokenRejection.MALFORMED


def test_a_token_that_expired_at_the_epoch_is_expired_not_malformed() -> None:
    """Expiry 0 is a well-formed expiry (the lower bound of the range
    ``mint`` allows), so such a token is refused as expired: the reason logged
    tells its holder to get a new one."""
    claims = b64url_encode(b'{"exp":0,"scp":[],"sub":"a"}')
    signed = f"wst1.a.{claims}"
    token = f"{signed}.{independent_signature(KEY_A, signed)}"
    assert ring().check(token, 0) is TokenRejection.EXPIRED


def signed_token_of_length(length: int) -> str:
    """A token of exactly ``length`` characters (its subject padded) signed by
    KEY_A under the id "a" or "ab" (unpadded base64 is never 1 mod 4 long)."""
    for key_id in ("a", "ab"):
        for pad in range(1, length):
            claims = {"exp": 2_000_000_000, "scp": [], "sub": "a" * pad}
            text = json.dumps(claims, separators=(",", ":")).encode()
            signed = f"wst1.{key_id}.{b64url_encode(text)}"
            token = f"{signed}.{independent_signature(KEY_A, signed)}"
            if len(token) == length:
                return token
    raise AssertionError(f"no token of {length} characters")


def test_tokens_are_at_most_4096_characters() -> None:
    """A token up to MAX_TOKEN_LENGTH (4096) is read; a longer one is refused
    unread, however well signed (a hostile one costs nothing); mint never
    makes one (it fits common header limits)."""
    both = ring(a=KEY_A, ab=KEY_A)
    assert isinstance(both.check(signed_token_of_length(4096), NOW), Principal)
    assert both.check(signed_token_of_length(4097), NOW) is TokenRejection.MALFORMED
    with pytest.raises(ValueError, match="over 4096"):
        ring().mint("a" * 3100, ttl=60, now=NOW)
