"""Access control at the handshake: Origin allowlist and bearer tokens.

Deny by default. The decision is a function of the request (and, for expiring
tokens, of an injected wall clock), so it is tested without sockets. Verifiers
may be synchronous (static tokens, signed tokens) or asynchronous (a database,
an identity provider); when one is asynchronous, ``authenticate`` returns an
awaitable, which the adapters await.

Browsers cannot set an ``Authorization`` header on a WebSocket, so a token may
also arrive as a subprotocol ``wshub.bearer.<token>``; that subprotocol is
never echoed back (the server selects another offered one, if any).
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol, TypeAlias, runtime_checkable
from urllib.parse import unquote

from .events import HandshakeRequest, Headers

__all__ = [
    "SUBPROTOCOL",
    "SUBPROTOCOL_TOKEN_CHARS",
    "TOKEN_SUBPROTOCOL_PREFIX",
    "AccessPolicy",
    "Authenticator",
    "ClockedVerifier",
    "Denial",
    "Principal",
    "StaticTokens",
    "TokenRejection",
    "TokenSource",
    "Verifier",
    "VerifyFunction",
    "bearer_token",
    "select_subprotocol",
    "subprotocol_denial",
    "unsendable_token_chars",
]

TOKEN_SUBPROTOCOL_PREFIX = "wshub.bearer."
SUBPROTOCOL = "wshub.v1"

#: What a browser accepts in a subprotocol, so in ``wshub.bearer.<token>``: the
#: HTTP token characters (RFC 9110 §5.6.2 "tchar"; the WebSocket constructor
#: throws SyntaxError on anything else, e.g. "/", "=", spaces, non-ASCII).
SUBPROTOCOL_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


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


@runtime_checkable
class Verifier(Protocol):
    """Turns a bearer token into its principal, or None if it is not valid.

    ``StaticTokens`` is one; a database or an identity provider client can be
    another, returning an awaitable. A principal's ``expires_at`` (epoch
    seconds), if set, is checked by ``AccessPolicy`` against its clock.
    """

    def verify(self, token: str) -> Principal | Awaitable[Principal | None] | None: ...


class TokenRejection(Enum):
    """Why an expiring token was refused; only ``EXPIRED`` is worth telling the client."""

    MALFORMED = "malformed"
    UNKNOWN_KEY = "unknown key"
    BAD_SIGNATURE = "bad signature"
    EXPIRED = "expired"


@runtime_checkable
class ClockedVerifier(Protocol):
    """A verifier of expiring tokens, given the wall time (``tokens.SignedTokens``).

    The core reads no clock: ``AccessPolicy`` calls ``check`` with its own.
    """

    def check(self, token: str, now: float) -> Principal | TokenRejection: ...


# What a check returns when it is not async: tested first, because
# inspect.isawaitable goes through an ABC check (a hot path: every handshake).
_SYNC_RESULTS = (Principal, TokenRejection, type(None))

VerifyFunction: TypeAlias = Callable[[str], Principal | Awaitable[Principal | None] | None]
"""A plain (sync or async) function from token to principal or None."""

TokenSource: TypeAlias = "StaticTokens | ClockedVerifier | Verifier | VerifyFunction"
"""Anything ``AccessPolicy(tokens=...)`` accepts, alone or in a list tried in order."""

_Check: TypeAlias = Callable[
    [str], Principal | TokenRejection | Awaitable[Principal | TokenRejection | None] | None
]


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


def unsendable_token_chars(token: str) -> str:
    """The characters of ``token`` a browser cannot send in a subprotocol, in order.

    Empty for a token that fits ``wshub.bearer.<token>``; anything else must
    be sent in a first ``auth`` message (``HubServer(auth_message=True)``).
    """
    return "".join(dict.fromkeys(c for c in token if c not in SUBPROTOCOL_TOKEN_CHARS))


_NEEDS_V1 = Denial(400, f"a {TOKEN_SUBPROTOCOL_PREFIX}<token> subprotocol needs {SUBPROTOCOL} too")


def subprotocol_denial(request: HandshakeRequest) -> Denial | None:
    """400 for a token subprotocol offered without ``wshub.v1``, else None.

    The token subprotocol is never selected (it would echo the token), so
    such a handshake could only be accepted with no subprotocol, which a
    browser fails as close code 1006 with no reason: refuse it with one.
    """
    offered = request.subprotocols
    if SUBPROTOCOL in offered:
        return None
    if any(p.startswith(TOKEN_SUBPROTOCOL_PREFIX) for p in offered):
        return _NEEDS_V1
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


_MISSING = Denial(401, "missing bearer token", (("WWW-Authenticate", "Bearer"),))
_INVALID = Denial(
    401, "invalid bearer token", (("WWW-Authenticate", 'Bearer error="invalid_token"'),)
)
# RFC 6750 §3: the same error code, with a description a developer can act on.
_EXPIRED = Denial(
    401,
    "token expired",
    (("WWW-Authenticate", 'Bearer error="invalid_token", error_description="token expired"'),),
)

Verdict: TypeAlias = Principal | Denial


class AccessPolicy:
    """Origin allowlist plus token verification, as one decision per handshake.

    ``allowed_origins``: exact ``scheme://host[:port]`` strings; a request
    carrying any other ``Origin`` gets 403. Requests without ``Origin`` come
    from non-browser clients and still need a token. ``tokens=None`` with
    ``require_auth=False`` is the explicit no-auth mode (everyone is
    ``Principal("anonymous")``).

    ``tokens`` is a ``StaticTokens``, a ``SignedTokens`` (any
    ``ClockedVerifier``), any ``Verifier`` or (async) function
    ``token -> Principal | None``, or a list of these tried in order (the
    first principal wins). ``clock`` returns the wall time in
    epoch seconds (pass ``time.time``): it is required with signed tokens, and
    when given, any verifier's principal whose ``expires_at`` has passed is
    refused with 401 "token expired".
    """

    def __init__(
        self,
        *,
        tokens: TokenSource | Sequence[TokenSource] | None = None,
        allowed_origins: Iterable[str] = (),
        require_auth: bool = True,
        allow_query_token: bool = False,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if require_auth and tokens is None:
            raise ValueError("require_auth=True needs tokens; pass require_auth=False to opt out")
        sources: Sequence[TokenSource] = (
            () if tokens is None else tokens if isinstance(tokens, list | tuple) else (tokens,)
        )
        if require_auth and not sources:
            raise ValueError("require_auth=True needs at least one token source")
        self.tokens = tokens
        self.allowed_origins = frozenset(o.rstrip("/").lower() for o in allowed_origins)
        self.require_auth = require_auth
        self.allow_query_token = allow_query_token
        self.clock = clock
        self._checks: tuple[_Check, ...] = tuple(self._check_for(s) for s in sources)

    def _check_for(self, source: TokenSource) -> _Check:
        if isinstance(source, ClockedVerifier):
            clock = self.clock
            if clock is None:
                raise ValueError(
                    "signed tokens expire: give AccessPolicy a clock (clock=time.time)"
                )
            return lambda token: source.check(token, clock())
        if isinstance(source, Verifier):
            return source.verify
        if callable(source):
            return source
        raise TypeError(f"not a token verifier: {source!r}")

    def allow_origins(self, origins: Iterable[str]) -> None:
        """Add exact ``scheme://host[:port]`` values to the allowlist (e.g. a
        server's own pages, whose port is known only once it listens)."""
        self.allowed_origins = self.allowed_origins | {o.rstrip("/").lower() for o in origins}

    def origin_allowed(self, origin: str | None) -> bool:
        return origin is None or origin.rstrip("/").lower() in self.allowed_origins

    def authenticate(self, request: HandshakeRequest) -> Verdict | Awaitable[Verdict]:
        """Origin check, then the request's bearer token (header, subprotocol, query)."""
        if not self.origin_allowed(request.origin):
            return Denial(403, "origin not allowed")
        if request.subprotocols:
            refused = subprotocol_denial(request)
            if refused is not None:
                return refused
        if not self.require_auth:
            return Principal(id="anonymous")
        token = bearer_token(request, allow_query=self.allow_query_token)
        if token is None:
            return _MISSING
        return self.verify_token(token)

    def verify_token(self, token: str) -> Verdict | Awaitable[Verdict]:
        """A token from any transport (e.g. a first ``auth`` message) to a verdict.

        Denials are 401 "invalid bearer token" or 401 "token expired" (the only
        cause worth telling apart: the client should fetch a new token). With
        no token sources (the no-auth mode) everyone is ``anonymous``.
        """
        if not self._checks:
            return Principal(id="anonymous")
        expired = False
        for index, check in enumerate(self._checks):
            result = check(token)
            if not isinstance(result, _SYNC_RESULTS) and inspect.isawaitable(result):
                return self._verify_async(token, result, index, expired)
            verdict = self._judge(result)
            if verdict is not None:
                return verdict
            expired = expired or result is TokenRejection.EXPIRED
        return _EXPIRED if expired else _INVALID

    async def _verify_async(
        self,
        token: str,
        pending: Awaitable[Principal | TokenRejection | None],
        index: int,
        expired: bool,
    ) -> Verdict:
        """The rest of ``verify_token`` once a verifier turned out to be async."""
        result = await pending
        while True:
            verdict = self._judge(result)
            if verdict is not None:
                return verdict
            expired = expired or result is TokenRejection.EXPIRED
            index += 1
            if index == len(self._checks):
                return _EXPIRED if expired else _INVALID
            step = self._checks[index](token)
            result = await step if inspect.isawaitable(step) else step

    def _judge(self, result: object) -> Verdict | None:
        """A principal (or its expiry) as a verdict; None to try the next source."""
        if isinstance(result, Principal):
            if (
                result.expires_at is not None
                and self.clock is not None
                and self.clock() >= result.expires_at
            ):
                return _EXPIRED
            return result
        if result is None or isinstance(result, TokenRejection):
            return None
        raise TypeError(f"a token verifier returned {result!r}, not a Principal or None")
