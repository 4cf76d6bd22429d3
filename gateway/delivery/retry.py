"""The one classifier and the backoff / give-up rules (DESIGN.md §2.5), as pure functions.

RudderStack's router defaults: 10 s doubling to a 5 min cap; give up only once a delivery has
had at least 3 attempts **and** its first attempt is more than 3 h old.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime


class Verdict(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD = "dead"


def is_retryable_status(status: int) -> bool:
    """408, 429 and 5xx except 501 and 505 are worth another try; other 4xx never are."""
    return status in (408, 429) or (500 <= status <= 599 and status not in (501, 505))


def classify_status(status: int) -> Verdict:
    if 200 <= status <= 299:
        return Verdict.DELIVERED
    return Verdict.RETRY if is_retryable_status(status) else Verdict.DEAD


@dataclass(frozen=True)
class RetryPolicy:
    base_delay: float = 10.0  # seconds before the 2nd attempt
    max_delay: float = 300.0
    min_attempts: int = 3
    retry_window: float = 3 * 3600.0  # seconds since the first attempt
    jitter: float = 0.2  # ± fraction of the delay

    def delay(self, attempts: int, retry_after: float | None = None,
              rng: random.Random | None = None) -> float:
        """Seconds to wait after the `attempts`-th failed attempt; `Retry-After` wins when
        it asks for longer (never past the cap's reason to exist: a destination's own ask)."""
        exponential = min(self.max_delay, self.base_delay * 2 ** max(0, attempts - 1))
        spread = exponential * self.jitter
        delay = exponential + (rng or random).uniform(-spread, spread)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return max(0.0, delay)

    def gives_up(self, attempts: int, first_attempt_at: datetime, now: datetime) -> bool:
        return (attempts >= self.min_attempts
                and (now - first_attempt_at) > timedelta(seconds=self.retry_window))


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """`Retry-After` as delta-seconds or an HTTP date → seconds from now (None if unusable)."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())
