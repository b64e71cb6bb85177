"""How many connections this process can hold: the default ``max_connections``."""

from __future__ import annotations

__all__ = ["descriptor_budget"]

_DESCRIPTOR_HEADROOM = 100  # listeners, logs, worker threads, the 503s themselves


def descriptor_budget() -> int:
    """Connections this process can hold while keeping descriptors to answer 503.

    The soft ``RLIMIT_NOFILE`` minus 100 descriptors of headroom for
    listeners, logs, threads and the refusals themselves; 10 000 where the
    limit cannot be read.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return 10_000
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 100_000
    return max(1, soft - _DESCRIPTOR_HEADROOM)
