"""Who the client is behind `[server] trusted_proxies`: the rightmost untrusted X-Forwarded-For.

Each proxy appends the address that connected to it, so only the entries to the right are
written by machines we trust; the leftmost is whatever the client chose to send. Walking from
the right and stopping at the first address outside the trusted networks gives the client as
the nearest trusted proxy saw it, which a client cannot forge.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from typing import TYPE_CHECKING

from flask import request

if TYPE_CHECKING:
    from gateway.config import Config

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
    """An address as proxies write it: bare, `[v6]`, `[v6]:port` or `v4:port`; else None."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address


def is_trusted(address: Address | None, trusted: Iterable[Network]) -> bool:
    return address is not None and any(address in network for network in trusted)


def client_address(
    peer: str | None, forwarded_for: str, trusted_entries: tuple[str, ...]
) -> str | None:
    """The client's address: the peer itself unless it is a trusted proxy; then the rightmost
    X-Forwarded-For entry that is not trusted (the leftmost when all are; the last trusted hop
    when the next one is not an address at all)."""
    if not peer or not trusted_entries:
        return peer
    trusted = networks(trusted_entries)
    nearest = parse_address(peer)
    if not is_trusted(nearest, trusted):
        return peer
    found = peer
    for entry in reversed(forwarded_for.split(",")):
        if not entry.strip():
            continue
        address = parse_address(entry)
        if address is None:  # written by someone we do not trust: stop at the last known hop
            return found
        found = str(address)
        if not is_trusted(address, trusted):
            return found
    return found


def request_client(config: Config) -> str | None:
    """This Flask request's client address under `config`'s trusted proxies (every
    X-Forwarded-For header, in order: a proxy may add its own instead of appending)."""
    header = ",".join(request.headers.getlist("X-Forwarded-For"))
    return client_address(request.remote_addr, header, config.server.trusted_proxies)


def gunicorn_allow_list(entries: tuple[str, ...]) -> str:
    """`[server] trusted_proxies` as gunicorn's `forwarded_allow_ips` (which peers' X-Forwarded-
    Proto it believes), IPv4 entries also in their IPv4-mapped IPv6 form, as a dual-stack
    listener sees IPv4 peers. Empty: no peer is believed (gunicorn's own default is loopback)."""
    allowed = []
    for network in networks(entries):
        allowed.append(str(network))
        if network.version == 4:
            mapped = ipaddress.ip_address(f"::ffff:{network.network_address}")
            allowed.append(f"{mapped}/{96 + network.prefixlen}")
    return ",".join(allowed)
