"""Which peer addresses are trusted proxies: exact addresses or CIDR ranges, IPv4 or IPv6."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    """`"10.0.0.1"` or `"10.0.0.0/8"` or `"::1"`; raises ValueError naming a bad entry."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or CIDR range") from None
    return tuple(networks)


class PeerMatcher:
    """Tells whether an address lies in one of the configured networks (cached per address:
    the same few peers ask again and again)."""

    def __init__(self, entries: tuple[str, ...]) -> None:
        self.networks = parse_networks(entries)
        self.matches = lru_cache(maxsize=4096)(self._matches)

    def _matches(self, address: str) -> bool:
        if not self.networks:
            return False
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)
