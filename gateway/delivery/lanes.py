"""Sending capacity per destination, so one destination's trouble never slows the others.

Each destination gets a lane: its own threads (its concurrency budget), a count of what it has
in flight, a running average of how long one of its deliveries takes, a token bucket (its rate
limit, which a destination's own `x-ratelimit-*` headers can tighten) and a circuit breaker. The
worker claims for a lane only what the lane can send within half a lease (`free()`): a
destination answering in 2 ms gets a full claim at once, one that hangs gets no more than it has
threads, a rate-limited one no more than its tokens let it send in the next RATE_HORIZON
seconds, and one whose circuit is open gets nothing until a probe is due. A destination's
lookups and deletions pass the same breaker and bucket (`guarded`), and the bucket holds this
process's share of the rate when several workers run (`share`, see limits.py).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from adapters.base import HttpRequest, Lookup, LookupResponse, Retryable
from gateway.config.limits import DestinationLimits
from gateway.delivery.client import NoAnswer, Sent
from gateway.delivery.verdict import Outcome, released

SMOOTHING = 0.2  # weight of the newest observation in the running average
# No answer at all because the connection failed or timed out: what opens a circuit.
CONNECTION_FAILURES = frozenset({"ConnectionError", "ConnectTimeout", "ReadTimeout", "Timeout",
                                 "ConnectTimeoutError", "ReadTimeoutError", "NewConnectionError",
                                 "ProtocolError", "MaxRetryError", "TimeoutError"})
CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"
MAX_HEADER_PAUSE = 3600.0  # an x-ratelimit-reset further out than this is not believed
RATE_HORIZON = 2.0  # seconds of its rate a rate-limited lane claims ahead (capacity())


Task = tuple[Callable[[Any], Any], Any, int]  # work, its argument (the deliveries), how many


class Done(NamedTuple):
    """A finished task: its lane, its argument, and what `work` returned or raised."""

    lane: Lane
    items: Any
    result: Any
    error: Exception | None


class TokenBucket:
    """`rate` tokens a second up to `size`; `take()` waits for one. A destination that says it
    has no requests left (`pause_until`) empties the bucket until its window resets."""

    def __init__(self, rate: float, size: float, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.rate = rate
        self.size = size
        self.clock = clock
        self.tokens = float(size)
        self.stamp = clock()
        self.paused_until = 0.0
        self._lock = threading.Lock()

    def take(self, stop: threading.Event | None = None, most: float = 60.0) -> bool:
        """Wait for a token (at most `most` seconds); False if none came in time."""
        deadline = self.clock() + most
        while True:
            with self._lock:
                wait = self._wait()
                if wait <= 0:
                    self.tokens -= 1
                    return True
            if self.clock() + wait > deadline:
                return False
            if stop is not None and stop.wait(min(wait, 0.5)):
                return False
            if stop is None:
                time.sleep(min(wait, 0.5))

    def _wait(self) -> float:
        now = self.clock()
        if now < self.paused_until:
            return self.paused_until - now
        if self.rate <= 0:
            return 0.0
        self.tokens = min(self.size, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def resize(self, rate: float, size: float) -> None:
        """A new refill rate and size (this process's share of the destination's limit); the
        tokens earned so far at the old rate are kept, up to the new size."""
        with self._lock:
            if self.rate > 0:
                self._wait()
            else:
                self.stamp = self.clock()
            self.rate, self.size = rate, size
            self.tokens = min(self.tokens, float(size))

    def pause(self, seconds: float) -> None:
        with self._lock:
            self.paused_until = max(self.paused_until, self.clock() + min(seconds,
                                                                          MAX_HEADER_PAUSE))
            self.tokens = 0.0

    def available(self) -> float:
        with self._lock:
            if self.clock() < self.paused_until:
                return 0.0
            if self.rate <= 0:
                return float(self.size)
            self._wait()
            return self.tokens


class CircuitBreaker:
    """Closed → open after `failures` consecutive connection failures or timeouts; open →
    half-open after `open_seconds`, when one probe goes out; the probe's answer closes it (any
    HTTP answer: the destination is reachable), its failure opens it again."""

    def __init__(self, failures: int, open_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures
        self.open_seconds = open_seconds
        self.clock = clock
        self.state = CLOSED
        self.consecutive = 0
        self.opened_at = 0.0
        self.probing = False
        self.prober: int | None = None  # the thread the probe was let through for
        self.opened_count = 0
        self._lock = threading.Lock()

    def allow(self) -> bool:
        """May a request go out now? In half-open, only one at a time (the probe)."""
        if self.failures <= 0:
            return True
        with self._lock:
            if self.state == OPEN and self.clock() >= self.opened_at + self.open_seconds:
                self.state = HALF_OPEN
                self.probing = False
            if self.state == CLOSED:
                return True
            if self.state == HALF_OPEN and not self.probing:
                self.probing, self.prober = True, threading.get_ident()
                return True
            return False

    def observe(self, sent: Sent) -> None:
        if self.failures <= 0:
            return
        failed = sent.status is None and (sent.error_class or "") in CONNECTION_FAILURES
        with self._lock:
            if not failed:
                self.state, self.consecutive, self.probing = CLOSED, 0, False
                return
            self.consecutive += 1
            if self.state == HALF_OPEN or self.consecutive >= self.failures:
                if self.state != OPEN:
                    self.opened_count += 1
                self.state, self.opened_at, self.probing = OPEN, self.clock(), False

    def release(self) -> None:
        """A probe let through by `allow()` that never went out (no token, a bug): let the
        next one go, instead of waiting forever for an answer that cannot come."""
        with self._lock:
            if self.state == HALF_OPEN:
                self.probing = False

    def abandon(self) -> None:
        """Called by a sending thread after each task: a probe this thread was let through
        for and that neither an answer nor `release` settled (the client raised before the
        request went out, and the send was recorded as a crash) is given back; otherwise the
        circuit would stay half-open with a probe out forever."""
        with self._lock:
            if (self.state == HALF_OPEN and self.probing
                    and self.prober == threading.get_ident()):
                self.probing = False

    def retry_at(self) -> float:
        """When the next probe may go (monotonic seconds)."""
        return self.opened_at + self.open_seconds

    def claimable(self) -> int | None:
        """None: no limit from the breaker; else how many deliveries a claim may take."""
        if self.failures <= 0:
            return None
        with self._lock:
            if self.state == CLOSED:
                return None
            if self.state == OPEN and self.clock() < self.opened_at + self.open_seconds:
                return 0
            return 0 if self.probing else 1


class Lane:
    def __init__(self, name: str, threads: int, batch_size: int, lease_seconds: float,
                 batching: bool = False, limits: DestinationLimits | None = None,
                 sink: Callable[[Done], None] | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        """`monotonic` and `now`: the lane's clocks, its bucket's and breaker's too."""
        limits = limits or DestinationLimits()
        self.monotonic = monotonic
        self.now = now
        self.name = name
        self.limits = limits
        self.threads = limits.concurrency or threads
        self.claim_size = limits.claim_size or batch_size
        # a batching destination sends up to a claim batch per request, on each thread
        self.most = self.claim_size * self.threads if batching else self.claim_size
        self.per_request = self.claim_size if batching else 1  # deliveries one token sends
        self.lease_seconds = lease_seconds
        # persistent sending threads fed by a queue: no Future, lock or callback per delivery
        self._inbox: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        self._sink = sink or (lambda done: None)
        self._threads = [threading.Thread(target=self._serve, name=f"send-{name[:24]}-{n}",
                                          daemon=True) for n in range(self.threads)]
        for thread in self._threads:
            thread.start()
        self.in_flight = 0
        self.seconds_per_delivery: float | None = None  # unknown until the first result
        self.bucket = TokenBucket(limits.rate_per_second, limits.bucket_size, monotonic)
        self.workers = 1  # live worker processes sharing this destination's rate limit
        self.breaker = CircuitBreaker(limits.circuit_failures, limits.circuit_open_seconds,
                                      monotonic)
        self.stopping = threading.Event()
        self._lock = threading.Lock()

    def capacity(self) -> int:
        """How many deliveries this lane may hold: what its threads send in half a lease,
        between one per thread (slow, or not yet measured) and the claim size (a batch per
        thread for a batching destination); with a rate limit, no more than its tokens let it
        send within RATE_HORIZON. A lane must not hold what it can only send later: the other
        workers would find those users held by the per-user barrier and sit idle, and a
        worker killed would stall them all for a lease."""
        if self.seconds_per_delivery is None:
            most = self.threads
        else:
            sendable = (self.threads * (self.lease_seconds / 2)
                        / max(self.seconds_per_delivery, 1e-4))
            most = int(max(self.threads, min(self.most, sendable)))
        if self.limits.rate_per_second > 0:
            requests = self.bucket.available() + self.bucket.rate * RATE_HORIZON
            most = min(most, max(1, int(requests)) * self.per_request)
        return most

    def free(self) -> int:
        """Room worth a claim: at least a quarter of the capacity, so a busy lane is refilled
        in batches, not one query per finished delivery; nothing while its circuit is open,
        a single probe when it is half-open."""
        probe = self.breaker.claimable()
        if probe is not None:
            return probe if self.in_flight == 0 else 0
        capacity = self.capacity()
        room = capacity - self.in_flight
        return room if room >= max(1, capacity // 4) else 0

    def gate(self) -> Outcome | None:
        """Asked before each request: None to send, or why the delivery goes back unsent."""
        if not self.breaker.allow():
            wait = max(0.0, self.breaker.retry_at() - self.monotonic())
            return released("not sent: the destination's circuit is open",
                            self.now() + timedelta(seconds=wait))
        if not self.bucket.take(self.stopping, most=self.lease_seconds / 4 or 1.0):
            self.breaker.release()
            return released("not sent: rate limit", self.now())
        return None

    def share(self, workers: int) -> None:
        """Refill at `rate_per_second / workers` with a burst scaled likewise (at least 1), so
        that `workers` processes together stay within the destination's configured rate."""
        workers = max(1, workers)
        if workers == self.workers:
            return
        self.workers = workers
        if self.limits.rate_per_second > 0:
            self.bucket.resize(self.limits.rate_per_second / workers,
                               max(1.0, self.limits.bucket_size / workers))

    def observe(self, sent: Sent) -> None:
        """Learn from an answer: the breaker from its failure or success, the bucket from the
        destination's own rate-limit headers (Kustomer's `x-ratelimit-remaining`/`reset`)."""
        self.breaker.observe(sent)
        if sent.rate_remaining is not None and sent.rate_remaining <= 0:
            self.bucket.pause(sent.rate_reset if sent.rate_reset is not None else 1.0)

    def guarded(self, lookup: Lookup) -> Lookup:
        """`lookup` through this lane like any request (Kustomer's customer search, a
        regulation's deletion): the circuit breaker is asked first, a token is taken, and the
        answer or connection failure is reported back (breaker, `x-ratelimit-*`). Not let
        through (circuit open, no token in time): the lookup fails as retryable and the
        delivery is tried again later, never lost."""
        def run(request: HttpRequest) -> LookupResponse:
            if not self.breaker.allow():
                wait = max(0.0, self.breaker.retry_at() - self.monotonic())
                raise Retryable("lookup not sent: the destination's circuit is open", 503, wait)
            # taken even with no configured rate: the bucket also holds the destination's
            # own pause (x-ratelimit-remaining 0), which the lookups must wait out too
            if not self.bucket.take(self.stopping, most=self.lease_seconds / 4 or 1.0):
                self.breaker.release()
                raise Retryable("lookup not sent: rate limit")
            try:
                response = lookup(request)
            except NoAnswer as failure:  # connection failure or timeout: what opens a circuit
                self.observe(failure.sent)
                raise
            except BaseException:  # not an answer, not a connection failure: no verdict
                self.breaker.release()
                raise
            self.observe(Sent(response.status, "", 0, rate_remaining=response.rate_remaining,
                              rate_reset=response.rate_reset))
            return response
        return run

    def submit(self, work: Callable[[Any], Any], items: Any, count: int) -> None:
        """Run `work(items)` (`count` deliveries) on this lane's threads; they count as in
        flight until `collected`. What it returns, or the exception it raised, goes to the
        sink as a `Done`."""
        self.in_flight += count
        self._inbox.put((work, items, count))

    def collected(self, count: int) -> None:
        self.in_flight -= count

    def status(self) -> dict[str, Any]:
        """What the console and /metrics show about this destination's sending."""
        return {"circuit": self.breaker.state, "circuit_opened": self.breaker.opened_count,
                "consecutive_failures": self.breaker.consecutive,
                "in_flight": self.in_flight, "threads": self.threads,
                "rate_per_second": self.limits.rate_per_second, "workers": self.workers,
                "tokens": round(self.bucket.available(), 2),
                "paused_seconds": round(max(0.0, self.bucket.paused_until - self.monotonic()),
                                        3)}

    def _serve(self) -> None:
        """One sending thread: take a task, run it, hand the result to the sink."""
        while (task := self._inbox.get()) is not None:
            work, items, count = task
            started = time.monotonic()  # a real duration, whatever the lane's clock
            try:
                done = Done(self, items, work(items), None)
            except Exception as exc:  # the worker retries what a crashed task held
                done = Done(self, items, None, exc)
            self.breaker.abandon()
            self._observe_time(count, time.monotonic() - started)
            self._sink(done)

    def _observe_time(self, count: int, seconds: float) -> None:
        if count <= 0:
            return
        per = seconds / count
        with self._lock:
            previous = self.seconds_per_delivery
            self.seconds_per_delivery = per if previous is None else (
                previous + SMOOTHING * (per - previous))

    def close(self) -> None:
        """Finish what was submitted, then stop the threads."""
        self.stopping.set()
        for _ in self._threads:
            self._inbox.put(None)
        for thread in self._threads:
            thread.join()
