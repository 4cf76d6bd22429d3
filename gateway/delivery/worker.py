"""The delivery loop: claim (claim.py) into each destination's lane (lanes.py), send there
(send.py), record what finished (record.py), renew the leases of long sends.

Claiming is continuous and per destination; sending happens outside any transaction; results
are recorded in batches, lease-guarded. A worker killed mid-send leaves leases that expire, and
the rows are claimed again; a worker that is alive renews the leases of what it is still
sending, so a slow answer is never sent twice.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from gateway import metrics
from gateway.config import Config
from gateway.delivery.claim import OTHER, Claimed, claim, orphans, refresh_statistics, renew
from gateway.delivery.client import HttpClient
from gateway.delivery.lanes import Done, Lane
from gateway.delivery.record import Recorder
from gateway.delivery.retry import RetryPolicy
from gateway.delivery.send import Finished, Sender, Target, resolve
from gateway.delivery.verdict import crashed
from gateway.heartbeat import WORKER, LiveCount
from gateway.store.storage_state import StorageState

log = logging.getLogger(__name__)

MIN_BACKOFF, MAX_BACKOFF = 0.25, 30.0  # seconds between claims while the database fails
# renew a lease once less than this fraction of it is left: before a send that waited in its
# lane's queue would find less than half of it left and go back unsent (send.lease_too_short)
RENEW_AT = 2 / 3
SLOW_CLAIM = 0.2  # seconds: a claim this slow on PostgreSQL refreshes the statistics…
ANALYZE_EVERY = 60.0  # …at most this often
PUBLISH_EVERY = 1.0  # seconds between updates of the per-destination gauges
ORPHANS_EVERY = 60.0  # seconds between looks for deliveries of unconfigured destinations
STOP_RECORDING = 20.0  # seconds a stopping worker keeps trying to record through an outage

__all__ = ["OTHER", "Claimed", "Finished", "Worker", "policy_from"]


def policy_from(config: Config) -> RetryPolicy:
    return RetryPolicy.from_settings(config.retry)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Worker:
    def __init__(self, engine: Engine, config: Config, client: HttpClient | None = None,
                 tick: Callable[[], None] | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] = utcnow) -> None:
        """`monotonic` and `now` are the clocks of back-off, renewal and stopping (and of the
        lanes, the sender and the recorder): tests step fake ones instead of sleeping."""
        self.monotonic = monotonic
        self.now = now
        self.engine = engine
        self.ticks: list[Callable[[], None]] = [tick] if tick else []  # once per loop turn
        self.config = config
        settings = config.worker
        self.client = client or HttpClient(pool_size=max(8, settings.concurrency * 2))
        self.policy = policy_from(config)
        self.sender = Sender(self.client, settings.lease_seconds, now=now)
        self.recorder = Recorder(engine, self.policy, now=now)
        # every destination resolved once: adapter, lookup client, secrets, batching
        self.targets: dict[str, Target] = {
            d.name: resolve(d, self.client) for d in config.destinations if d.enabled}
        # what every lane finished. A Queue, not a SimpleQueue: on CPython 3.11 a signal that
        # lands in SimpleQueue.get(timeout=…) can leave the main thread waiting forever
        # (seen: a worker that never stopped on SIGTERM), and the loop waits here.
        self.finished: queue.Queue[Done] = queue.Queue()
        # one lane per enabled destination, and one for rows of destinations no longer
        # configured (they are finished as dead, never left pending forever)
        self.lanes = {name: Lane(name, settings.concurrency, settings.batch_size,
                                 settings.lease_seconds, t.batches,
                                 t.destination.limits, self.finished.put,
                                 monotonic=monotonic, now=now)
                      for name, t in self.targets.items()}
        self.other_lane = Lane("other", 1, settings.batch_size, settings.lease_seconds,
                               sink=self.finished.put, monotonic=monotonic, now=now)
        # a destination's lookups (Kustomer's customer search) and deletions go through its
        # lane too: its circuit breaker and its rate limit
        self.targets = {name: dataclasses.replace(t, lookup=self.lanes[name].guarded(t.lookup))
                        for name, t in self.targets.items()}
        # worker processes beating now: each takes its share of every rate limit
        self.live_workers = LiveCount(engine, WORKER, settings.heartbeat_seconds)
        self.sending: dict[int, Claimed] = {}  # claimed and not yet collected, for renewal
        # database outages: one log line each way, and backoff instead of a busy loop
        self.claiming = StorageState("claiming deliveries", log, settle=0)
        self.recording = self.recorder.state
        self.unrecorded: list[Finished] = []  # sent, waiting for the database to come back
        self._claim_backoff = self._record_backoff = 0.0
        self._next_claim = self._next_record = self._next_analyze = 0.0
        self._next_publish = 0.0
        self._next_orphans = 0.0
        self._stopping_since: float | None = None
        self._orphan_names: list[str] = []

    @property
    def engine(self) -> Engine:
        return self._engine

    @engine.setter
    def engine(self, engine: Engine) -> None:
        """One database for claiming and recording (tests swap it to simulate an outage)."""
        self._engine = engine
        if hasattr(self, "recorder"):
            self.recorder.engine = engine
        if hasattr(self, "live_workers"):
            self.live_workers.engine = engine

    @property
    def destinations(self) -> dict[str, Any]:
        return {name: t.destination for name, t in self.targets.items()}

    def run(self, stop: threading.Event) -> None:
        """Deliver until `stop` is set, then finish what is in flight. Every wait is bounded,
        so `tick` runs at least once per poll interval whatever a destination does."""
        pause = self.config.worker.poll_interval_ms / 1000
        while self.turn(stop, pause):
            pass

    def turn(self, stop: threading.Event, pause: float) -> bool:
        """One turn of the loop, waiting up to `pause` seconds for a result when nothing was
        claimed (tests step this with a fake clock); False once stopped with nothing in
        flight."""
        if stop.is_set() and not self._in_flight():
            return False
        for tick in self.ticks:
            tick()
        self._share_limits()
        claimed = 0 if stop.is_set() or self.unrecorded else self._claim_into_lanes()
        self.unrecorded += self._drain(wait=pause if not claimed else 0.0)
        self._record_pending(stop)
        self._renew_leases()
        self._publish()
        return True

    def on_tick(self, callback: Callable[[], None]) -> None:
        """Call `callback` once per loop turn (the liveness heartbeat)."""
        self.ticks.append(callback)

    def run_once(self) -> int:
        """Claim one round, send it, record it (tests and benchmarks step with this)."""
        claimed = self.claim(self.config.worker.batch_size)
        tasks = self._submit(claimed)
        finished: list[Finished] = []
        while tasks:
            finished += self._collect(self.finished.get())
            tasks -= 1
        self.unrecorded += finished
        self._record_pending(threading.Event())
        return len(claimed)

    def claim(self, room: int | dict[str, int]) -> list[Claimed]:
        """Claim at most `room[destination]` per destination (an int: the same for each)."""
        if isinstance(room, int):
            room = {**{name: room for name in self.lanes}, OTHER: room}
        return claim(self.engine, room, self.config.worker.lease_seconds, self._orphans())

    def _orphans(self) -> list[str]:
        """Destinations with unfinished rows that are no longer configured: looked up at start
        and then every ORPHANS_EVERY seconds (an HTTP process with a newer configuration may
        still queue for a destination this worker does not know), not on every claim."""
        now = self.monotonic()
        if now >= self._next_orphans:
            self._next_orphans = now + ORPHANS_EVERY
            self._orphan_names = orphans(self.engine, list(self.lanes))
        return self._orphan_names

    def status(self) -> dict[str, dict[str, Any]]:
        """Per destination: circuit, rate limit and in-flight state (for the console)."""
        return {name: lane.status() for name, lane in self.lanes.items()}

    def _share_limits(self) -> None:
        """Each lane's bucket at its share of the rate: the configured rate divided by the
        live worker processes (re-counted at most once per heartbeat interval)."""
        workers = self.live_workers.current()
        for lane in self.lanes.values():
            lane.share(workers)

    def _publish(self) -> None:
        """The lanes' state into the gauges, once a second (not every loop turn)."""
        now = self.monotonic()
        if now < self._next_publish:
            return
        self._next_publish = now + PUBLISH_EVERY
        for name, lane in self.lanes.items():
            metrics.publish_lane(name, lane.status())

    def _in_flight(self) -> int:
        return sum(lane.in_flight for lane in self._all_lanes()) + len(self.unrecorded)

    def _record_pending(self, stop: threading.Event) -> None:
        """Record what finished; while the database is out, keep the results (they were
        sent: recording them late beats sending them again) and try again with backoff.
        Stopping keeps trying for STOP_RECORDING seconds (well inside the supervisor's stop
        timeout, so a stop never ends in SIGKILL), then gives up: the leases then hand the
        deliveries to the next worker, which sends them again."""
        if not self.unrecorded or self.monotonic() < self._next_record:
            return
        left = self.recorder.record_safely(self.unrecorded)
        if stop.is_set() and self._stopping_since is None:
            self._stopping_since = self.monotonic()
        if left and self._stopping_since is not None \
                and self.monotonic() - self._stopping_since >= STOP_RECORDING:
            log.warning("stopping with %d delivery results unrecorded; their leases will "
                        "expire and they will be sent again", len(left))
            left = []
        self.unrecorded = left
        if left:
            self._record_backoff = min(MAX_BACKOFF, max(MIN_BACKOFF, self._record_backoff * 2))
            if self._stopping_since is not None:  # the last try falls inside the limit
                self._record_backoff = min(self._record_backoff, STOP_RECORDING / 4)
            self._next_record = self.monotonic() + self._record_backoff
        else:
            self._record_backoff = 0.0

    def _renew_leases(self) -> None:
        """Extend the lease of every delivery still held once a third of it has gone."""
        lease = self.config.worker.lease_seconds
        if lease <= 0 or not self.sending:
            return
        soon = self.now() + timedelta(seconds=lease * RENEW_AT)
        due = [c for c in self.sending.values() if c.lease <= soon]
        if not due:
            return
        try:
            renew(self.engine, due, lease)
        except Exception as exc:  # a database outage: the next turn tries again
            self.claiming.failed(exc, self.engine)

    def _all_lanes(self) -> list[Lane]:
        return [*self.lanes.values(), self.other_lane]

    def _claim_into_lanes(self) -> int:
        """Claim for every lane with room (backing off while the database fails)."""
        if self.monotonic() < self._next_claim:
            return 0
        room = {name: lane.free() for name, lane in self.lanes.items()}
        room[OTHER] = self.other_lane.free()
        if not any(room.values()):
            return 0
        started = self.monotonic()
        try:
            claimed = self.claim(room)
        except Exception as exc:  # a database outage must not kill the worker
            self.claiming.failed(exc, self.engine)
            self._claim_backoff = min(MAX_BACKOFF, max(MIN_BACKOFF, self._claim_backoff * 2))
            self._next_claim = self.monotonic() + self._claim_backoff
            return 0
        self._claim_backoff = 0.0
        self.claiming.succeeded()
        self._after_claim(self.monotonic() - started)
        self._submit(claimed)
        return len(claimed)

    def _after_claim(self, seconds: float) -> None:
        """A slow claim on PostgreSQL: refresh the planner's statistics (claim.py says why),
        at most once a minute."""
        if seconds < SLOW_CLAIM or self.monotonic() < self._next_analyze:
            return
        self._next_analyze = self.monotonic() + ANALYZE_EVERY
        try:
            if refresh_statistics(self.engine):
                log.info("a claim took %.2f s: refreshed the deliveries table's statistics",
                         seconds)
        except Exception as exc:  # no privilege, or the database went away: claims go on
            log.warning("could not refresh the deliveries table's statistics: %s", exc)

    def _submit(self, claimed: list[Claimed]) -> int:
        """One task per delivery, or one per chunk for a destination whose adapter batches
        (Customer.io's v2 API), each on its destination's lane. A claim holds at most one
        delivery per (destination, user), so batching keeps per-user order. Returns how many
        tasks were submitted."""
        tasks = 0
        batched: dict[str, list[Claimed]] = {}
        for item in claimed:
            self.sending[item.id] = item
            target = self.targets.get(item.destination)
            # a regulation's deletion is never batched: the adapter sends it alone
            if target is not None and target.batches and item.regulation_id is None:
                batched.setdefault(item.destination, []).append(item)
            else:
                self.lanes.get(item.destination, self.other_lane).submit(
                    self._process_one, [item], 1)
                tasks += 1
        for name, items in batched.items():
            lane = self.lanes[name]
            size = lane.claim_size
            for start in range(0, len(items), size):
                chunk = items[start:start + size]
                lane.submit(self.process_batch, chunk, len(chunk))
                tasks += 1
        return tasks

    def _process_one(self, one: list[Claimed]) -> list[Finished]:
        return self.process(one[0])

    def process(self, claimed: Claimed) -> list[Finished]:
        """Send one delivery through its lane's gate (rate limit, circuit breaker)."""
        lane = self.lanes.get(claimed.destination)
        return self.sender.one(claimed, self.targets.get(claimed.destination),
                               lane.gate if lane else None, lane.observe if lane else None)

    def process_batch(self, claimed: list[Claimed]) -> list[Finished]:
        """Send one chunk of a batching destination's deliveries (router mode)."""
        lane = self.lanes[claimed[0].destination]
        return self.sender.batch(claimed, self.targets[claimed[0].destination], lane.gate,
                                 lane.observe)

    def _drain(self, wait: float) -> list[Finished]:
        """Whatever finished, waiting up to `wait` seconds for the first result."""
        finished: list[Finished] = []
        try:
            done = self.finished.get(timeout=wait) if wait else self.finished.get_nowait()
            while True:
                finished += self._collect(done)
                done = self.finished.get_nowait()
        except queue.Empty:
            pass
        return finished

    def _collect(self, done: Done) -> list[Finished]:
        """A finished task's results; a task that crashed retries its deliveries instead of
        losing them."""
        done.lane.collected(len(done.items))
        for c in done.items:
            self.sending.pop(c.id, None)
        if done.error is None:
            return done.result
        log.error("delivery task crashed", exc_info=done.error)
        now = self.now()
        return [Finished(c, None, now, crashed(done.error)) for c in done.items]

    def close(self) -> None:
        for lane in self._all_lanes():
            lane.close()
        self.client.close()
