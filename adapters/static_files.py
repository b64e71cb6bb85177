"""The browser side served by the hub: ``GET /wshub.js``, and the demo page.

``/wshub.js`` (the dependency-free client, shipped in the wheel under
``wshub/static``) is always served; the demo page (``/``, ``/demo/...``) only
when asked for (``wshub serve --demo``). Files are read once, on first use,
and answered with an ``ETag`` (a 304 to a matching ``If-None-Match``),
``Cache-Control: no-cache`` (browsers revalidate, so an upgrade of wshub is
seen at once) and ``X-Content-Type-Options: nosniff``; the demo page also
carries a Content-Security-Policy that allows only its own scripts and
styles. The Host allowlist applies before any of this runs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from ..core import HttpRequest
from .handler import HttpResponse

__all__ = ["JS_CONTENT_TYPE", "StaticFiles"]

JS_CONTENT_TYPE = "text/javascript; charset=utf-8"

_TYPES = {
    ".js": JS_CONTENT_TYPE,
    ".ts": "text/plain; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".png": "image/png",
}

# The demo page loads its own script and style and opens a WebSocket to its host.
_DEMO_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_CLIENT = {"/wshub.js": "wshub.js", "/wshub.d.ts": "wshub.d.ts"}
_DEMO = {
    "/": "demo/index.html",
    "/index.html": "demo/index.html",
    "/demo/demo.js": "demo/demo.js",
    "/demo/demo.css": "demo/demo.css",
}


@dataclass(frozen=True, slots=True)
class _File:
    body: bytes
    etag: str
    headers: tuple[tuple[str, str], ...]


class StaticFiles:
    """Answers GET/HEAD for the client (and the demo page if ``demo``); None otherwise."""

    def __init__(self, *, demo: bool = False) -> None:
        self.demo = demo
        self._routes = {**_CLIENT, **(_DEMO if demo else {})}
        self._files: dict[str, _File] = {}

    def respond(self, request: HttpRequest) -> HttpResponse | None:
        name = self._routes.get(request.path)
        if name is None or request.method not in ("GET", "HEAD"):
            return None
        file = self._files.get(name)
        if file is None:
            file = self._files[name] = _load(name)
        tags = next((v for n, v in request.headers if n.lower() == "if-none-match"), None)
        if _matches(tags, file.etag):
            return HttpResponse(304, (("ETag", file.etag), ("Cache-Control", "no-cache")))
        return HttpResponse(200, file.headers, file.body)


def _load(name: str) -> _File:
    body = (resources.files("wshub") / "static" / name).read_bytes()
    etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
    suffix = name[name.rfind(".") :]
    headers = [
        ("Content-Type", _TYPES.get(suffix, "application/octet-stream")),
        ("Cache-Control", "no-cache"),
        ("ETag", etag),
        ("X-Content-Type-Options", "nosniff"),
    ]
    if suffix == ".html":
        headers += [("Content-Security-Policy", _DEMO_CSP), ("Referrer-Policy", "no-referrer")]
    return _File(body, etag, tuple(headers))


def _matches(header: str | None, etag: str) -> bool:
    """RFC 9110 §13.1.2: a list of entity tags (weak compare), or ``*``."""
    if header is None:
        return False
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags
