"""Liveness through the database: delivery workers beat, `/health` reads the beats.

The database is the only shared state (docs/design.md §2.8), so a heartbeat row is what lets
any HTTP process on any machine tell whether a delivery worker is alive. A worker writes its row
at most every `[worker] heartbeat_seconds`, removes it on a clean stop, and a row older than
three intervals means that worker is gone. HTTP processes write `http` rows too (from /health,
and while they serve a rate-limited source), so they can share a source's rate the way workers
share a destination's (gateway/http/source_guard.py).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, delete, func, insert, select, update

from gateway.store.db import write_transaction
from gateway.store.models import heartbeats

log = logging.getLogger(__name__)

WORKER = "worker"
HTTP = "http"
# Set by `gateway serve` for its HTTP processes when it runs a delivery worker beside them:
# then no worker heartbeat at all is a failure, not "no worker configured".
EXPECT_WORKER_ENV = "GATEWAY_INTERNAL_EXPECT_WORKER"
STALE_INTERVALS = 3  # a worker that missed this many beats is considered gone
RESET_EVERY = 1.0  # seconds: a failing beat drops the engine's pool at most this often
FORGET_AFTER = timedelta(days=1)  # rows this old are removed when a new process starts


class Heartbeat:
    """One process's row. `beat()` is cheap to call often: it writes at most every `every` s."""

    def __init__(self, engine: Engine, role: str, every: float) -> None:
        self.engine = engine
        self.role = role
        self.every = every
        self.host = socket.gethostname()[:200]
        self.pid = os.getpid()
        self.id = f"{role}:{self.host}:{self.pid}:{uuid.uuid4().hex[:8]}"[:200]
        self.started_at = datetime.now(UTC)
        self._last = float("-inf")
        self._last_reset = float("-inf")
        # /health beats from many request threads at once: two first beats would both find no
        # row and both insert it (a primary-key conflict on PostgreSQL, so a false 503)
        self._lock = threading.Lock()

    def beat(self, force: bool = False) -> bool:
        """Write the row if the interval passed; True when a write happened."""
        if not force and time.monotonic() - self._last < self.every:
            return False
        with self._lock:
            now = datetime.now(UTC)
            try:
                self._write(now)
            except Exception:
                self._drop_connections()
                raise
            self._last = time.monotonic()
        return True

    def _write(self, now: datetime) -> None:
        with write_transaction(self.engine) as connection:
            changed = connection.execute(update(heartbeats).where(
                heartbeats.c.id == self.id).values(beat_at=now)).rowcount
            if not changed:
                connection.execute(delete(heartbeats).where(
                    heartbeats.c.role == self.role, heartbeats.c.beat_at < now - FORGET_AFTER))
                connection.execute(insert(heartbeats).values(
                    id=self.id, role=self.role, host=self.host, pid=self.pid,
                    started_at=self.started_at, beat_at=now))

    def _drop_connections(self) -> None:
        """A beat that failed drops the pool (at most once a second): a connection SQLite
        opened read-only while the disk was read-only stays so, and the beat must work the
        moment the disk does, not when the worker's backed-off claims next drop it (up to
        30 s later, /health meanwhile 503 for a worker that is fine)."""
        if time.monotonic() - self._last_reset >= RESET_EVERY:
            self._last_reset = time.monotonic()
            self.engine.dispose()

    def remove(self) -> None:
        """A clean stop: this process is no longer expected to beat."""
        with write_transaction(self.engine) as connection:
            connection.execute(delete(heartbeats).where(heartbeats.c.id == self.id))


@dataclass(frozen=True)
class Liveness:
    """What the heartbeats of one role say right now."""

    alive: int
    gone: int
    last_beat: datetime | None

    def describe(self, now: datetime) -> str:
        if self.alive:
            return "ok"
        if self.last_beat is None:
            return "no delivery worker has started"
        seconds = int((now - self.last_beat).total_seconds())
        return f"no delivery worker heartbeat for {seconds} s"


def none_running(destinations: int) -> str:
    """Why no live worker is a failure while destinations are enabled (/health, check)."""
    return (f"no delivery worker is running: deliveries to {destinations} enabled "
            "destination(s) wait until one runs (gateway worker, or gateway serve without "
            "--no-worker)")


def startup_grace(every: float) -> float:
    """Seconds a new HTTP process waits for a first worker beat before it reports none: the
    worker `gateway serve` starts beside it beats within this, so /health does not flap."""
    return every * STALE_INTERVALS


def liveness(connection: Connection, role: str, every: float,
             now: datetime | None = None) -> Liveness:
    now = now or datetime.now(UTC)
    threshold = now - timedelta(seconds=every * STALE_INTERVALS)
    alive, total, last = connection.execute(
        select(func.count().filter(heartbeats.c.beat_at >= threshold), func.count(),
               func.max(heartbeats.c.beat_at)).where(heartbeats.c.role == role)).one()
    return Liveness(alive or 0, (total or 0) - (alive or 0), last)


class LiveCount:
    """How many processes of `role` beat right now (at least 1: the caller itself), read at
    most every `every` seconds, so callers may ask every loop turn. Delivery workers divide a
    destination's rate limit by it, HTTP processes a source's. A database error keeps the last
    known count: a worker never speeds up, or stops, because a read failed."""

    def __init__(self, engine: Engine, role: str, every: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self.role = role
        self.every = every
        self.clock = clock
        self.count = 1
        self._next = float("-inf")

    def current(self) -> int:
        now = self.clock()
        if now < self._next:
            return self.count
        self._next = now + self.every
        try:
            with self.engine.connect() as connection:
                self.count = max(1, liveness(connection, self.role, self.every).alive)
        except Exception as exc:  # an outage: claiming reports it; keep the last count
            log.debug("could not count live %s processes: %s", self.role, exc)
        return self.count
