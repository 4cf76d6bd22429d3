"""The status rule (adapters/status) and the backoff / give-up rules, as tables."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pytest

from adapters.status import is_retryable_status, is_success
from gateway.config import RetrySettings
from gateway.delivery.retry import RetryPolicy, parse_retry_after

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("status,verdict", [
    (200, "delivered"), (201, "delivered"), (202, "delivered"), (204, "delivered"),
    (207, "delivered"),
    (408, "retry"), (429, "retry"), (500, "retry"), (502, "retry"), (503, "retry"),
    (504, "retry"), (599, "retry"),
    (501, "dead"), (505, "dead"), (400, "dead"), (401, "dead"), (403, "dead"), (404, "dead"),
    (413, "dead"), (422, "dead"), (301, "dead"),
])
def test_the_status_rule(status: int, verdict: str) -> None:
    said = ("delivered" if is_success(status)
            else "retry" if is_retryable_status(status) else "dead")
    assert said == verdict


def test_backoff_doubles_from_10s_to_a_5_minute_cap() -> None:
    policy = RetryPolicy(jitter=0)
    assert [policy.delay(n) for n in range(1, 8)] == [10, 20, 40, 80, 160, 300, 300]


def test_jitter_stays_within_its_fraction() -> None:
    policy = RetryPolicy()
    rng = random.Random(7)
    delays = [policy.delay(2, rng=rng) for _ in range(200)]
    assert all(16 <= d <= 24 for d in delays) and len(set(delays)) > 100


def test_retry_after_is_honoured_when_longer() -> None:
    policy = RetryPolicy(jitter=0)
    assert policy.delay(1, retry_after=120) == 120
    assert policy.delay(3, retry_after=1) == 40


def test_give_up_needs_both_attempts_and_age() -> None:
    policy = RetryPolicy()
    old = NOW - timedelta(hours=3, seconds=1)
    assert not policy.gives_up(2, old, NOW)  # old, but too few attempts
    assert not policy.gives_up(50, NOW - timedelta(hours=2), NOW)  # many, but young
    assert policy.gives_up(3, old, NOW)


@pytest.mark.parametrize("value,seconds", [
    ("120", 120.0), (" 7 ", 7.0), ("Tue, 24 Nov 2026 12:01:30 GMT", 90.0),
    ("Tue, 24 Nov 2026 11:00:00 GMT", 0.0), ("soon", None), ("", None), (None, None),
])
def test_parse_retry_after(value, seconds) -> None:
    assert parse_retry_after(value, NOW) == seconds


@pytest.mark.parametrize("value,seconds", [
    ("99999999999999", 99999999999999.0),
    ("9" * 400, math.inf),  # past a float's range: inf, never an error
    ("Fri, 31 Dec 9999 23:59:59 GMT", (datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
                                       - NOW).total_seconds()),
    ("Fri, 31 Dec 99999 23:59:59 GMT", math.inf),  # past datetime's range
    ("²", None), ("-5", None), ("1e9", None), ("Tue, 99 Nov 2026 12:01:30 GMT", None),
])
def test_parse_retry_after_of_any_size(value, seconds) -> None:
    assert parse_retry_after(value, NOW) == seconds


@pytest.mark.parametrize("asked", [99999999999999.0, math.inf, 1e300, 10800.5])
def test_retry_after_is_capped_to_the_give_up_window(asked: float) -> None:
    policy = RetryPolicy(jitter=0)
    assert policy.capped(asked) == 10800
    assert policy.delay(1, retry_after=asked) == 10800
    NOW + timedelta(seconds=policy.delay(1, retry_after=asked))  # a datetime can hold it


def test_retry_after_within_the_window_is_not_capped() -> None:
    policy = RetryPolicy(jitter=0)
    assert policy.capped(3600) == 3600 and policy.cap_note(3600, "3600") is None
    assert policy.capped(math.nan) == 0
    assert policy.delay(1, retry_after=math.nan) == 10


def test_the_cap_is_recorded_in_words() -> None:
    policy = RetryPolicy()
    assert policy.cap_note(99999999999999.0, "99999999999999") == (
        "Retry-After 99999999999999 s capped to 10800 s")
    assert policy.cap_note(math.inf, "Fri, 31 Dec 99999 23:59:59 GMT") == (
        "Retry-After Fri, 31 Dec 99999 23:59:59 GMT (beyond any date) capped to 10800 s")
    assert policy.cap_note(20000.0, None) == "Retry-After 20000 s capped to 10800 s"


def test_the_policy_defaults_are_the_settings_defaults() -> None:
    """Defined once (config.RetrySettings); the policy is built from settings, never apart."""
    assert RetryPolicy() == RetryPolicy.from_settings(RetrySettings())
    tuned = RetryPolicy.from_settings(RetrySettings(base_delay_seconds=2, max_delay_seconds=9,
                                                    min_attempts=5, retry_window_seconds=60))
    assert (tuned.base_delay, tuned.max_delay, tuned.min_attempts, tuned.retry_window,
            tuned.jitter) == (2, 9, 5, 60, RetryPolicy().jitter)
