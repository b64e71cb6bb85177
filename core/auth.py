"""Access control at the handshake: Origin allowlist and bearer tokens.

Deny by default. The decision is a pure function of the request, so it is
tested without sockets; the adapter awaits ``Authenticator.authenticate``,
which lets verifiers grow into async ones (database, signed tokens) without
changing the server.

Browsers cannot set an ``Authorization`` header on a WebSocket, so a token may
also arrive as a subprotocol ``wshub.bearer.<token>``; that subprotocol is
never echoed back (the server selects another offered one, if any).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable
from urllib.parse import unquote

from .events import HandshakeRequest, Headers

__all__ = [
    "SUBPROTOCOL",
    "TOKEN_SUBPROTOCOL_PREFIX",
    "AccessPolicy",
    "Authenticator",
    "Denial",
    "Principal",
    "StaticTokens",
    "bearer_token",
    "select_subprotocol",
]

TOKEN_SUBPROTOCOL_PREFIX = "wshub.bearer."
SUBPROTOCOL = "wshub.v1"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is on the other end: an id (shared by all of a user's tabs), scopes,
    and when the credentials end (``expires_at``, seconds since the epoch, or
    None for credentials that do not expire)."""

    id: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class Denial:
    """A refused handshake: the HTTP status, a short reason, extra headers."""

    status: int
    reason: str
    headers: Headers = ()


@runtime_checkable
class Authenticator(Protocol):
    """Turns a handshake into a principal or a denial; may be sync or async."""

    def authenticate(
        self, request: HandshakeRequest
    ) -> Principal | Denial | Awaitable[Principal | Denial]: ...


def bearer_token(request: HandshakeRequest, *, allow_query: bool = False) -> str | None:
    """The token from ``Authorization: Bearer``, else the token subprotocol.

    The query string (``?token=``) is read only when ``allow_query`` is set:
    URLs end up in logs and browser history.
    """
    header = request.header("authorization")
    if header is not None:
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    for proto in request.subprotocols:
        if proto.startswith(TOKEN_SUBPROTOCOL_PREFIX) and len(proto) > len(
            TOKEN_SUBPROTOCOL_PREFIX
        ):
            return proto[len(TOKEN_SUBPROTOCOL_PREFIX) :]
    if allow_query:
        for pair in request.query.split("&"):
            name, _, value = pair.partition("=")
            if name == "token" and value:
                return unquote(value)
    return None


def select_subprotocol(request: HandshakeRequest, supported: Iterable[str]) -> str | None:
    """The first offered subprotocol we support, never a token subprotocol."""
    wanted = set(supported)
    for proto in request.subprotocols:
        if proto in wanted and not proto.startswith(TOKEN_SUBPROTOCOL_PREFIX):
            return proto
    return None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class StaticTokens:
    """A fixed set of tokens, each mapped to a principal; constant-time compare.

    Tokens are compared as SHA-256 digests, every one of them (no early
    exit), so timing reveals neither which token matched, nor how many
    characters did, nor the tokens' lengths.
    """

    def __init__(self, tokens: dict[str, Principal] | Iterable[str]) -> None:
        if isinstance(tokens, dict):
            items = list(tokens.items())
        else:
            items = [(t, Principal(id=f"token-{i}")) for i, t in enumerate(tokens)]
        if not items or any(not t for t, _ in items):
            raise ValueError("StaticTokens needs at least one non-empty token")
        self._tokens = [(_digest(t), p) for t, p in items]

    def verify(self, token: str) -> Principal | None:
        candidate = _digest(token)
        found: Principal | None = None
        for secret, principal in self._tokens:
            if hmac.compare_digest(candidate, secret):
                found = principal
        return found


class AccessPolicy:
    """Origin allowlist plus token verification, as one synchronous decision.

    ``allowed_origins``: exact ``scheme://host[:port]`` strings; a request
    carrying any other ``Origin`` gets 403. Requests without ``Origin`` come
    from non-browser clients and still need a token. ``tokens=None`` with
    ``require_auth=False`` is the explicit no-auth mode (everyone is
    ``Principal("anonymous")``).
    """

    def __init__(
        self,
        *,
        tokens: StaticTokens | None = None,
        allowed_origins: Iterable[str] = (),
        require_auth: bool = True,
        allow_query_token: bool = False,
    ) -> None:
        if require_auth and tokens is None:
            raise ValueError("require_auth=True needs tokens; pass require_auth=False to opt out")
        self.tokens = tokens
        self.allowed_origins = frozenset(o.rstrip("/").lower() for o in allowed_origins)
        self.require_auth = require_auth
        self.allow_query_token = allow_query_token

    def origin_allowed(self, origin: str | None) -> bool:
        return origin is None or origin.rstrip("/").lower() in self.allowed_origins

    def authenticate(self, request: HandshakeRequest) -> Principal | Denial:
        if not self.origin_allowed(request.origin):
            return Denial(403, "origin not allowed")
        if not self.require_auth:
            return Principal(id="anonymous")
        assert self.tokens is not None
        token = bearer_token(request, allow_query=self.allow_query_token)
        if token is None:
            return Denial(401, "missing bearer token", (("WWW-Authenticate", "Bearer"),))
        principal = self.tokens.verify(token)
        if principal is None:
            return Denial(
                401, "invalid bearer token", (("WWW-Authenticate", 'Bearer error="invalid_token"'),)
            )
        return principal
