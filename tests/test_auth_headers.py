"""Where a bearer token may come from, and what is not one (core/auth.py).

A ``Basic`` (or any other scheme's) Authorization header is not a bearer
token, whatever it holds; a token subprotocol offered without ``wshub.v1``
is refused with a reason; origins can be added once a server knows its port.
"""

from __future__ import annotations

from test_auth import ALICE, policy, request

from wshub.core.auth import (
    SUBPROTOCOL,
    TOKEN_SUBPROTOCOL_PREFIX,
    Denial,
    bearer_token,
    subprotocol_denial,
    unsendable_token_chars,
)


def test_only_the_bearer_scheme_carries_a_token() -> None:
    for header in (
        "Basic czNjcmV0",
        "Basic s3cret",
        "Token s3cret",
        "s3cret",
        "Bearer",
        "Bearer  ",
    ):
        req = request(authorization=header)
        assert bearer_token(req) is None, header
        denial = policy().authenticate(req)
        assert isinstance(denial, Denial)
        assert denial.status == 401
    assert bearer_token(request(authorization="bearer  s3cret ")) == "s3cret"


def test_a_basic_header_does_not_hide_the_subprotocol_token() -> None:
    req = request(
        authorization="Basic czNjcmV0",
        subprotocols=(SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX + "s3cret"),
    )
    assert bearer_token(req) == "s3cret"
    assert policy().authenticate(req) == ALICE


def test_query_strings_without_a_token() -> None:
    for query in ("", "room=1", "token=", "tokens=s3cret&x=1", "=s3cret"):
        assert bearer_token(request(query=query), allow_query=True) is None, query
    assert bearer_token(request(query="a=1&token=x%20y"), allow_query=True) == "x y"


def test_token_subprotocol_without_wshub_v1_is_400_with_a_reason() -> None:
    token_only = request(subprotocols=(TOKEN_SUBPROTOCOL_PREFIX + "s3cret",))
    denial = subprotocol_denial(token_only)
    assert denial is not None
    assert (denial.status, denial.reason) == (
        400,
        f"a {TOKEN_SUBPROTOCOL_PREFIX}<token> subprotocol needs {SUBPROTOCOL} too",
    )
    assert policy().authenticate(token_only) == denial
    assert subprotocol_denial(request(subprotocols=("chat",))) is None
    other = policy().authenticate(request(subprotocols=("chat",)))
    assert isinstance(other, Denial)
    assert (other.status, other.reason) == (401, "missing bearer token")  # not a 400
    with_v1 = request(subprotocols=(SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX + "s3cret"))
    assert subprotocol_denial(with_v1) is None


def test_origins_added_later_are_allowed_normalized() -> None:
    access = policy()
    assert access.origin_allowed("http://127.0.0.1:8765") is False
    access.allow_origins(["HTTP://127.0.0.1:8765/"])
    assert access.origin_allowed("http://127.0.0.1:8765")
    assert access.origin_allowed("https://app.example")  # the earlier ones stay
    assert access.origin_allowed(None)  # no Origin: not a browser


def test_characters_a_browser_cannot_send_in_a_subprotocol() -> None:
    assert unsendable_token_chars("abc-DEF_123.~!#$%&'*+^`|") == ""
    assert unsendable_token_chars("a b,c/b ") == " ,/"  # each once, in order
    assert unsendable_token_chars("é") == "é"
