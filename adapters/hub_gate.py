"""The hub's decision on an upgrade request, whatever server carries it.

Authentication (a sync or async ``Authenticator``), the failed-authentication
rate per host, first-message auth, admission (``Hub.admit``) and the refusal
mode are decided here, so the native server (``HubHandler``) and the ASGI app
(``HubApp``) give a request the same answer. The result is a verdict the
front door turns into its own wire form (a 101 or an HTTP status, an ASGI
accept, a close with 4401...).
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Literal, Protocol, TypeAlias, runtime_checkable

import anyio

from ..core import HandshakeRequest
from ..core.auth import Authenticator, Denial, Principal, bearer_token
from ..core.hub import Hub
from ..core.ratelimit import KeyedLimiter
from ._clock import current_time
from .hub_commands import log_conn

__all__ = [
    "AWAITING_AUTH",
    "CLOSE_CODES",
    "AwaitingAuth",
    "HubGate",
    "RefusalMode",
    "Refused",
    "TokenVerifier",
    "Verdict",
]

#: How a refused handshake is answered: an HTTP status (the standard way; a
#: browser's page only sees close code 1006) or "close": accept, then close
#: at once with an application code the page can read (``CLOSE_CODES``).
RefusalMode = Literal["http", "close"]

#: Close codes of the "close" refusal mode, by the HTTP status they replace.
CLOSE_CODES: dict[int, int] = {401: 4401, 403: 4403, 429: 4429}


@runtime_checkable
class TokenVerifier(Protocol):
    """An authenticator that can also check a bare token (first-message auth
    and refreshes): a principal, or a denial whose reason is sent back."""

    def verify_token(self, token: str) -> Principal | Denial | Awaitable[Principal | Denial]: ...


@dataclass(frozen=True, slots=True)
class AwaitingAuth:
    """The verdict on a request without credentials when first-message auth is on."""


AWAITING_AUTH = AwaitingAuth()


@dataclass(frozen=True, slots=True)
class Refused:
    """Refusal mode "close": accept, then close at once with ``code``."""

    code: int
    reason: str


#: Admitted (a principal, or to authenticate by message), refused after an
#: accept (``Refused``), or refused with an HTTP status (``Denial``).
Verdict: TypeAlias = Principal | AwaitingAuth | Refused | Denial


class HubGate:
    """Decides upgrades for one hub; counts failed authentications per host."""

    def __init__(
        self,
        auth: Authenticator,
        hub: Hub,
        *,
        auth_message: bool = False,
        refusal: RefusalMode = "http",
    ) -> None:
        if auth_message and not isinstance(auth, TokenVerifier):
            raise ValueError("auth_message=True needs an authenticator with verify_token")
        if refusal not in ("http", "close"):
            raise ValueError(f"refusal must be 'http' or 'close', got {refusal!r}")
        self.auth = auth
        self.hub = hub
        self.auth_message = auth_message
        self.refusal = refusal
        cfg = hub.config
        self._auth_failures: KeyedLimiter | None = None
        if cfg.auth_failure_rate is not None:
            self._auth_failures = KeyedLimiter(cfg.auth_failure_rate, cfg.auth_failure_burst)

    async def decide(
        self, conn_id: str, request: HandshakeRequest, host: str | None, *, stopping: bool = False
    ) -> Verdict:
        """The verdict on one upgrade request from ``host``.

        An admitted verdict has passed ``Hub.admit``: register the connection
        (``Hub.add``) with no ``await`` in between, or admission is not exact.
        """
        decision = self._too_many_failures(host) or await self._authenticate(conn_id, request)
        if isinstance(decision, Denial):
            if decision.status == 401:
                self.auth_failed(host)
            log_conn(logging.INFO, conn_id, "refused: %s %s", decision.status, decision.reason)
            return self._refusal(decision)
        if stopping:
            return Denial(503, "server shutting down")
        principal_id = decision.id if isinstance(decision, Principal) else None
        admission = self.hub.admit(principal_id, host)
        if not admission.ok:
            log_conn(
                logging.INFO,
                conn_id,
                "not admitted (%s): %s %s",
                principal_id,
                admission.status,
                admission.reason,
            )
            return self._refusal(Denial(admission.status, admission.reason, admission.headers))
        return decision

    def _refusal(self, denial: Denial) -> Refused | Denial:
        code = CLOSE_CODES.get(denial.status)
        if self.refusal == "close" and code is not None:
            return Refused(code, denial.reason)
        return denial

    def _too_many_failures(self, host: str | None) -> Denial | None:
        """429 while ``host`` has no failed authentication left to spend."""
        limiter = self._auth_failures
        if limiter is None or host is None:
            return None
        wait = limiter.retry_after(host, current_time())
        if wait <= 0:
            return None
        retry = (("Retry-After", str(max(1, math.ceil(wait)))),)
        return Denial(429, "too many failed authentications", retry)

    def auth_failed(self, host: str | None) -> None:
        """Spend one of ``host``'s failed authentications."""
        if self._auth_failures is not None and host is not None:
            self._auth_failures.take(host, current_time())

    async def _authenticate(
        self, conn_id: str, request: HandshakeRequest
    ) -> Principal | AwaitingAuth | Denial:
        decision = self.auth.authenticate(request)
        if not isinstance(decision, (Principal, Denial)) and inspect.isawaitable(decision):
            decision = await decision
        if isinstance(decision, Denial):
            if (
                self.auth_message
                and decision.status == 401
                and bearer_token(request, allow_query=True) is None
            ):
                return AWAITING_AUTH  # no credentials at all: expect an auth message
            return decision
        if not isinstance(decision, Principal):
            log_conn(logging.ERROR, conn_id, "authenticator returned %r", decision)
            return Denial(500, "internal error")
        return decision

    async def verify_token(self, conn_id: str, token: str, deadline: float) -> object:
        """The verdict on an ``auth`` message's token, by ``deadline`` (loop clock).

        A ``Principal``, a ``Denial`` (401 "authentication timeout" once the
        deadline passed), or anything else the verifier wrongly returned.
        """
        if not isinstance(self.auth, TokenVerifier):  # pragma: no cover - checked by callers
            return Denial(401, "auth messages are not supported")
        decision: object = Denial(401, "authentication timeout")
        with anyio.move_on_after(max(0.0, deadline - current_time())):
            try:
                result = self.auth.verify_token(token)
                decision = await result if inspect.isawaitable(result) else result
            except Exception:
                log_conn(logging.ERROR, conn_id, "verify_token raised", exc=True)
                decision = Denial(500, "internal error")
        return decision
