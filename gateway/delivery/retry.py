"""The backoff / give-up rules (docs/design.md §2.5), as pure functions.

RudderStack's router defaults: 10 s doubling to a 5 min cap; give up only once a delivery has
had at least 3 attempts **and** its first attempt is more than 3 h old.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_tz

from gateway.config import RetrySettings

_DEFAULTS = RetrySettings()  # the defaults are defined once, where the config declares them


@dataclass(frozen=True)
class RetryPolicy:
    """`RetrySettings` (gateway/config/model.py) at work: its defaults are the settings' own."""

    base_delay: float = float(_DEFAULTS.base_delay_seconds)  # seconds before the 2nd attempt
    max_delay: float = float(_DEFAULTS.max_delay_seconds)
    min_attempts: int = _DEFAULTS.min_attempts
    retry_window: float = float(_DEFAULTS.retry_window_seconds)  # since the first attempt
    jitter: float = 0.2  # ± fraction of the delay

    @classmethod
    def from_settings(cls, settings: RetrySettings) -> RetryPolicy:
        return cls(base_delay=settings.base_delay_seconds, max_delay=settings.max_delay_seconds,
                   min_attempts=settings.min_attempts,
                   retry_window=settings.retry_window_seconds)

    def delay(self, attempts: int, retry_after: float | None = None,
              rng: random.Random | None = None) -> float:
        """Seconds to wait after the `attempts`-th failed attempt; `Retry-After` wins when
        it asks for longer, but never for longer than the give-up window (`capped`)."""
        exponential = min(self.max_delay, self.base_delay * 2 ** max(0, min(attempts, 64) - 1))
        spread = exponential * self.jitter
        delay = exponential + (rng or random).uniform(-spread, spread)
        if retry_after is not None:
            delay = max(delay, self.capped(retry_after))
        return max(0.0, delay)

    def capped(self, retry_after: float) -> float:
        """A destination's `Retry-After` in seconds, at most the give-up window: any size
        (even inf or NaN) gives a finite wait that a datetime can hold."""
        if math.isnan(retry_after):
            return 0.0
        return max(0.0, min(retry_after, float(self.retry_window)))

    def cap_note(self, retry_after: float | None, raw: str | None = None) -> str | None:
        """What the attempt record says when `Retry-After` was capped (None: it was not)."""
        if retry_after is None or retry_after <= self.retry_window:
            return None
        shown = " ".join((raw or "").split())[:60]
        window = f"{self.retry_window:.0f} s"
        if shown and _DELTA_SECONDS.fullmatch(shown):
            return f"Retry-After {shown} s capped to {window}"
        asked = f"{retry_after:.0f} s" if math.isfinite(retry_after) else "beyond any date"
        return f"Retry-After {shown or asked}{f' ({asked})' if shown else ''} capped to {window}"

    def gives_up(self, attempts: int, first_attempt_at: datetime, now: datetime) -> bool:
        return (attempts >= self.min_attempts
                and (now - first_attempt_at) > timedelta(seconds=self.retry_window))


_DELTA_SECONDS = re.compile(r"[0-9]+")


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """`Retry-After` as delta-seconds or an HTTP date → seconds from now (None if unusable).

    Any size is returned as it is (up to inf for a number or a year past 9999): capping it is
    the policy's job (`RetryPolicy.capped`); nothing here raises."""
    if not value:
        return None
    text = value.strip()
    if _DELTA_SECONDS.fullmatch(text):  # ASCII digits only ("²".isdigit() is True)
        return float(text)  # float() has no digit limit; past 1e308 it is inf
    try:
        parts = parsedate_tz(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parts is None or parts[9] is None:  # no zone: not an HTTP date
        return None
    year = parts[0]
    if year > 9999:
        return math.inf
    try:
        when = datetime(*parts[:6], tzinfo=UTC) - timedelta(seconds=parts[9] or 0)
    except (ValueError, OverflowError):
        return None
    return max(0.0, (when - now).total_seconds())
