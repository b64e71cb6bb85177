"""Server fixes found from the browser: a token subprotocol without ``wshub.v1``
is refused with a reason, tokens a browser cannot send are recognised, and Host
refusals are logged like Origin and token refusals."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from conftest import RawClient
from hypothesis import given
from hypothesis import strategies as st

from wshub.adapters import HandshakeRejected, HubServer, connect
from wshub.core.auth import (
    SUBPROTOCOL,
    SUBPROTOCOL_TOKEN_CHARS,
    AccessPolicy,
    Denial,
    Principal,
    StaticTokens,
    subprotocol_denial,
    unsendable_token_chars,
)
from wshub.core.events import HandshakeRequest
from wshub.core.tokens import SignedTokens

# RFC 9110 §5.6.2: tchar, written out independently of the module's constant.
TCHAR = set("!#$%&'*+-.^_`|~") | {chr(c) for c in range(0x30, 0x3A)}
TCHAR |= {chr(c) for c in range(0x41, 0x5B)} | {chr(c) for c in range(0x61, 0x7B)}


def request(*subprotocols: str, origin: str | None = None) -> HandshakeRequest:
    headers: list[tuple[str, str]] = []
    if origin is not None:
        headers.append(("origin", origin))
    return HandshakeRequest(
        method="GET",
        path="/",
        query="",
        host="localhost",
        headers=tuple(headers),
        origin=origin,
        subprotocols=subprotocols,
        extensions=(),
    )


POLICY = AccessPolicy(tokens=StaticTokens(["tok"]), allowed_origins=["http://app.test"])


def test_token_subprotocol_without_v1_is_refused_with_a_reason() -> None:
    verdict = POLICY.authenticate(request("wshub.bearer.tok"))
    assert isinstance(verdict, Denial)
    assert verdict.status == 400
    assert SUBPROTOCOL in verdict.reason
    assert "wshub.bearer" in verdict.reason
    assert "tok" not in verdict.reason.replace("<token>", "")


def test_token_subprotocol_with_v1_is_accepted_in_any_order() -> None:
    for offered in (("wshub.v1", "wshub.bearer.tok"), ("wshub.bearer.tok", "wshub.v1")):
        assert isinstance(POLICY.authenticate(request(*offered)), Principal)


def test_other_subprotocols_and_none_are_left_to_the_token_check() -> None:
    assert subprotocol_denial(request()) is None
    assert subprotocol_denial(request("chat")) is None
    verdict = POLICY.authenticate(request("chat"))
    assert isinstance(verdict, Denial)
    assert verdict.status == 401


def test_origin_is_checked_first_and_no_auth_mode_refuses_too() -> None:
    verdict = POLICY.authenticate(request("wshub.bearer.tok", origin="http://evil.test"))
    assert isinstance(verdict, Denial)
    assert verdict.status == 403
    open_policy = AccessPolicy(require_auth=False)
    verdict = open_policy.authenticate(request("wshub.bearer.x"))
    assert isinstance(verdict, Denial)
    assert verdict.status == 400


@given(st.text())
def test_unsendable_chars_are_exactly_those_outside_tchar(token: str) -> None:
    bad = unsendable_token_chars(token)
    assert set(bad) == set(token) - TCHAR
    assert len(bad) == len(set(bad))  # each named once
    assert frozenset(TCHAR) == SUBPROTOCOL_TOKEN_CHARS


@given(st.integers(min_value=1, max_value=64))
def test_generated_and_signed_tokens_fit_a_subprotocol(nbytes: int) -> None:
    assert unsendable_token_chars(secrets.token_urlsafe(nbytes)) == ""
    keys = SignedTokens({"k1": b"k" * 32}, signing_key_id="k1")
    token = keys.mint("alice@example.com", scopes=["read write"], ttl=60, now=0.0)
    assert unsendable_token_chars(token) == ""


def test_base64_and_spaces_are_named() -> None:
    assert unsendable_token_chars("a+b/c==d e") == "/= "


@asynccontextmanager
async def hub(**kwargs: Any) -> AsyncIterator[HubServer]:
    server = HubServer(AccessPolicy(tokens=StaticTokens(["s3cret"])), port=0, **kwargs)
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)
        try:
            yield server
        finally:
            server.shutdown()


@pytest.mark.anyio
@pytest.mark.parametrize("refusal", ["http", "close"])
async def test_bearer_only_handshake_gets_400_and_a_log_line(
    refusal: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wshub")
    async with hub(refusal=refusal) as server:
        with anyio.fail_after(10), pytest.raises(HandshakeRejected) as info:
            async with connect(server.url, subprotocols=["wshub.bearer.s3cret"]):
                pass
        assert info.value.status == 400
        assert b"wshub.v1" in info.value.body
        async with connect(server.url, subprotocols=["wshub.v1", "wshub.bearer.s3cret"]) as ws:
            assert ws.subprotocol == SUBPROTOCOL
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("refused: 400" in line and "wshub.v1" in line for line in lines), lines
    assert not any("s3cret" in line for line in lines)


@pytest.mark.anyio
async def test_host_refusal_is_logged_at_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wshub")
    async with hub() as server, RawClient.open(server.port) as raw:
        await raw.send(b"GET /healthz HTTP/1.1\r\nHost: evil.example\r\n\r\n")
        with anyio.fail_after(10):
            status, _headers, body = await raw.read_response()
            await raw.read_to_eof()
        assert (status, body) == (403, b"host not allowed")
    refusals = [
        r
        for r in caplog.records
        if r.levelno == logging.INFO and "refused" in r.getMessage() and "host" in r.getMessage()
    ]
    assert len(refusals) == 1, [r.getMessage() for r in caplog.records]
    assert "127.0.0.1" in refusals[0].getMessage()
