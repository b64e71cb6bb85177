"""Exceptions raised by the core.

Peer input never raises: it becomes events, close codes and HTTP statuses.
These exceptions are for the application's own mistakes (sending before the
handshake, accepting twice, an invalid close code) and leave the connection's
state unchanged.
"""

from __future__ import annotations

__all__ = ["ConnectionClosedError", "LocalProtocolError", "WsHubError"]


class WsHubError(Exception):
    """Base class of every exception wshub raises on purpose."""


class LocalProtocolError(WsHubError):
    """The application asked for something the protocol state forbids."""


class ConnectionClosedError(LocalProtocolError):
    """The application tried to send on a connection that is closing or closed."""
