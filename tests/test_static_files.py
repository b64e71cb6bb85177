"""GET /wshub.js and the demo page: served by the hub with the right headers,
behind the Host allowlist (both anyio backends)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from conftest import RawClient
from js_tools import STATIC

from wshub.adapters import HubServer
from wshub.adapters.static_files import JS_CONTENT_TYPE, StaticFiles
from wshub.core import HttpRequest
from wshub.core.auth import AccessPolicy, StaticTokens

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def hub() -> AsyncIterator[HubServer]:
    server = HubServer(AccessPolicy(tokens=StaticTokens(["s3cret"])), port=0)
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)
        try:
            yield server
        finally:
            server.shutdown()


async def http(
    port: int, target: str, *, method: str = "GET", host: str | None = None, extra: str = ""
) -> tuple[int, dict[str, str], bytes]:
    host = host or f"127.0.0.1:{port}"
    async with RawClient.open(port) as raw:
        await raw.send(f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode())
        with anyio.fail_after(10):
            if method == "HEAD":
                status, headers = await raw.read_head()
                return status, headers, await raw.read_to_eof()
            return await raw.read_response()


async def test_wshub_js_is_served_with_type_cache_headers_and_etag() -> None:
    source = (STATIC / "wshub.js").read_bytes()
    async with hub() as server:
        status, headers, body = await http(server.port, "/wshub.js")
        assert status == 200
        assert body == source
        assert headers["content-type"] == JS_CONTENT_TYPE
        assert headers["cache-control"] == "no-cache"
        assert headers["x-content-type-options"] == "nosniff"
        etag = headers["etag"]
        status, headers, body = await http(
            server.port, "/wshub.js", extra=f'If-None-Match: W/{etag}, "other"\r\n'
        )
        assert (status, body, headers["etag"]) == (304, b"", etag)
        status, headers, body = await http(server.port, "/wshub.js", method="HEAD")
        assert (status, body, int(headers["content-length"])) == (200, b"", len(source))


async def test_other_paths_and_methods_and_foreign_hosts_are_not_served() -> None:
    async with hub() as server:
        assert (await http(server.port, "/"))[0] == 426  # no demo unless asked for
        assert (await http(server.port, "/demo/demo.js"))[0] == 426
        assert (await http(server.port, "/wshub.js", method="POST"))[0] == 426
        assert (await http(server.port, "/static/wshub.js"))[0] == 426
        status, _, body = await http(server.port, "/wshub.js", host="evil.example")
        assert (status, body) == (403, b"host not allowed")


def request(path: str, method: str = "GET") -> HttpRequest:
    return HttpRequest(method=method, path=path, query="", headers=())


def test_demo_page_has_a_strict_content_security_policy() -> None:
    files = StaticFiles(demo=True)
    page = files.respond(request("/"))
    assert page is not None
    assert page.status == 200
    headers = dict(page.headers)
    assert headers["Content-Type"].startswith("text/html")
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp
    assert "script-src 'self'" in csp
    assert b'src="/demo/demo.js"' in page.body
    for path in ("/demo/demo.js", "/demo/demo.css", "/wshub.js"):
        answer = files.respond(request(path))
        assert answer is not None
        assert answer.status == 200
    assert StaticFiles().respond(request("/")) is None
