"""wss:// with locally issued certificates (trustme), on asyncio and trio:
a hub over TLS with a token, and clients that stall in the TLS handshake."""

from __future__ import annotations

import json
import ssl
from typing import Any

import anyio
import pytest
import trustme

from wshub.adapters import HandshakeRejected, HubServer, connect
from wshub.core import Limits
from wshub.core.auth import SUBPROTOCOL, AccessPolicy, Principal, StaticTokens

pytestmark = pytest.mark.anyio

TOKEN = "tls-token"
# The first bytes of a TLS 1.2+ ClientHello record header and handshake header,
# cut short: the server waits for the rest that never comes.
HALF_CLIENT_HELLO = bytes.fromhex("16030100c4010000c00303") + b"\x00" * 16


@pytest.fixture(scope="module")
def contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx


async def read_to_end(stream: Any) -> bytes:
    """Everything until EOF or a reset."""
    received = b""
    while True:
        try:
            received += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return received


def hub(server_ctx: ssl.SSLContext, **limits: Any) -> HubServer:
    policy = AccessPolicy(tokens=StaticTokens({TOKEN: Principal("alice")}))
    return HubServer(policy, ssl=server_ctx, limits=Limits(**limits))


@pytest.mark.parametrize("stall", [b"", HALF_CLIENT_HELLO])
async def test_client_stalling_in_tls_handshake_is_dropped_others_served(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext], stall: bytes
) -> None:
    server_ctx, client_ctx = contexts
    server = hub(server_ctx, handshake_timeout=0.5)
    with anyio.fail_after(15):
        async with anyio.create_task_group() as tg:
            await tg.start(server.serve)
            assert server.url.startswith("wss://")
            stalled = await anyio.connect_tcp("127.0.0.1", server.port)
            if stall:
                await stalled.send(stall)
            # While it stalls, a real wss:// client is served normally.
            async with connect(
                server.url, token=TOKEN, ssl=client_ctx, subprotocols=(SUBPROTOCOL,)
            ) as ws:
                assert json.loads(await ws.recv())["message_type"] == "welcome"
                await ws.send(json.dumps({"message_type": "echo", "id": 1, "payload": "x"}))
                reply = json.loads(await ws.recv())
                assert reply["id"] == 1
                # The stalled client is dropped (EOF or reset) by the handshake timeout.
                assert b"HTTP" not in await read_to_end(stalled)
                assert server.send_to_principal("alice", "still", 1) == 1
                assert json.loads(await ws.recv())["payload"] == 1
            await stalled.aclose()
            server.shutdown()


async def test_wss_rejects_bad_token_and_plain_http_client(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_ctx, client_ctx = contexts
    server = hub(server_ctx)
    with anyio.fail_after(15):
        async with anyio.create_task_group() as tg:
            await tg.start(server.serve)
            with pytest.raises(HandshakeRejected) as info:
                async with connect(server.url, token="wrong", ssl=client_ctx):
                    pass
            assert info.value.status == 401
            # An untrusting client fails certificate verification.
            with pytest.raises(ssl.SSLError):
                async with connect(server.url, token=TOKEN, ssl=ssl.create_default_context()):
                    pass
            async with connect(server.url, token=TOKEN, ssl=client_ctx) as ws:
                assert json.loads(await ws.recv())["message_type"] == "welcome"
            server.shutdown()


async def test_a_client_that_refuses_the_certificate_is_one_quiet_log_line(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext], caplog: pytest.LogCaptureFixture
) -> None:
    """A client that does not trust the server's certificate aborts the TLS
    handshake: the server logs why at INFO, without a traceback, and serves on."""
    server_ctx, client_ctx = contexts
    server = hub(server_ctx)
    distrustful = ssl.create_default_context()  # trusts no test CA
    with anyio.fail_after(15), caplog.at_level("INFO", logger="wshub.server"):
        async with anyio.create_task_group() as tg:
            await tg.start(server.serve)
            with pytest.raises((ssl.SSLError, anyio.BrokenResourceError)):
                await anyio.connect_tcp("127.0.0.1", server.port, ssl_context=distrustful)
            while not any("TLS handshake" in r.getMessage() for r in caplog.records):
                await anyio.sleep(0.01)
            async with connect(server.url, token=TOKEN, ssl=client_ctx) as ws:
                assert json.loads(await ws.recv())["message_type"] == "welcome"
            server.shutdown()
    failed = [r for r in caplog.records if "TLS handshake" in r.getMessage()]
    assert [(r.levelname, r.exc_info) for r in failed] == [("INFO", None)]
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
