"""`[[sources]] rate_limit` and `allowed_origins`: checked at load with the field named, and
origins matched on scheme, whole host labels and port (gateway/source_limits.py)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import ConfigFileError, from_mapping
from gateway.http.source_guard import Bucket, share
from gateway.source_limits import NO_GUARD, RateLimit, parse_origins
from tests.conftest import ADMIN_TOKEN


def source_error(**fields: Any) -> str:
    raw = {"database_url": "sqlite:///x.db", "admin_token": ADMIN_TOKEN,
           "sources": [{"name": "web", "write_key": "k1", **fields}]}
    with pytest.raises(ConfigFileError) as caught:
        from_mapping(raw, "gateway.toml")
    return str(caught.value)


def guard_of(**fields: Any):
    raw = {"database_url": "sqlite:///x.db", "admin_token": ADMIN_TOKEN,
           "sources": [{"name": "web", "write_key": "k1", **fields}]}
    return from_mapping(raw, "gateway.toml").sources[0].guard


def test_a_source_without_either_is_unbounded() -> None:
    guard = guard_of()
    assert guard is NO_GUARD
    assert guard.origin_allowed("https://anything.example") and guard.rate_limit is None
    assert guard.describe() == "no rate limit; any origin"


def test_rate_limit_loads_and_the_burst_defaults_to_one_second() -> None:
    assert guard_of(rate_limit={"events_per_second": 100, "burst": 250}).rate_limit == \
        RateLimit(100.0, 250)
    assert guard_of(rate_limit={"events_per_second": 2.5}).rate_limit == RateLimit(2.5, 3)
    assert guard_of(rate_limit={"events_per_second": 0.1}).rate_limit == RateLimit(0.1, 1)


@pytest.mark.parametrize(("value", "expected"), [
    (100, "field 'rate_limit': must be a table"),
    ({"burst": 5}, "'events_per_second' is required"),
    ({"events_per_second": 0}, "'events_per_second' must be a number above 0"),
    ({"events_per_second": -1}, "'events_per_second' must be a number above 0"),
    ({"events_per_second": True}, "'events_per_second' must be a number above 0"),
    ({"events_per_second": float("inf")}, "'events_per_second' must be a number above 0"),
    ({"events_per_second": "100"}, "'events_per_second' must be a number above 0"),
    ({"events_per_second": 10, "burst": 0}, "'burst' must be a whole number from 1"),
    ({"events_per_second": 10, "burst": 2.5}, "'burst' must be a whole number from 1"),
    ({"events_per_second": 10, "bursts": 2}, "unknown field 'bursts' (did you mean 'burst'?)"),
])
def test_bad_rate_limits_name_the_source_and_the_field(value: Any, expected: str) -> None:
    message = source_error(rate_limit=value)
    assert message.startswith("gateway.toml: [[sources]] #1 ('web'): field 'rate_limit': ")
    assert expected in message


@pytest.mark.parametrize(("value", "expected"), [
    ("https://shop.example.com", "must be a non-empty array"),
    ([], "must be a non-empty array"),
    ([7], "entry 1 must be a string"),
    (["shop.example.com"], "entry 1 'shop.example.com': must be scheme://host[:port]"),
    (["https://shop.example.com/"], "no path (not even a trailing '/')"),
    (["https://shop.example.com/cart"], "no path"),
    (["https://user@shop.example.com"], "no path"),
    (["https://*"], "the last label must be a name"),
    (["https://example.*"], "the last label must be a name"),
    (["https://sh*p.example.com"], "'*' stands for whole labels only"),
    (["https://*shop.example.com"], "'*' stands for whole labels only"),
    (["https://shop.example.com:0"], "the port must be a number from 1 to 65535"),
    (["https://shop.example.com:99999"], "the port must be a number from 1 to 65535"),
    (["https://shop.example.com:https"], "the port must be a number"),
    (["https://shop_1.example.com"], "'shop_1' is not a host name label"),
    (["https://shop..example.com"], "'' is not a host name label"),
    (["https://ok.example.com", "ftp//x"], "entry 2 'ftp//x'"),
    (["https://a.example.com"] * 101, "at most 100 origins"),
])
def test_bad_origins_name_the_entry_and_the_rule(value: Any, expected: str) -> None:
    message = source_error(allowed_origins=value)
    assert message.startswith("gateway.toml: [[sources]] #1 ('web'): field 'allowed_origins': ")
    assert expected in message


def test_an_unknown_source_field_still_suggests_the_new_ones() -> None:
    assert "did you mean 'allowed_origins'?" in source_error(allowed_origin=["https://a.b"])


PATTERNS = ["https://shop.example.com", "https://*.example.com", "http://localhost:3000",
            "https://*.eu.*.example.org", "capacitor://localhost", "http://[::1]:8080"]


@pytest.mark.parametrize(("origin", "allowed"), [
    ("https://shop.example.com", True),
    ("https://SHOP.Example.COM", True),  # host and scheme are case-insensitive
    ("https://shop.example.com:443", True),  # the default port is no port
    ("https://a.example.com", True),
    ("https://a.b.example.com", True),  # one or more labels
    ("https://example.com", False),  # …but at least one
    ("http://shop.example.com", False),  # the scheme exactly
    ("https://shop.example.com:8443", False),  # the port exactly
    ("https://evilexample.com", False),
    ("https://example.com.evil.io", False),
    ("https://shop.example.com.evil.io", False),
    ("https://shop.example.com/", False),  # not an origin
    ("http://localhost:3000", True),
    ("http://localhost", False),
    ("http://localhost:3001", False),
    ("https://x.eu.y.z.example.org", True),  # each `*` at its own position
    ("https://x.us.y.example.org", False),
    ("https://eu.y.example.org", False),
    ("capacitor://localhost", True),
    ("http://[::1]:8080", True),
    ("null", False),
    ("", False),
    ("https://*.example.com", False),  # a literal `*` in a header is no host
    ("https://" + "a." * 2000 + "example.com", False),  # longer than any origin: refused
])
def test_origin_matching(origin: str, allowed: bool) -> None:
    guard = guard_of(allowed_origins=PATTERNS)
    assert guard.origin_allowed(origin) is allowed
    assert guard.origin_allowed(None)  # no Origin header: a server SDK, never refused


def test_describe_lists_both_as_configured() -> None:
    guard = guard_of(rate_limit={"events_per_second": 100, "burst": 200},
                     allowed_origins=["https://shop.example.com", "https://*.example.com"])
    assert guard.describe() == ("rate limit 100 events/s, burst 200; origins "
                                "https://shop.example.com, https://*.example.com")
    assert [p.text for p in parse_origins(["https://A.example.com:443"])] == \
        ["https://A.example.com:443"]


def test_bucket_burst_refill_and_a_batch_larger_than_the_burst() -> None:
    now = [0.0]
    bucket = Bucket(2.0, 4.0, clock=lambda: now[0])
    assert bucket.take(3) == 0 and bucket.take(1) == 0
    assert bucket.take(1) == pytest.approx(0.5)  # 1 event at 2/s
    now[0] += 0.5
    assert bucket.take(1) == 0
    assert bucket.take(10) == pytest.approx(2.0)  # waits for a full bucket (4 at 2/s)
    now[0] += 2.0
    assert bucket.take(10) == 0  # let in when full: never refused forever
    assert bucket.tokens == pytest.approx(-6.0)  # …and paid for: the rate holds on average
    assert bucket.take(1) == pytest.approx(3.5)


def test_the_share_of_each_process() -> None:
    limit = RateLimit(100.0, 10)
    assert share(limit, 1) == (100.0, 10.0)
    assert share(limit, 4) == (25.0, 2.5)
    assert share(limit, 0) == (100.0, 10.0)
    assert share(RateLimit(1.0, 1), 3) == (pytest.approx(1 / 3), 1.0)  # a bucket holds ≥ 1
