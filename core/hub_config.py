"""The hub's bounds and policies, in one frozen, keyword-only dataclass."""

from __future__ import annotations

from dataclasses import dataclass

from .history import check_history_settings

__all__ = ["HubConfig"]


@dataclass(frozen=True, kw_only=True, slots=True)
class HubConfig:
    """Limits of the hub (sizes in bytes, times in seconds).

    ``max_connections``
        Open connections in total (beyond: 503 + ``Retry-After``). Default
        None: the anyio adapter sets it from the process's file-descriptor
        limit, keeping headroom so that a flood is still answered with 503
        instead of failing ``accept``; a bare ``Hub`` then has no total bound.
    ``max_per_principal`` / ``max_per_host``
        Open connections per principal id and per remote address (beyond:
        429 + ``Retry-After``). Checked by ``Hub.admit`` at the handshake.
        Defaults 100 / 200: a user's tabs and devices fit, one credential or
        one address cannot take the whole server. Loopback addresses are not
        counted per host (every local client shares 127.0.0.1: that bound
        would be a second total). None disables either bound; do that for
        principals that are shared secrets rather than users (``wshub
        serve``'s static tokens).
    ``retry_after``
        Seconds put in the ``Retry-After`` header of those refusals. Default 5.
    ``max_envelope_size``
        Largest client envelope (UTF-8 bytes); beyond, ``payload_too_large``.
        Default 256 KiB: ordinary JSON traffic; the connection core's
        ``Limits.max_message_size`` still bounds the frame itself.
    ``max_depth``
        Deepest nesting of a client envelope, the envelope object counting as
        1; beyond, ``payload_too_deep``. Default 32.
    ``max_errors`` / ``error_window``
        More than ``max_errors`` errors caused by one connection within
        ``error_window`` seconds closes it with 1008. Defaults 10 / 60 s.
    ``max_pending_commands``
        Commands of one connection awaiting their reply; beyond,
        ``too_many_pending``. Default 16.
    ``default_command_timeout``
        Time a command may take when ``register_command`` gives none; then
        the client gets ``command_timeout``. Default 10 s.
    ``max_subscriptions``
        Topics one connection may be subscribed to; beyond,
        ``too_many_subscriptions``. Default 256.
    ``accept_binary``
        Report binary messages as ``BinaryReceived`` events; when False
        (default) a binary message closes the connection with 1003.
    ``send_welcome``
        Send the ``welcome`` envelope when a connection is added. Default True.
    ``auth_timeout``
        Time a connection accepted without credentials (first-message auth)
        has to send a valid ``auth`` message; then 1008. Default 10 s.
    ``message_rate`` / ``message_burst``
        Inbound messages per second per connection (a token bucket holding
        ``message_burst``). A message beyond it is not processed: the client
        gets a ``rate_limited`` error, which counts toward ``max_errors``
        (so a sustained flood is closed with 1008). ``message_rate=None``
        disables the limit. Defaults 1000/s and 2000.
    ``auth_failure_rate`` / ``auth_failure_burst``
        Failed authentications (401) allowed per remote address: a bucket of
        ``auth_failure_burst`` refilled at ``auth_failure_rate`` per second.
        While it is empty, handshakes from that address get 429 with
        ``Retry-After`` before any token is checked. Origin and Host
        refusals (403) do not count, so a foreign web page cannot lock local
        clients out. ``auth_failure_rate=None`` disables it. Defaults 1/s
        and 100.
    ``history_size`` / ``history_ttl`` / ``history_topic_bytes``
        History kept per topic unless ``Hub.configure_topic`` says otherwise:
        the last ``history_size`` published envelopes (0, the default: none),
        each for ``history_ttl`` seconds (default 300; ``math.inf``: no age
        bound), at most ``history_topic_bytes`` of envelopes per topic
        (default 1 MiB). A topic with history lives while it has subscribers
        or history, so a publish with nobody subscribed is numbered and kept.
    ``max_history_bytes``
        Envelope bytes kept in the history of all topics together; past it
        the oldest entries of all topics go first. Default 64 MiB.
    ``max_history_page``
        Most messages one ``history`` request returns (a larger ``limit`` is
        capped to it). Default 1000.
    """

    max_connections: int | None = None
    max_per_principal: int | None = 100
    max_per_host: int | None = 200
    retry_after: int = 5
    max_envelope_size: int = 256 * 1024
    max_depth: int = 32
    max_errors: int = 10
    error_window: float = 60.0
    max_pending_commands: int = 16
    default_command_timeout: float = 10.0
    max_subscriptions: int = 256
    accept_binary: bool = False
    send_welcome: bool = True
    auth_timeout: float = 10.0
    message_rate: float | None = 1000.0
    message_burst: int = 2000
    auth_failure_rate: float | None = 1.0
    auth_failure_burst: int = 100
    history_size: int = 0
    history_ttl: float = 300.0
    history_topic_bytes: int = 1 << 20
    max_history_bytes: int = 64 << 20
    max_history_page: int = 1000

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_per_principal", "max_per_host"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value <= 0
            ):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        for name in (
            "max_envelope_size",
            "max_depth",
            "max_pending_commands",
            "max_subscriptions",
            "message_burst",
            "auth_failure_burst",
            "history_topic_bytes",
            "max_history_bytes",
            "max_history_page",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        size = self.history_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"history_size must be an integer >= 0, got {size!r}")
        check_history_settings(None, self.history_ttl)
        if isinstance(self.max_errors, bool) or self.max_errors < 0:
            raise ValueError(f"max_errors must be >= 0, got {self.max_errors!r}")
        if self.retry_after < 0:
            raise ValueError(f"retry_after must be >= 0, got {self.retry_after!r}")
        for name in ("message_rate", "auth_failure_rate"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive or None, got {value!r}")
        for name in ("error_window", "default_command_timeout", "auth_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
