"""The lifecycle of a connection: its states and the transitions between them."""

from __future__ import annotations

from enum import Enum, auto

__all__ = ["TRANSITIONS", "State"]


class State(Enum):
    """Lifecycle of a connection; transitions are listed in ``TRANSITIONS``."""

    CONNECTING = auto()  # reading the opening handshake
    DECIDING = auto()  # server: request reported, waiting for accept / reject / respond
    OPEN = auto()
    CLOSING = auto()  # our close frame is sent, waiting for the peer's
    CLOSED = auto()

    # Members are singletons compared by identity: hash them the same way, in C
    # (Enum's own __hash__ is a Python function, run on every transition).
    __hash__ = object.__hash__


TRANSITIONS: dict[State, frozenset[State]] = {
    State.CONNECTING: frozenset({State.DECIDING, State.OPEN, State.CLOSED}),
    State.DECIDING: frozenset({State.OPEN, State.CLOSED}),
    State.OPEN: frozenset({State.CLOSING, State.CLOSED}),
    State.CLOSING: frozenset({State.CLOSED}),
    State.CLOSED: frozenset(),
}
