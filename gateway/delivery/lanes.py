"""Sending capacity per destination, so one destination's trouble never slows the others.

Each destination gets a lane: its own threads, a count of what it has in flight, and a running
average of how long one of its deliveries takes. The worker claims for a lane only what the lane
can send within half a lease (`free()`): a destination answering in 2 ms gets a full claim
batch at once, one that hangs until the read timeout gets no more than it has threads, so its
claimed deliveries never wait in a queue long enough for their lease to expire, and its backlog
never crowds other destinations out of a claim.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

SMOOTHING = 0.2  # weight of the newest observation in the running average


class Lane:
    def __init__(self, name: str, threads: int, batch_size: int, lease_seconds: float,
                 batching: bool = False) -> None:
        self.name = name
        self.threads = threads
        # a batching destination sends up to a claim batch per request, on each thread
        self.most = batch_size * threads if batching else batch_size
        self.lease_seconds = lease_seconds
        self.pool = ThreadPoolExecutor(threads, f"send-{name[:24]}")
        self.in_flight = 0
        self.seconds_per_delivery: float | None = None  # unknown until the first result
        self._lock = threading.Lock()

    def capacity(self) -> int:
        """How many deliveries this lane may hold: what its threads send in half a lease,
        between one per thread (slow, or not yet measured) and the claim batch size (a batch
        per thread for a batching destination)."""
        if self.seconds_per_delivery is None:
            return self.threads
        sendable = self.threads * (self.lease_seconds / 2) / max(self.seconds_per_delivery, 1e-4)
        return int(max(self.threads, min(self.most, sendable)))

    def free(self) -> int:
        """Room worth a claim: at least a quarter of the capacity, so a
        busy lane is refilled in batches, not one query per finished delivery."""
        capacity = self.capacity()
        room = capacity - self.in_flight
        return room if room >= max(1, capacity // 4) else 0

    def submit(self, work: Callable[[Any], Any], argument: Any, count: int) -> Future:
        """Run `work(argument)` (`count` deliveries) on this lane's threads; they count as in
        flight until `collected`."""
        self.in_flight += count
        return self.pool.submit(self._timed, work, argument, count)

    def collected(self, count: int) -> None:
        self.in_flight -= count

    def _timed(self, work: Callable[[Any], Any], argument: Any, count: int) -> Any:
        started = time.monotonic()
        try:
            return work(argument)
        finally:
            self._observe(count, time.monotonic() - started)

    def _observe(self, count: int, seconds: float) -> None:
        if count <= 0:
            return
        per = seconds / count
        with self._lock:
            previous = self.seconds_per_delivery
            self.seconds_per_delivery = per if previous is None else (
                previous + SMOOTHING * (per - previous))

    def close(self) -> None:
        self.pool.shutdown(wait=True)
