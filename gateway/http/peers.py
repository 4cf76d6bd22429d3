"""Peer addresses and the trusted-proxy networks they are checked against (`[server]
trusted_proxies`: exact addresses or CIDR ranges, IPv4 or IPv6). No Flask here: the gunicorn
worker's connection cap uses it before any request exists."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_network(text: str) -> Network:
    """`10.0.0.1`, `10.0.0.0/8` or `2001:db8::/32` → a network (host bits are cleared).
    Raises ValueError with a message fit for the user."""
    text = text.strip()
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an IP address or CIDR network "
            "(e.g. 10.0.0.1, 10.0.0.0/8, 2001:db8::/32)"
        ) from None


@functools.lru_cache(maxsize=8)
def networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    """The parsed `[server] trusted_proxies` (checked at config load; cached per config)."""
    return tuple(parse_network(entry) for entry in entries)


def parse_address(text: str) -> Address | None:
    """An address as proxies and sockets write it: bare, `[v6]`, `[v6]:port`, `v4:port` or
    IPv4-mapped IPv6 (→ the IPv4 address); None when it is not an address."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address


def is_trusted(address: Address | None, trusted: Iterable[Network]) -> bool:
    return address is not None and any(address in network for network in trusted)


class PeerMatcher:
    """Tells whether a peer address lies in the configured networks (cached per address: the
    same few peers ask again and again)."""

    def __init__(self, entries: tuple[str, ...]) -> None:
        self.networks = networks(tuple(entries))
        self.matches = functools.lru_cache(maxsize=4096)(self._matches)

    def _matches(self, address: str) -> bool:
        return bool(self.networks) and is_trusted(parse_address(address), self.networks)
