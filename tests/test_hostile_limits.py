"""Hostile probes of the head limits, the Host allowlist, the ping and failed-auth
limits, slowloris and TLS stalls, request bodies on upgrades and tiny
fragments -- against a real ``wshub serve`` with the canary of
``hostile_helpers`` watching. A dead server or a canary that missed a message
fails every test here.
"""

from __future__ import annotations

import json
import ssl
import struct
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import anyio
import pytest
import trustme
from hostile_helpers import (
    READ_TIMEOUT,
    HostileHub,
    Probe,
    frame,
    running_hub,
    upgrade_request,
)

pytestmark = pytest.mark.anyio

TEXT, PING, PONG, CLOSE, CONTINUATION = 0x1, 0x9, 0xA, 0x8, 0x0
KIB = 1024
MAX_LINE = 8 * KIB  # request line and each header line, CRLF not counted
MAX_HEADERS = 100


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def hub() -> Iterator[HostileHub]:
    with running_hub() as running:
        yield running


@pytest.fixture
def port(hub: HostileHub) -> Iterator[int]:
    """The shared server; after the probe, the server lives and the canary missed nothing."""
    yield hub.port
    hub.assert_healthy()


async def status_of(port: int, head: bytes) -> int:
    async with Probe.open(port) as probe:
        response = await probe.request(head)
        if response.status == 101:
            await probe.recv_json()  # the welcome: the connection works
        return response.status


# -- request head limits -------------------------------------------------------


async def test_request_line_longer_than_8_kib_is_414(port: int) -> None:
    for length, status in ((MAX_LINE, 101), (MAX_LINE + 1, 414)):
        line = "GET /" + "a" * (length - len("GET / HTTP/1.1")) + " HTTP/1.1"
        assert len(line) == length
        assert await status_of(port, upgrade_request(port, request_line=line)) == status, length


async def test_header_line_longer_than_8_kib_is_431(port: int) -> None:
    for length, status in ((MAX_LINE, 101), (MAX_LINE + 1, 431)):
        name = "X-Long"
        value = "v" * (length - len(name) - 2)
        assert len(f"{name}: {value}") == length
        head = upgrade_request(port, extra=[(name, value)])
        assert await status_of(port, head) == status, length


async def test_more_than_100_header_lines_is_431(port: int) -> None:
    base = upgrade_request(port).count(b"\r\n") - 2  # header lines already there
    for count, status in ((MAX_HEADERS, 101), (MAX_HEADERS + 1, 431)):
        extra = [(f"X-H{i}", "v") for i in range(count - base)]
        head = upgrade_request(port, extra=extra)
        assert head.count(b"\r\n") - 2 == count
        assert await status_of(port, head) == status, count


# -- Host allowlist (DNS rebinding) ---------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "evil.example:{port}",
        "evil.example",
        "localhost.evil.example:{port}",
        "127.0.0.1.nip.io:{port}",
        "0x7f.1:{port}",
    ],
)
async def test_host_not_on_the_loopback_allowlist_is_403(port: int, host: str) -> None:
    """DNS rebinding: an attacker's name resolving to 127.0.0.1, with a valid token."""
    async with Probe.open(port) as probe:
        response = await probe.request(upgrade_request(port, host=host.format(port=port)))
        assert response.status == 403, response
        assert b"host not allowed" in response.body, response


# -- ping flood -------------------------------------------------------------------


async def test_ping_flood_closes_1008(port: int) -> None:
    """1000 pings at once from a client that reads its pongs."""
    pings = 1000
    async with Probe.open(port) as probe:
        await probe.upgrade()
        await probe.send(b"".join(frame(PING, struct.pack("!I", i)) for i in range(pings)))
        pongs = 0
        while pongs < pings:
            got = await probe.recv_frame()
            if got.opcode == CLOSE:
                (code,) = struct.unpack("!H", got.payload[:2])
                assert (code, got.payload[2:]) == (1008, b"too many pings")
                return
            assert got.opcode == PONG, got
            assert got.payload == struct.pack("!I", pongs), "pongs out of order"
            pongs += 1
        raise AssertionError(f"all {pings} pings were answered; no close")


# -- bugs found ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ([("Content-Length", "5")], b"hello"),
        ([("Transfer-Encoding", "chunked")], b"5\r\nhello\r\n0\r\n\r\n"),
    ],
    ids=["content-length", "chunked"],
)
async def test_upgrade_request_body_is_refused_or_skipped(
    port: int, headers: list[tuple[str, str]], body: bytes
) -> None:
    """The bytes of a request's body belong to the HTTP request (RFC 9110
    §7.8: the protocol switches after the request message), not to the
    WebSocket stream; reading them as frames lets a client and an
    intermediary disagree on where frames start. Refuse (400, as the
    ``websockets`` library does) or skip the body: either is fine."""
    async with Probe.open(port) as probe:
        response = await probe.request(upgrade_request(port, extra=headers) + body)
        if response.status == 400:
            return
        assert response.status == 101, response
        first = await probe.recv_frame()
        assert first.opcode == TEXT, f"the body was read as frames: {first}"
        request = json.dumps({"message_type": "whoami", "id": 1}).encode()
        await probe.send(frame(TEXT, request))
        reply = await probe.recv_json()
        assert reply["ok"] is True, reply


async def test_tiny_fragments_do_not_multiply_memory() -> None:
    """A 300 KB text message sent as 150 000 fragments of 2 bytes (held
    incomplete) must cost the server about what its bytes cost, not the
    ~60 bytes per fragment of one Python object each (about 11 MiB now; a
    1 MiB message in 2-byte fragments holds ~36 MiB per connection)."""
    fragments = 150_000
    with running_hub() as own:
        port = own.port
        async with Probe.open(port) as probe:
            await probe.upgrade()
            before = own.server.rss_kib()
            data = frame(TEXT, b"ab", fin=False) + frame(CONTINUATION, b"ab", fin=False) * (
                fragments - 1
            )
            await probe.send(data)
            await probe.send(frame(PING, b"sync"))  # answered once all the above is parsed
            got = await probe.recv_frame()
            assert (got.opcode, got.payload) == (PONG, b"sync"), got
            growth = own.server.rss_kib() - before
            own.assert_healthy()
        print(f"\nRSS growth holding {fragments} fragments of 2 bytes: {growth} KiB")
        assert growth < 4 * KIB, f"{growth} KiB for a {2 * fragments // KIB} KiB message"


# -- servers of their own: repeated failed auth, slowloris, TLS stall ----------------


async def test_repeated_failed_auth_gets_429() -> None:
    """200 wrong-token attempts in a row from one address: the first 100
    (``auth_failure_burst``) get 401, later ones 429 with Retry-After (a few
    may get 401 again as the bucket refills at 1/s); the canary
    (authenticated before) is unaffected."""
    with running_hub() as own:
        port = own.port
        statuses: list[int] = []
        retry_after: list[str] = []
        for _ in range(200):
            async with Probe.open(port) as probe:
                response = await probe.request(upgrade_request(port, token="wrong"))
                statuses.append(response.status)
                if response.status == 429:
                    retry_after.append(response.headers.get("retry-after", ""))
        own.assert_healthy()
        assert statuses[:100] == [401] * 100, statuses
        assert set(statuses) <= {401, 429}, statuses
        assert statuses.count(429) >= 50, statuses
        assert all(value.isdigit() and int(value) > 0 for value in retry_after), retry_after


async def test_slowloris_handshake_is_cut_off() -> None:
    """The request head, one byte every 0.5 s: the server answers 408 or
    drops the connection long before the head is complete."""
    with running_hub("--handshake-timeout", "2") as own:
        port = own.port
        head = upgrade_request(port)
        answer = b""
        sent = 0
        with anyio.fail_after(READ_TIMEOUT * 4):
            async with Probe.open(port) as probe:
                for byte in head:
                    try:
                        await probe.send(bytes([byte]))
                    except (anyio.BrokenResourceError, ConnectionError):
                        break
                    sent += 1
                    with anyio.move_on_after(0.5):
                        answer = await probe.read_to_end()  # returns at EOF only
                        break
        own.assert_healthy()
        assert sent < len(head), "the whole head went through byte by byte"
        if answer:
            assert answer.startswith(b"HTTP/1.1 408 "), answer


def _client_hello() -> bytes:
    """A real TLS ClientHello, as the first flight of a client."""
    context = ssl.create_default_context()
    outgoing = ssl.MemoryBIO()
    tls = context.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname="127.0.0.1")
    with suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


@pytest.mark.parametrize("first_flight", ["nothing", "half-a-client-hello"])
async def test_tls_handshake_stall_is_dropped(tmp_path: Path, first_flight: str) -> None:
    """A client that stops in the TLS handshake is dropped by the handshake
    timeout while a wss:// canary keeps being served."""
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    args = ("--tls-cert", str(cert), "--tls-key", str(key), "--handshake-timeout", "2")
    with running_hub(*args, ssl_context=client) as own:
        assert own.server.scheme == "wss"
        async with Probe.open(own.port) as probe:
            if first_flight != "nothing":
                hello = _client_hello()
                await probe.send(hello[: len(hello) // 2])
            leftover = await probe.read_to_end()  # until the server drops us
        own.assert_healthy()
        assert not leftover.startswith(b"HTTP/"), leftover
