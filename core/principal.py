"""Who is on the other end of a connection, as every verifier reports it.

A module of its own so that token formats (``tokens.py``) and the access
policy (``auth.py``) can both name it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Principal"]


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated identity: an id (shared by all of a user's tabs) and scopes.

    ``expires_at`` is when the credential stops being valid, in epoch seconds
    (filled in by signed tokens, ``None`` for credentials that do not expire,
    such as static tokens); the hub uses it to end connections whose token
    ran out while they were open.
    """

    id: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    expires_at: float | None = None
