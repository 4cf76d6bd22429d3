"""`classify`: the one decision about an attempt's outcome, as a pure function."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from adapters.base import InvalidEvent, Retryable, Unsupported
from gateway.delivery.retry import RetryPolicy
from gateway.delivery.verdict import Outcome, classify, crashed, refused, released

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
POLICY = RetryPolicy(base_delay=10, max_delay=300, jitter=0.0)


def decide(outcome: Outcome, attempt: int = 1, first: datetime = NOW):
    return classify(outcome, attempt=attempt, first_attempt_at=first, now=NOW, policy=POLICY)


def test_a_2xx_answer_is_delivered() -> None:
    verdict = decide(Outcome(status=204))
    assert (verdict.state, verdict.reason, verdict.counts) == ("delivered", None, True)


@pytest.mark.parametrize("status", [400, 401, 404, 501, 505])
def test_other_answers_are_dead_with_the_status_and_body(status: int) -> None:
    verdict = decide(Outcome(status=status, text="bad request"))
    assert verdict.state == "dead" and verdict.reason == f"HTTP {status}: bad request"


@pytest.mark.parametrize("status", [408, 429, 500, 503])
def test_retryable_answers_retry_after_the_backoff(status: int) -> None:
    verdict = decide(Outcome(status=status), attempt=2)
    assert verdict.state == "retrying" and verdict.at == NOW + timedelta(seconds=20)


def test_retry_after_wins_when_longer_and_is_capped_with_a_note() -> None:
    assert decide(Outcome(status=429, retry_after="120")).at == NOW + timedelta(seconds=120)
    capped = decide(Outcome(status=429, retry_after="99999999"))
    assert capped.at == NOW + timedelta(seconds=POLICY.retry_window)
    assert "Retry-After 99999999 s capped to 10800 s" in (capped.reason or "")


def test_no_answer_retries_with_its_error_class_and_no_status() -> None:
    verdict = decide(Outcome(error_class="ConnectionError", text="refused"))
    assert verdict.state == "retrying" and verdict.reason == "ConnectionError: refused"


def test_give_up_needs_the_attempts_and_the_window() -> None:
    old = NOW - timedelta(hours=4)
    assert decide(Outcome(status=503), attempt=3, first=old).state == "dead"
    assert decide(Outcome(status=503), attempt=2, first=old).state == "retrying"
    assert decide(Outcome(status=503), attempt=9, first=NOW).state == "retrying"


def test_adapter_refusals() -> None:
    assert decide(refused(Unsupported("no screen"))).state == "skipped"
    dead = decide(refused(InvalidEvent("userId is required")))
    assert dead.state == "dead" and dead.reason == "InvalidEvent: userId is required"
    later = decide(refused(Retryable("lookup answered 503", retry_after=90)))
    assert later.state == "retrying" and later.at == NOW + timedelta(seconds=90)


def test_a_rejected_batch_item_is_dead_though_the_request_succeeded() -> None:
    verdict = decide(Outcome(status=207, error_class="ItemRejected", text="x",
                             rejected="reason: invalid, field: email"))
    assert verdict.state == "dead"
    assert verdict.reason == "ItemRejected: reason: invalid, field: email"


def test_released_and_crashed() -> None:
    back = decide(released("circuit open", NOW + timedelta(seconds=30)))
    assert (back.state, back.counts, back.at) == ("retrying", False, NOW + timedelta(seconds=30))
    crash = decide(crashed(KeyError("x")))
    assert crash.state == "retrying" and crash.reason == "KeyError: internal error"
