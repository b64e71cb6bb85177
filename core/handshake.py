"""The opening handshake rules of RFC 6455 §4, as pure functions.

``http_head`` (or h11) parses the HTTP head; these functions decide whether
it is a valid WebSocket upgrade and build the answers. They are separate
from the state machine so each rule can be tested on its own.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass

import h11
from wsproto.utilities import generate_accept_token

from .events import HandshakeRequest, Headers
from .http_head import RequestHead

__all__ = [
    "HandshakeFailure",
    "accept_token",
    "client_request",
    "decode_headers",
    "http_response",
    "is_upgrade_request",
    "parse_upgrade_request",
    "split_tokens",
    "upgrade_fields",
    "upgrade_response",
]

WEBSOCKET_VERSION = "13"

_REASONS = {
    101: "Switching Protocols",
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    426: "Upgrade Required",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


@dataclass(frozen=True, slots=True)
class HandshakeFailure:
    """Why an upgrade request is refused, as the HTTP answer to give."""

    status: int
    reason: str
    headers: Headers = ()


def decode_headers(raw: list[tuple[bytes, bytes]] | h11._headers.Headers) -> Headers:
    """h11 headers (lower-cased names) as latin-1 strings."""
    if isinstance(raw, h11._headers.Headers):
        # raw_items() is a plain list; iterating Headers itself goes through
        # Sequence.__getitem__ once per header (a hot spot of handshakes).
        return tuple(
            (name.decode("latin-1").lower(), value.decode("latin-1"))
            for name, value in raw.raw_items()
        )
    return tuple((name.decode("latin-1"), value.decode("latin-1")) for name, value in raw)


def split_tokens(headers: Headers, name: str) -> list[str]:
    """All comma-separated values of header ``name``, stripped, empty ones dropped."""
    return _tokens([value for hname, value in headers if hname == name])


def is_upgrade_request(headers: Headers, fields: dict[str, list[str]] | None = None) -> bool:
    """Does the request ask for a WebSocket upgrade at all?

    ``fields``: ``upgrade_fields(headers)``, if the caller has it already.
    """
    if fields is None:
        fields = upgrade_fields(headers)
    return any(token.lower() == "websocket" for token in _tokens(fields.get("upgrade", _NONE)))


def accept_token(key: str) -> str:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2)."""
    return generate_accept_token(key.encode("ascii")).decode("ascii")


_UPGRADE_FIELDS = frozenset(
    {
        "host",
        "upgrade",
        "connection",
        "transfer-encoding",
        "content-length",
        "sec-websocket-version",
        "sec-websocket-key",
        "origin",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
    }
)
_NONE: tuple[str, ...] = ()


def _tokens(values: Iterable[str]) -> list[str]:
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def upgrade_fields(headers: Headers) -> dict[str, list[str]]:
    """The values of every header the upgrade rules look at, by name, in one pass."""
    fields: dict[str, list[str]] = {}
    for name, value in headers:
        if name in _UPGRADE_FIELDS:
            if name in fields:
                fields[name].append(value)
            else:
                fields[name] = [value]
    return fields


def parse_upgrade_request(
    request: RequestHead, fields: dict[str, list[str]] | None = None
) -> tuple[HandshakeRequest, str] | HandshakeFailure:
    """Validate an upgrade request (RFC 6455 §4.2.1); return it and its key.

    ``fields`` is ``upgrade_fields(request.headers)`` if the caller has it.
    """
    headers = request.headers
    if request.method != "GET":
        return HandshakeFailure(405, "WebSocket upgrade requires GET", (("Allow", "GET"),))
    if request.http_version != "1.1":
        return HandshakeFailure(400, "WebSocket upgrade requires HTTP/1.1")
    if fields is None:
        fields = upgrade_fields(headers)
    hosts = fields.get("host", _NONE)
    if len(hosts) != 1 or not hosts[0].strip():
        return HandshakeFailure(400, "missing or repeated Host header")
    if not any(t.lower() == "upgrade" for t in _tokens(fields.get("connection", _NONE))):
        return HandshakeFailure(400, "Connection header must contain 'Upgrade'")
    if "transfer-encoding" in fields or any(
        v.strip() != "0" for v in fields.get("content-length", _NONE)
    ):
        # A body would be read as frames by us and skipped by a proxy (or the
        # reverse): the two would disagree on where the frames start.
        return HandshakeFailure(400, "WebSocket upgrade must not have a body")
    versions = fields.get("sec-websocket-version", _NONE)
    version_header = (("Sec-WebSocket-Version", WEBSOCKET_VERSION),)
    if not versions:
        return HandshakeFailure(400, "missing Sec-WebSocket-Version", version_header)
    if len(versions) != 1 or versions[0].strip() != WEBSOCKET_VERSION:
        return HandshakeFailure(426, "unsupported Sec-WebSocket-Version", version_header)
    keys = fields.get("sec-websocket-key", _NONE)
    if len(keys) != 1:
        return HandshakeFailure(400, "missing or repeated Sec-WebSocket-Key")
    key = keys[0].strip()
    try:
        raw_key = base64.b64decode(key.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raw_key = b""
    if len(raw_key) != 16:
        return HandshakeFailure(400, "malformed Sec-WebSocket-Key")
    path, _, query = request.target.partition("?")
    origins = fields.get("origin", _NONE)
    if len(origins) > 1:
        # RFC 6454 §7.3: one Origin at most; two would let an allowlist check
        # read one while a proxy or log reads the other.
        return HandshakeFailure(400, "repeated Origin header")
    handshake = HandshakeRequest(
        method=request.method,
        path=path,
        query=query,
        host=hosts[0].strip(),
        headers=headers,
        origin=origins[0] if origins else None,
        subprotocols=tuple(_tokens(fields.get("sec-websocket-protocol", _NONE))),
        extensions=tuple(fields.get("sec-websocket-extensions", _NONE)),
    )
    return handshake, key


_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def _check_header_text(text: str) -> None:
    if "\r" in text or "\n" in text or "\x00" in text:
        raise ValueError(f"header text must not contain CR, LF or NUL: {text!r}")


def _check_header(name: str, value: str) -> None:
    """A header the application supplied: a token name (RFC 9110 §5.1), a safe value."""
    if not name or not _TOKEN_CHARS.issuperset(name):
        raise ValueError(f"invalid header name: {name!r}")
    _check_header_text(value)


def http_response(status: int, headers: Headers = (), body: bytes = b"") -> bytes:
    """Serialize a complete HTTP/1.1 response; non-101 responses close the connection.

    The body is always sent whole with its length, so a caller's
    ``Content-Length`` must match it and ``Transfer-Encoding`` is refused:
    a second, different length would make the response ambiguous.
    """
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
    has_length = False
    for name, value in headers:
        _check_header(name, value)
        lowered = name.lower()
        if lowered == "transfer-encoding":
            raise ValueError("Transfer-Encoding is not supported: bodies are sent whole")
        if lowered == "content-length":
            if value.strip() != str(len(body)) or has_length:
                raise ValueError(f"Content-Length {value!r} does not match the body")
            has_length = True
        lines.append(f"{name}: {value}")
    if status != 101:
        if not any(name.lower() == "content-type" for name, _ in headers):
            lines.append("Content-Type: text/plain; charset=utf-8")
        if not has_length:
            lines.append(f"Content-Length: {len(body)}")
        lines.append("Connection: close")
    head = "\r\n".join(lines) + "\r\n\r\n"
    return head.encode("latin-1") + body


def upgrade_response(
    key: str, subprotocol: str | None, extension: str | None, headers: Headers = ()
) -> bytes:
    """The 101 answer to an upgrade with ``key``, with the agreed subprotocol
    and extension (values from the request, already validated) and the
    application's ``headers`` (checked as ``http_response`` checks them)."""
    fields = [("Upgrade", "websocket"), ("Connection", "Upgrade")]
    fields.append(("Sec-WebSocket-Accept", accept_token(key)))
    if subprotocol is not None:
        fields.append(("Sec-WebSocket-Protocol", subprotocol))
    if extension is not None:
        fields.append(("Sec-WebSocket-Extensions", extension))
    if headers:
        return http_response(101, (*fields, *headers))
    # Nothing of the application's to check: the common case, joined directly.
    lines = "".join(f"{name}: {value}\r\n" for name, value in fields)
    return f"HTTP/1.1 101 Switching Protocols\r\n{lines}\r\n".encode("latin-1")


def client_request(
    *,
    host: str,
    target: str,
    key: str,
    subprotocols: tuple[str, ...],
    extension_offer: str | None,
    headers: Headers,
) -> h11.Request:
    """The client's upgrade request (RFC 6455 §4.1)."""
    fields: list[tuple[str, str]] = [
        ("Host", host),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", WEBSOCKET_VERSION),
    ]
    if subprotocols:
        fields.append(("Sec-WebSocket-Protocol", ", ".join(subprotocols)))
    if extension_offer:
        fields.append(("Sec-WebSocket-Extensions", extension_offer))
    for name, value in headers:
        _check_header(name, value)
        fields.append((name, value))
    return h11.Request(method="GET", target=target, headers=fields)
