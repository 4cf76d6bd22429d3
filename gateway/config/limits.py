"""Per-destination limits: the `[destinations.limits]` table beside `settings` (docs/design.md §8).

    [[destinations]]
    name = "cio"
    type = "customerio"
    [destinations.limits]
    concurrency = 4             # sending threads of its own (default: [worker] concurrency)
    rate_per_second = 100       # token bucket refill; 0 = no rate limit
    burst = 100                 # bucket size (default: one second's worth, at least 1)
    claim_size = 400            # deliveries claimed per round (default: [worker] batch_size)
    circuit_failures = 5        # consecutive connection failures / timeouts that open the
                                # circuit (0 = never)
    circuit_open_seconds = 30   # how long it stays open before one probe is let through

A type's documented rate is its default (adapters declare `default_rate_per_second`), so a
Customer.io destination is throttled to ~100 requests/s unless its entry says otherwise.

The rate is the destination's, across every delivery worker process: each worker's bucket
refills at `rate_per_second / live workers` (and holds `burst / live workers`, at least 1),
the live workers being the fresh `worker` rows of the heartbeats table (at least 1),
re-counted at most once per heartbeat interval. This assumes the workers share the queue
evenly: a worker alone with the whole backlog still sends only its share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gateway.config.tables import between, check_table, shape_of


@dataclass(frozen=True)
class DestinationLimits:
    concurrency: int | None = between(1, 256, None)  # None: the worker's concurrency
    rate_per_second: float = between(0, 100_000, 0.0)  # 0: unlimited
    burst: int | None = between(1, 1_000_000, None)  # None: one second's worth
    claim_size: int | None = between(1, 10_000, None)  # None: the worker's batch size
    circuit_failures: int = between(0, 1_000_000, 5)
    circuit_open_seconds: float = between(0.01, 86_400, 30.0)

    @property
    def bucket_size(self) -> int:
        if self.burst is not None:
            return self.burst
        return max(1, math.ceil(self.rate_per_second))


SHAPE = shape_of(DestinationLimits)


def parse_limits(raw: Any, default_rate: float = 0.0) -> DestinationLimits:
    """`[destinations.limits]` → DestinationLimits, or TableError naming the first bad field."""
    if raw is None:
        return DestinationLimits(rate_per_second=default_rate)
    return DestinationLimits(**{"rate_per_second": default_rate, **check_table(raw, SHAPE)})
