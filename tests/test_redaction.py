"""Credentials never reach the logs: query tokens, Authorization headers and
token subprotocols are redacted in log lines and in request reprs."""

from __future__ import annotations

import logging

import anyio
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from wshub.adapters import HandshakeRejected, HubServer, connect
from wshub.core.auth import SUBPROTOCOL, AccessPolicy, Principal, StaticTokens
from wshub.core.events import HandshakeRequest, HttpRequest
from wshub.core.redact import REDACTED, redact_headers, redact_query

SECRET = "Sup3rS3cretTokenValue"


def test_request_reprs_hide_credentials() -> None:
    request = HandshakeRequest(
        method="GET",
        path="/ws",
        query=f"room=1&token={SECRET}",
        host="localhost:1",
        headers=(
            ("authorization", f"Bearer {SECRET}"),
            ("sec-websocket-protocol", f"wshub.v1, wshub.bearer.{SECRET}"),
            ("cookie", f"session={SECRET}"),
        ),
        origin=None,
        subprotocols=("wshub.v1", f"wshub.bearer.{SECRET}"),
        extensions=(),
    )
    text = repr(request)
    assert SECRET not in text
    assert "room=1" in text
    assert "wshub.v1" in text
    assert REDACTED in text
    http = HttpRequest(method="GET", path="/", query=f"token={SECRET}", headers=())
    assert SECRET not in repr(http)


@given(st.text(), st.text(min_size=1, alphabet=st.characters(blacklist_characters="&")))
def test_query_token_values_are_always_hidden(prefix: str, secret: str) -> None:
    query = f"{prefix.replace('=', '')}&token={secret}"
    redacted = redact_query(query)
    assert redacted.endswith(f"token={REDACTED}")
    assert redact_headers((("authorization", secret),)) == (("authorization", REDACTED),)


@pytest.mark.anyio
async def test_no_log_line_carries_a_token(caplog: pytest.LogCaptureFixture) -> None:
    policy = AccessPolicy(tokens=StaticTokens({SECRET: Principal("alice")}), allow_query_token=True)
    server = HubServer(policy)
    caplog.set_level(logging.DEBUG)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(server.serve)
            base = server.url
            async with connect(f"{base}/ws?room=1&token={SECRET}") as ws:
                await ws.recv()
            async with connect(base, subprotocols=(SUBPROTOCOL, f"wshub.bearer.{SECRET}")) as ws:
                await ws.recv()
            async with connect(base, token=SECRET) as ws:
                await ws.recv()
            with pytest.raises(HandshakeRejected):
                async with connect(f"{base}/?token={SECRET}x"):
                    pass
            server.shutdown()
    lines = [record.getMessage() for record in caplog.records]
    assert any("/ws?room=1&token=[redacted]" in line for line in lines), lines
    for record in caplog.records:
        assert SECRET not in record.getMessage()
        assert SECRET not in (record.exc_text or "")


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["host", "user-agent", "sec-websocket-protocol", "x-request-id"]),
            st.text(alphabet=st.characters(codec="latin-1"), max_size=30),
        ),
        max_size=6,
    )
)
def test_headers_without_credentials_are_kept_as_they_are(headers: list[tuple[str, str]]) -> None:
    """Only credentials are hidden: every other header, a subprotocol list
    without a token included, keeps its value."""
    assume(all("wshub.bearer." not in value for _name, value in headers))
    assert redact_headers(tuple(headers)) == tuple(headers)
