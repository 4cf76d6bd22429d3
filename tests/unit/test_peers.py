"""Trusted-proxy matching: exact addresses and CIDR ranges, IPv4, IPv6 and v4-mapped IPv6."""

import pytest

from gateway.http.peers import PeerMatcher, networks


def test_exact_addresses_and_ranges_match() -> None:
    matcher = PeerMatcher(("10.0.0.0/8", "192.168.1.7", "fd00::/8"))
    assert matcher.matches("10.200.3.4")
    assert matcher.matches("192.168.1.7")
    assert not matcher.matches("192.168.1.8")
    assert matcher.matches("fd12::1")
    assert matcher.matches("::ffff:10.1.2.3")  # an IPv4 peer seen on a dual-stack socket
    assert not matcher.matches("11.0.0.1")
    assert not matcher.matches("not an address")
    assert not PeerMatcher(()).matches("10.0.0.1")


def test_a_bad_entry_is_named() -> None:
    with pytest.raises(ValueError, match=r"'10\.0\.0\.300' is not an IP address or CIDR network"):
        networks(("10.0.0.300",))
