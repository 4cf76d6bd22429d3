"""One outcome shape and the one decision about it (docs/design.md §2.5).

Sending produces an `Outcome` (what happened: an HTTP answer, no answer, an adapter's refusal,
a crash, or "sent back unsent"); `classify` turns it into a `Verdict` (delivered, retry at a
time, dead with a reason, skipped with a reason). Recording only writes what the verdict says.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from adapters.base import AdapterError, Unsupported
from adapters.status import is_retryable_status, is_success
from gateway.delivery.retry import RetryPolicy, parse_retry_after
from gateway.store import outbox

REASON_CHARS = 500


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended, as the sender saw it. `status` is only ever a real HTTP status
    (None when no answer came; then `error_class` names why)."""

    status: int | None = None
    error_class: str | None = None  # no answer, an adapter's refusal, a crash, a rejected item
    text: str = ""  # the response body or the error text (excerpted and redacted on record)
    duration_ms: int = 0
    retry_after: str | None = None  # the Retry-After header as sent
    error: AdapterError | None = None  # the adapter refused the event
    rejected: str | None = None  # a batch item the destination refused inside a 2xx answer
    released: bool = False  # sent back unsent: no attempt happened
    not_before: datetime | None = None  # for a released delivery: when to try again
    accepted: bool = False  # the adapter judged the answer a success (a deletion's 404: gone)

    @property
    def answered(self) -> bool:
        return self.status is not None

    @property
    def label(self) -> str:
        """The attempt row's error class: ours, else `HTTP <status>` for a failing answer."""
        if self.error_class:
            return self.error_class
        return f"HTTP {self.status}" if self.status is not None else "Error"


def released(reason: str, not_before: datetime | None = None) -> Outcome:
    return Outcome(error_class="Released", text=reason, released=True, not_before=not_before)


def crashed(exc: BaseException) -> Outcome:
    """A bug (an adapter's, or ours) must not lose the delivery: it is retried."""
    return Outcome(error_class=exc.__class__.__name__, text="internal error")


def refused(error: AdapterError) -> Outcome:
    return Outcome(error_class=error.__class__.__name__, text=error.reason, error=error)


@dataclass(frozen=True)
class Verdict:
    state: str  # the next state (an outbox state)
    at: datetime  # next_attempt_at
    reason: str | None  # last_error before redaction; None when delivered
    retry_after: float | None = None  # seconds the destination asked for, uncapped
    counts: bool = True  # False: no attempt happened (released), nothing to record for it


def classify(outcome: Outcome, *, attempt: int, first_attempt_at: datetime, now: datetime,
             policy: RetryPolicy) -> Verdict:
    """The one decision. `attempt` is this attempt's number (1 for the first)."""
    if outcome.released:
        return Verdict(outbox.RETRYING, outcome.not_before or now, None,
                       counts=False)
    if outcome.accepted:
        return Verdict(outbox.DELIVERED, now, None)
    reason = f"{outcome.label}: {outcome.text[:REASON_CHARS]}"
    if outcome.error is not None:
        if isinstance(outcome.error, Unsupported):
            return Verdict(outbox.SKIPPED, now, reason)
        if not outcome.error.retryable:
            return Verdict(outbox.DEAD, now, reason)
        return _retry(reason, outcome.error.retry_after, None, attempt, first_attempt_at, now,
                      policy)
    if outcome.rejected is not None:
        return Verdict(outbox.DEAD, now, f"ItemRejected: {outcome.rejected[:REASON_CHARS]}")
    if outcome.status is not None:
        if is_success(outcome.status) and not outcome.error_class:
            return Verdict(outbox.DELIVERED, now, None)
        if not is_retryable_status(outcome.status):
            return Verdict(outbox.DEAD, now, reason)
        asked = parse_retry_after(outcome.retry_after, now)
        return _retry(reason, asked, outcome.retry_after, attempt, first_attempt_at, now, policy)
    return _retry(reason, None, None, attempt, first_attempt_at, now, policy)


def _retry(reason: str, asked: float | None, raw: str | None, attempt: int, first: datetime,
           now: datetime, policy: RetryPolicy) -> Verdict:
    if policy.gives_up(attempt, first, now):
        return Verdict(outbox.DEAD, now, reason)
    note = policy.cap_note(asked, raw)
    if note:
        reason = f"{reason} ({note})"
    delay = policy.delay(attempt, asked)
    return Verdict(outbox.RETRYING, now + timedelta(seconds=delay), reason, asked)
