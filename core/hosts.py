"""The Host allowlist: the defence against DNS rebinding.

A page on ``http://evil.example`` can make its own name resolve to 127.0.0.1
and then reach a local server as "same origin": Origin and Host are both the
attacker's name. What it cannot change is that name in the ``Host`` header,
so a server bound to loopback answers only requests addressed to a loopback
name (``ServerConnection(allowed_hosts=loopback_hosts(port))``); anything
else gets 403 before any handler sees it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = ["HostAllowlist", "is_loopback", "loopback_hosts", "normalize_hosts"]

_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
# RFC 9110 §7.2 / RFC 6455 §3: Host omits the port only when it is the scheme's
# default, 80 for http/ws and 443 for https/wss.
_DEFAULT_PORTS = (80, 443)


def loopback_hosts(port: int) -> frozenset[str]:
    """Every ``Host`` value a local client uses to reach ``port`` on loopback.

    ``localhost:P``, ``127.0.0.1:P`` and ``[::1]:P``; for port 80 or 443 also
    the names without a port, which is how clients write the default port.
    """
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"port must be the bound port, 1-65535, got {port!r}")
    hosts = {f"{name}:{port}" for name in _LOOPBACK_NAMES}
    if port in _DEFAULT_PORTS:
        hosts.update(_LOOPBACK_NAMES)
    return HostAllowlist(hosts)


def is_loopback(bind_host: str) -> bool:
    """Is ``bind_host`` (an address to bind, as given to a server) loopback-only?

    True for ``localhost`` and any address in 127.0.0.0/8 or ``::1`` (with or
    without brackets). False for wildcard addresses (``""``, ``0.0.0.0``,
    ``::``) and for any other name: the core does not resolve names.
    """
    host = bind_host.strip().lower()
    if host.rstrip(".") == "localhost":
        return True
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def normalize_hosts(hosts: Iterable[str]) -> frozenset[str]:
    """An allowlist as compared: exact ``host[:port]`` values, lower-cased.

    A bare string is refused (iterating it would allow single characters).
    """
    if isinstance(hosts, HostAllowlist):
        return hosts  # normalized once: shared by every connection, not re-checked
    if isinstance(hosts, str | bytes):
        raise TypeError("allowed_hosts must be a collection of host[:port] strings, not one string")
    out: set[str] = set()
    for host in hosts:
        if not isinstance(host, str) or not host.strip() or any(c.isspace() for c in host.strip()):
            raise ValueError(f"not a host[:port] value: {host!r}")
        out.add(host.strip().lower())
    return HostAllowlist(out)


class HostAllowlist(frozenset[str]):
    """A normalized allowlist (what ``normalize_hosts`` returns): passing it
    again costs nothing, so a server builds it once for all connections."""

    __slots__ = ()
