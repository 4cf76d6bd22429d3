"""X-Forwarded-For: the rightmost entry not written by a trusted proxy is the client."""

from __future__ import annotations

import pytest

from gateway.http.forwarded import client_address, gunicorn_allow_list
from gateway.http.peers import parse_network

TRUSTED = ("10.0.0.0/8", "192.0.2.1", "2001:db8::/32")


@pytest.mark.parametrize(
    "peer,header,expected",
    [
        ("203.0.113.5", "1.1.1.1", "203.0.113.5"),  # not a proxy: its header means nothing
        ("10.0.0.1", "", "10.0.0.1"),
        ("10.0.0.1", "6.6.6.6, 198.51.100.2", "198.51.100.2"),  # the leftmost is client-chosen
        ("10.0.0.1", "6.6.6.6, 198.51.100.2, 10.9.9.9, 192.0.2.1", "198.51.100.2"),  # proxy chain
        ("10.0.0.1", "10.1.1.1, 10.2.2.2", "10.1.1.1"),  # all trusted: the furthest we can see
        ("10.0.0.1", "6.6.6.6, not-an-ip, 10.2.2.2", "10.2.2.2"),  # the chain breaks: stop
        ("10.0.0.1", "not-an-ip", "10.0.0.1"),
        ("10.0.0.1", "198.51.100.2:4711", "198.51.100.2"),  # with a port (some proxies)
        ("10.0.0.1", "[2001:db9::7]:443, 2001:db8::1", "2001:db9::7"),
        ("2001:db8::5", "198.51.100.2", "198.51.100.2"),
        ("::ffff:10.0.0.1", "198.51.100.2", "198.51.100.2"),  # an IPv4 proxy on a dual-stack port
        ("10.0.0.1", " , 198.51.100.2 ,", "198.51.100.2"),
    ],
)
def test_rightmost_untrusted(peer: str, header: str, expected: str) -> None:
    assert client_address(peer, header, TRUSTED) == expected


def test_no_trusted_proxies_means_the_peer() -> None:
    assert client_address("10.0.0.1", "1.1.1.1", ()) == "10.0.0.1"
    assert client_address(None, "1.1.1.1", TRUSTED) is None


def test_networks_and_the_gunicorn_list() -> None:
    assert str(parse_network("10.1.2.3/8")) == "10.0.0.0/8"
    with pytest.raises(ValueError, match="not an IP address or CIDR network"):
        parse_network("proxy.internal")
    assert gunicorn_allow_list(("10.0.0.0/8", "::1")) == "10.0.0.0/8,::ffff:a00:0/104,::1/128"
    assert gunicorn_allow_list(()) == ""
