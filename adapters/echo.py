"""The echo handler: ``wshub serve --echo`` and the Autobahn conformance target."""

from __future__ import annotations

import inspect

from ..core import HandshakeRequest
from ..core.auth import SUBPROTOCOL, AccessPolicy, Denial, select_subprotocol
from .handler import Accept, Handler
from .session import ServerSession

__all__ = ["EchoHandler"]


class EchoHandler(Handler):
    """Authenticate with an ``AccessPolicy``, then send every message back unchanged.

    The subprotocol answered is ``wshub.v1`` when offered; a token carried as a
    ``wshub.bearer.<token>`` subprotocol is never echoed back.
    """

    def __init__(self, policy: AccessPolicy) -> None:
        self.policy = policy

    async def on_handshake(
        self,
        session: ServerSession,  # noqa: ARG002 - part of the hook's signature
        request: HandshakeRequest,
    ) -> Accept | Denial:
        decision = self.policy.authenticate(request)
        if inspect.isawaitable(decision):  # an async token verifier
            decision = await decision
        if isinstance(decision, Denial):
            return decision
        return Accept(principal=decision, subprotocol=select_subprotocol(request, (SUBPROTOCOL,)))

    def on_message_nowait(self, session: ServerSession, message: str | bytes) -> None:
        _echo(session, message)

    async def on_message(self, session: ServerSession, message: str | bytes) -> None:
        _echo(session, message)


def _echo(session: ServerSession, message: str | bytes) -> None:
    # Straight to the core: no per-message allocation beyond the frame.
    if type(message) is str:
        session.send_text(message)
    else:
        session.send_binary(message)  # type: ignore[arg-type]
