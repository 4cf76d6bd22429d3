"""Who the client is behind `[server] trusted_proxies`: the rightmost untrusted X-Forwarded-For.

Each proxy appends the address that connected to it, so only the entries to the right are
written by machines we trust; the leftmost is whatever the client chose to send. Walking from
the right and stopping at the first address outside the trusted networks gives the client as
the nearest trusted proxy saw it, which a client cannot forge.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from flask import request

from gateway.http.peers import is_trusted, networks, parse_address

if TYPE_CHECKING:
    from gateway.config import Config

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
