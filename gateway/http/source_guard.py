"""A source's bounds at request time (README "Sources"; parsed in gateway/source_limits.py).

Rate limit. Each HTTP process holds one token bucket per rate-limited source, refilled at
`events_per_second / live HTTP processes` and holding `burst / live HTTP processes` (at least
1), as the delivery workers share a destination's rate (gateway/config/limits.py): the
live processes are the fresh `http` rows of the heartbeats table, which each process writes at
most every `[worker] heartbeat_seconds` while it serves a rate-limited source (the same row
/health writes), re-counted at most that often. A request's events are let in when the bucket
holds them all, or is full (a batch larger than the burst is never refused forever): they are
taken, the bucket possibly going below zero, so the rate holds on average. Otherwise the answer
is `429` with `Retry-After` before anything is stored, which every SDK family sends again later
(the ones that resend all but a success too), so an accepted event is still never lost.

Refusals are counted per source in `/metrics` and written to the rejections record once per
source per `REFUSAL_WINDOW` and process, with their counts, not once per request: a flood must
not push the real refusals out of that bounded record.

Allowed origins: a request with an `Origin` header that matches none of the source's
`allowed_origins` is `403` (CORS headers still set by cors.py, so the page can read why); no
`Origin` header (a server SDK) is never refused for it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import Flask, current_app, request
from sqlalchemy import Engine

from gateway import heartbeat, metrics, rejections
from gateway.config import Config, Source
from gateway.http import context
from gateway.http.errors import ApiError
from gateway.messages import iso_text
from gateway.source_limits import RateLimit

log = logging.getLogger(__name__)

REFUSAL_WINDOW = 60.0  # seconds: one rejections row per source per window and process
MAX_QUOTED_ORIGIN = 200


class Bucket:
    """`rate` events a second up to `size`. Never waits: `take(n)` answers how long until it
    could let `n` in (0 = taken now)."""

    def __init__(self, rate: float, size: float, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.size = size
        self.clock = clock
        self.tokens = float(size)
        self.stamp = clock()

    def take(self, events: int) -> float:
        self._refill()
        needed = min(float(events), self.size)  # a batch above the burst waits for a full one
        if self.tokens >= needed:
            self.tokens -= events
            return 0.0
        return (needed - self.tokens) / self.rate

    def resize(self, rate: float, size: float) -> None:
        """This process's new share; what it earned at the old rate is kept, up to `size`."""
        self._refill()
        self.rate, self.size = rate, size
        self.tokens = min(self.tokens, size)

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.size, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now


class SourceRates:
    """This process's buckets, each at its share of its source's rate."""

    def __init__(self, engine: Engine, beat: heartbeat.Heartbeat, every: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.beat = beat
        self.every = every
        self.live = heartbeat.LiveCount(engine, heartbeat.HTTP, every, clock)
        self.clock = clock
        self._next_beat = float("-inf")
        self._beating = threading.Lock()
        self.processes = 0
        self.buckets: dict[str, tuple[RateLimit, Bucket]] = {}
        self.lock = threading.Lock()

    def wait_for(self, name: str, limit: RateLimit, events: int) -> float:
        """0 when `events` may come in now (they are counted), else seconds to wait."""
        self._beat()
        processes = self.live.current()
        with self.lock:
            if processes != self.processes:
                self.processes = processes
                for known, bucket in self.buckets.values():
                    bucket.resize(*share(known, processes))
            found = self.buckets.get(name)
            if found is None:
                found = self.buckets[name] = (limit, Bucket(*share(limit, processes),
                                                            clock=self.clock))
            return found[1].take(events)

    def _beat(self) -> None:
        """This process serves a limited source, so it counts in the share: its row, written
        by one request thread at most once an interval (the others never wait for it), and
        during an outage tried no more often (storing reports the outage, not this)."""
        if self.clock() < self._next_beat or not self._beating.acquire(blocking=False):
            return
        try:
            self._next_beat = self.clock() + self.every
            self.beat.beat(force=True)
        except Exception as exc:  # the share keeps its last count
            log.debug("cannot write the HTTP heartbeat: %s", exc)
        finally:
            self._beating.release()


def share(limit: RateLimit, processes: int) -> tuple[float, float]:
    """(rate, size) of one process's bucket when `processes` share the source's limit."""
    processes = max(1, processes)
    return limit.events_per_second / processes, max(1.0, limit.burst / processes)


@dataclass
class _Tally:
    engine: Engine
    limit: RateLimit
    first: datetime
    last: datetime
    events: int = 0
    requests: int = 0


class RefusalTally:
    """Rate-limit refusals per source, written as one rejections row when the window closes."""

    def __init__(self, window: float = REFUSAL_WINDOW) -> None:
        self.window = window
        self.open: dict[str, _Tally] = {}
        self.lock = threading.Lock()

    def add(self, engine: Engine, source: str, limit: RateLimit, events: int) -> None:
        now = datetime.now(UTC)
        with self.lock:
            tally = self.open.get(source)
            if tally is None:
                tally = self.open[source] = _Tally(engine, limit, now, now)
                timer = threading.Timer(self.window, self._close, (source, tally))
                timer.daemon = True
                timer.start()
            tally.events += events
            tally.requests += 1
            tally.last = now

    def flush(self) -> None:
        """Write every open window now (tests, and anything that must see them at once)."""
        with self.lock:
            open_now = list(self.open.items())
        for source, tally in open_now:
            self._close(source, tally)

    def _close(self, source: str, tally: _Tally) -> None:
        with self.lock:
            if self.open.get(source) is not tally:
                return  # already written
            del self.open[source]
        rejections.record(tally.engine, [rejections.Entry(
            tally.first, source, None, None, "rate_limited",
            f"{tally.events} events in {tally.requests} requests refused with 429 over the "
            f"source's rate limit ({tally.limit.describe()}) from {iso_text(tally.first)} to "
            f"{iso_text(tally.last)}; none was stored")])


def admit(source: Source, events: int) -> None:
    """Count `events` against the source's rate limit, or refuse the request with 429."""
    limit = source.guard.rate_limit
    if limit is None:
        return
    state = _state()
    wait = state.rates.wait_for(source.name, limit, events)
    if wait <= 0:
        return
    metrics.SOURCE_RATE_LIMITED.labels(source.name).inc(events)
    state.tally.add(context.engine(), source.name, limit, events)
    request.environ["gateway.rejections_traced"] = True  # the tally is its trace
    error = ApiError(429, "rate_limited",
                     f"this source accepts {limit.describe()}; nothing of this request was "
                     "stored: send it again after Retry-After seconds")
    error.headers["Retry-After"] = str(max(1, math.ceil(wait)))
    raise error


def check_origin(source: Source) -> None:
    """403 for a browser request from an origin the source does not allow."""
    origin = request.headers.get("Origin")
    if source.guard.origin_allowed(origin):
        return
    shown = (origin or "")[:MAX_QUOTED_ORIGIN]
    raise ApiError(403, "origin_not_allowed",
                   f"this write key does not accept requests from the origin \"{shown}\" "
                   "(the source's allowed_origins)")


@dataclass
class _State:
    rates: SourceRates
    tally: RefusalTally


STATE_KEY = "gateway.source_guard"


def _state() -> _State:
    return current_app.extensions[STATE_KEY]


def init_app(app: Flask, config: Config, engine: Engine) -> None:
    """One heartbeat row per process (shared with /health's probe) and the buckets."""
    every = float(config.worker.heartbeat_seconds)
    beat = app.extensions.setdefault("gateway.http_heartbeat", heartbeat.Heartbeat(
        engine, heartbeat.HTTP, every=every))
    app.extensions[STATE_KEY] = _State(SourceRates(engine, beat, every), RefusalTally())


def flush_refusals(app: Flask) -> None:
    """Write this app's open refusal windows to the rejections record now."""
    app.extensions[STATE_KEY].tally.flush()
