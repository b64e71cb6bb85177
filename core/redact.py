"""Keeping credentials out of logs: redacted forms of a query and of headers.

Tokens travel in the ``Authorization`` header, in the ``wshub.bearer.``
subprotocol and, when enabled, in the query string; anything that prints a
request (a log line, a ``repr``) goes through these helpers first.
"""

from __future__ import annotations

from .events import Headers

__all__ = ["REDACTED", "redact_headers", "redact_query", "redact_subprotocols"]

REDACTED = "[redacted]"
_SECRET_PARAMS = frozenset({"token", "access_token", "auth", "key", "password", "secret"})
_SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
_TOKEN_PREFIX = "wshub.bearer."


def redact_query(query: str) -> str:
    """``query`` with the values of credential parameters (``token``...) hidden."""
    if not query:
        return query
    pairs = []
    for pair in query.split("&"):
        name, sep, _value = pair.partition("=")
        pairs.append(f"{name}={REDACTED}" if sep and name.lower() in _SECRET_PARAMS else pair)
    return "&".join(pairs)


def redact_subprotocols(offered: tuple[str, ...]) -> tuple[str, ...]:
    """Offered subprotocols with the token of ``wshub.bearer.<token>`` hidden."""
    return tuple(
        _TOKEN_PREFIX + REDACTED if proto.startswith(_TOKEN_PREFIX) else proto for proto in offered
    )


def redact_headers(headers: Headers) -> Headers:
    """Headers with credentials (``Authorization``, cookies, token subprotocols) hidden."""
    return tuple((name, _redact_header(name, value)) for name, value in headers)


def _redact_header(name: str, value: str) -> str:
    if name in _SECRET_HEADERS:
        return REDACTED
    if name == "sec-websocket-protocol" and _TOKEN_PREFIX in value:
        return ", ".join(redact_subprotocols(tuple(p.strip() for p in value.split(","))))
    return value
