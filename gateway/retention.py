"""Retention: the delivery worker's pruning loop (`[retention]`).

Each rule deletes its oldest expired rows in small batches, one short transaction each, paced
so that pruning takes at most `max_busy_percent` of the time and ingest is not held up: on
PostgreSQL a batch is `id IN (SELECT … LIMIT n FOR UPDATE SKIP LOCKED)` (row locks on old rows
only; ingest only inserts new ones), on SQLite a round is one turn of the single writer lock,
taken when no other writer waits for it and cut short as soon as one does. An event is
deleted only when none of its deliveries is pending, delivering or retrying; its deliveries
and their attempts go with it. On SQLite the pages a pass frees go back by `PRAGMA
incremental_vacuum` (auto_vacuum = INCREMENTAL, migration 0006), so the file stops growing
once retention holds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Table, delete, select, text

from gateway.config import Config, RetentionSettings
from gateway.retention_partitions import PartitionDropper, oldest_event_week
from gateway.store import outbox, partitions
from gateway.store.db import sqlite_writer_lock, write_transaction
from gateway.store.models import deliveries, delivery_attempts, events, rejections
from gateway.store.storage_state import StorageState

log = logging.getLogger(__name__)

FINISHED_DELIVERED = (outbox.DELIVERED, outbox.SKIPPED)
VACUUM_KEEP = 1024  # free pages kept for ingest to reuse (4 MB at 4 KiB pages)…
VACUUM_PAGES = 512  # …the rest handed back, at most this many per round
MIN_PAUSE = 0.01  # seconds between rounds while a backlog lasts
MAX_PAGES = 20  # candidate pages one batch reads past rows that must stay
WEEKS_PASS_EVERY = 60.0  # seconds between partition passes (PostgreSQL, partitioned)
# SQLite: pruning yields to every other writer (ingest, deliveries, admin)
STEP = 25  # rows per statement (or a quarter of batch_size): a waiting writer is let in
#            after at most one step
POLL = 0.002  # seconds between looks for a moment without writers before a round
YIELD_WAIT = 1.0  # the floor: a round starts after this long even if writers never pause
VACUUM_STEP = 32  # pages handed back between looks for a waiting writer


@dataclass
class Pruned:
    """Rows deleted, per table, over one or more passes."""

    counts: dict[str, int] = field(default_factory=dict)
    yielded: bool = False  # a round cut short for a writer: there may be more to prune
    seconds: float = 0.0  # time the round worked (held the SQLite writer lock)

    def add(self, table: str, n: int) -> None:
        if n:
            self.counts[table] = self.counts.get(table, 0) + n

    def merge(self, other: Pruned) -> None:
        for table, n in other.counts.items():
            self.add(table, n)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class Pruner:
    """Applies `[retention]` to one database. `prune_once` does one batch per rule and says
    how many rows it deleted; `prune_all` repeats until nothing expired is left."""

    def __init__(self, engine: Engine, settings: RetentionSettings,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.engine = engine
        self.settings = settings
        self.now = now
        self.sqlite = engine.dialect.name == "sqlite"
        self.weeks = PartitionDropper(engine, settings)
        self.partitioned = False  # found out once a minute (migration 0014 may run meanwhile)
        self.legacy: dict[str, datetime | None] = {}  # table → where its legacy partition ends
        self.oldest_week: datetime | None = None  # where the oldest events week left begins
        self.next_weeks_pass = 0.0  # monotonic time of the next partition pass

    def rules(self) -> list[tuple[str, int, Callable[[Connection, datetime, int], Pruned]]]:
        s = self.settings
        rules = [("events", s.events_days, self._events),
                 ("delivered", s.delivered_days, self._deliveries(FINISHED_DELIVERED)),
                 ("dead", s.dead_days, self._deliveries((outbox.DEAD,))),
                 ("attempts", s.attempts_days, self._attempts),
                 ("rejections", s.rejections_days, self._rejections),
                 ("message_ids", s.events_days, self._message_ids)]
        return [(name, days, rule) for name, days, rule in rules if days > 0]

    def prune_once(self, stop: threading.Event | None = None) -> Pruned:
        """One batch of every rule with expired rows. SQLite: all in ONE transaction that
        yields (see `_sqlite_round`); PostgreSQL: whole weeks dropped first where the tables
        are partitioned (at most once a minute), then a transaction per rule (row locks held
        as briefly as possible)."""
        now = self.now()
        if self.sqlite:
            return self._sqlite_round(self._cutoffs(now), stop)
        done = self._weeks_pass(now)  # not timed: it waits more than it works
        started = time.monotonic()
        rules = self._cutoffs(now)
        for cutoff, rule in rules:
            with write_transaction(self.engine) as connection:
                done.merge(rule(connection, cutoff, self.settings.batch_size))
        done.seconds = time.monotonic() - started
        return done

    def _sqlite_round(self, rules: list[tuple[datetime, Callable[..., Pruned]]],
                      stop: threading.Event | None) -> Pruned:
        """One turn of the writer lock, taken when no other writer waits for it or holds it
        (or after YIELD_WAIT without such a moment: the floor), and let go as soon as one
        does: each rule's batch is deleted a step at a time, with a look for a waiting
        writer between steps; then one commit, with the freed pages handed back inside it."""
        lock = sqlite_writer_lock(self.engine)
        waiting = lock.foreground_waiting if lock is not None else lambda: False
        wait_for_quiet(waiting, stop)
        done = Pruned()
        with write_transaction(self.engine, background=True) as connection:
            started = time.monotonic()
            size = max(STEP, self.settings.batch_size // 4)
            for cutoff, rule in rules:
                left = self.settings.batch_size
                while left > 0 and not done.yielded:
                    step = rule(connection, cutoff, min(size, left))
                    done.merge(step)
                    left = left - size if step.total else 0
                    done.yielded = waiting()
            if done.total:
                self.vacuum(connection, waiting)
        if done.total:
            self.checkpoint()
        done.seconds = time.monotonic() - started
        return done

    def checkpoint(self) -> None:
        """SQLite: copy the round's pages from the WAL into the database now, outside the
        writer lock (a passive checkpoint never blocks a writer). Left alone, the commit that
        takes the WAL past 1,000 pages does it, inside its writer's turn: pruning writes
        pages fast, so that would be an ingest request's, about once a second."""
        with self.engine.connect() as connection:
            connection.connection.dbapi_connection.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _cutoffs(self, now: datetime) -> list[tuple[datetime, Callable[..., Pruned]]]:
        """Each rule with where it stops this round (rules with nothing to do left out)."""
        rules = [(self._row_cutoff(name, now - timedelta(days=days)), rule)
                 for name, days, rule in self.rules()]
        return [(cut, rule) for cut, rule in rules if cut is not None]

    def _weeks_pass(self, now: datetime) -> Pruned:
        """PostgreSQL, once a minute: whether the tables are partitioned (migration 0014 may
        run while the worker does), the weeks that may go dropped, the weeks ahead made, and
        what the row-level rules need to know of the partitions left."""
        done = Pruned()
        if time.monotonic() < self.next_weeks_pass:
            return done
        self.next_weeks_pass = time.monotonic() + WEEKS_PASS_EVERY
        with self.engine.connect() as connection:
            self.partitioned = partitions.is_partitioned(connection, "events")
        if not self.partitioned:
            return done
        partitions.ensure_ahead(self.engine, now)
        for name in self.weeks.drop_expired(now):
            done.add(f"partition {name}", 1)
        with self.engine.connect() as connection:
            self.legacy = {t: partitions.legacy_upper(connection, t)
                           for t in partitions.PARTITIONED}
            self.oldest_week = oldest_event_week(connection)
        return done

    def _row_cutoff(self, rule: str, cut: datetime) -> datetime | None:
        """Where a row-level rule stops. Unpartitioned: the cutoff. Partitioned: rows of the
        legacy partition go by row as before; elsewhere only rows of weeks wholly past the
        cutoff that a row holds back (the week drops on its own otherwise), never a week in
        part. None: the rule has nothing to do here."""
        if rule == "message_ids":  # keys of events whose week is gone (kept unpartitioned)
            if not self.partitioned or self.oldest_week is None:
                return None
            return min(cut, self.oldest_week)
        if not self.partitioned:
            return cut
        table = {"events": "events", "attempts": "delivery_attempts", "delivered": "deliveries",
                 "dead": "deliveries"}.get(rule)
        if table is None:  # not a partitioned table
            return cut
        legacy = self.legacy.get(table)
        if rule in ("delivered", "dead"):  # a week of deliveries waits for its last row
            return None if legacy is None else min(cut, legacy)
        week_start, _ = partitions.week_of(cut)
        return min(cut, max(week_start, legacy or week_start))

    def prune_all(self, stop: threading.Event | None = None) -> Pruned:
        """Batches until a round deletes nothing (or `stop` is set)."""
        done = Pruned()
        while stop is None or not stop.is_set():
            pruned = self.prune_once(stop)
            if not pruned.total and not pruned.yielded:
                break
            done.merge(pruned)
        return done

    def vacuum(self, connection: Connection,
               waiting: Callable[[], bool] = lambda: False) -> int:
        """SQLite: hand free pages above VACUUM_KEEP back to the file system, at most
        VACUUM_PAGES a round (a no-op unless the file is in auto_vacuum = INCREMENTAL, which
        migration 0006 sets), stopping early for a waiting writer. The pages kept are what
        ingest fills next, so the file neither grows nor shrinks and regrows. Returns the
        pages handed back."""
        raw = connection.connection.dbapi_connection
        free = raw.execute("PRAGMA freelist_count").fetchone()[0]
        excess = max(0, min(free - VACUUM_KEEP, VACUUM_PAGES))
        # sqlite3 steps the pragma once per execute(), and each step frees one page; inside
        # our transaction that is what we want (executescript would commit it)
        for page in range(excess):
            if page and page % VACUUM_STEP == 0 and waiting():
                return page
            raw.execute("PRAGMA incremental_vacuum")
        return excess

    # --- the rules: each deletes at most `limit` of the oldest expired rows ------------------

    def _events(self, connection: Connection, cutoff: datetime, limit: int) -> Pruned:
        """Events older than the cutoff with no unfinished delivery, with their deliveries and
        attempts. On PostgreSQL the events and their deliveries are locked before the states
        are read, so a retry or replay committing meanwhile is seen (and the event kept)."""

        def busy(connection: Connection, ids: list[int]) -> set[int]:
            query = select(deliveries.c.event_id, deliveries.c.state).where(
                deliveries.c.event_id.in_(ids))
            if not self.sqlite:
                query = query.with_for_update()
            return {row.event_id for row in connection.execute(query)
                    if row.state in outbox.UNFINISHED}

        ids = self._oldest_free(connection, events, events.c.received_at, cutoff, limit, busy)
        if not ids:
            return Pruned()
        of_events = select(deliveries.c.id).where(deliveries.c.event_id.in_(ids))
        done = Pruned()
        done.add("delivery_attempts", connection.execute(delete(delivery_attempts).where(
            delivery_attempts.c.delivery_id.in_(of_events))).rowcount)
        done.add("deliveries", connection.execute(delete(deliveries).where(
            deliveries.c.event_id.in_(ids))).rowcount)
        done.add("events", connection.execute(delete(events).where(
            events.c.id.in_(ids))).rowcount)
        return done

    def _deliveries(self, wanted: tuple[str, ...]) -> Callable[[Connection, datetime, int],
                                                               Pruned]:
        """Finished deliveries in `wanted` states, last changed before the cutoff, with their
        attempts; the state is checked again by the delete (a dead row retried meanwhile
        stays)."""
        def prune(connection: Connection, cutoff: datetime, limit: int) -> Pruned:
            ids: list[int] = []
            legacy = self.legacy.get("deliveries") if self.partitioned else None
            for state in wanted:  # one (state, updated_at) index range each: no sort
                query = (select(deliveries.c.id)
                         .where(deliveries.c.state == state, deliveries.c.updated_at < cutoff)
                         .order_by(deliveries.c.updated_at).limit(limit - len(ids)))
                if legacy is not None:  # partitioned: the legacy partition's rows only
                    query = query.where(deliveries.c.created_at < legacy)
                if not self.sqlite:
                    query = query.with_for_update(skip_locked=True)
                ids += [row.id for row in connection.execute(query)]
                if len(ids) >= limit:
                    break
            if not ids:
                return Pruned()
            done = Pruned()
            done.add("delivery_attempts", connection.execute(delete(delivery_attempts).where(
                delivery_attempts.c.delivery_id.in_(ids))).rowcount)
            done.add("deliveries", connection.execute(delete(deliveries).where(
                deliveries.c.id.in_(ids), deliveries.c.state.in_(wanted))).rowcount)
            return done
        return prune

    def _attempts(self, connection: Connection, cutoff: datetime, limit: int) -> Pruned:
        """Attempt rows older than the cutoff, of deliveries that are finished (an unfinished
        delivery's history stays while it may still be needed)."""

        def busy(connection: Connection, ids: list[int]) -> set[int]:
            unfinished = select(deliveries.c.id).where(
                deliveries.c.id == delivery_attempts.c.delivery_id,
                deliveries.c.state.in_(outbox.UNFINISHED)).exists()
            return {row.id for row in connection.execute(select(delivery_attempts.c.id).where(
                delivery_attempts.c.id.in_(ids), unfinished))}

        ids = self._oldest_free(connection, delivery_attempts, delivery_attempts.c.started_at,
                                cutoff, limit, busy)
        done = Pruned()
        if ids:
            done.add("delivery_attempts", connection.execute(delete(delivery_attempts).where(
                delivery_attempts.c.id.in_(ids))).rowcount)
        return done

    def _oldest_free(self, connection: Connection, table: Table, time_column: Any,
                     cutoff: datetime, limit: int,
                     busy: Callable[[Connection, list[int]], set[int]]) -> list[int]:
        """Up to `limit` ids of the oldest rows before the cutoff that `busy` does not hold
        back. Candidates come from the time index a page at a time and are checked by id:
        one anti-join over all unfinished deliveries, planned on young statistics, was
        measured at 6 s a batch on PostgreSQL. A page held back whole leads to the next one
        (at most MAX_PAGES a batch)."""
        chosen: list[int] = []
        after = None
        for _ in range(MAX_PAGES):
            query = select(table.c.id, time_column.label("at")).where(time_column < cutoff)
            if after is not None:
                query = query.where(time_column > after)
            query = query.order_by(time_column).limit(limit)
            if not self.sqlite:
                query = query.with_for_update(skip_locked=True)
            rows = connection.execute(query).all()
            if not rows:
                break
            held = busy(connection, [row.id for row in rows])
            chosen += [row.id for row in rows if row.id not in held]
            if len(chosen) >= limit or len(rows) < limit:
                break
            after = rows[-1].at
        return chosen[:limit]

    def _message_ids(self, connection: Connection, cutoff: datetime, limit: int) -> Pruned:
        """PostgreSQL, partitioned: the deduplication keys of events whose week is gone
        (_row_cutoff stops at the oldest week left, and leaves this rule out otherwise).
        Narrow rows: ten batches' worth at once."""
        # by row address: a list of (source, messageId) pairs is no index lookup to PostgreSQL
        deleted = connection.execute(text(
            "DELETE FROM message_ids WHERE ctid = ANY(ARRAY(SELECT ctid FROM message_ids "
            "WHERE received_at < :cutoff ORDER BY received_at LIMIT :n "
            "FOR UPDATE SKIP LOCKED))"), {"cutoff": cutoff, "n": limit * 10}).rowcount
        done = Pruned()
        done.add("message_ids", deleted)
        return done

    def _rejections(self, connection: Connection, cutoff: datetime, limit: int) -> Pruned:
        """The record of refused messages (gateway/rejections.py, which also keeps it to its
        newest rows): ids grow with time, so the oldest are found down the primary key."""
        query = select(rejections.c.id).where(rejections.c.received_at < cutoff) \
            .order_by(rejections.c.id).limit(limit)
        if not self.sqlite:
            query = query.with_for_update(skip_locked=True)
        ids = [row.id for row in connection.execute(query)]
        done = Pruned()
        if ids:
            done.add("rejections", connection.execute(
                delete(rejections).where(rejections.c.id.in_(ids))).rowcount)
        return done


def run(engine: Engine, config: Config, stop: threading.Event) -> None:
    """The loop: prune while there is something to prune (a batch per rule, then again),
    then sleep `interval_seconds`. A database outage is logged once and waited out."""
    settings = config.retention
    pruner = Pruner(engine, settings)
    state = StorageState("pruning old rows", log, settle=0)
    while not stop.is_set():
        try:
            pruned = pruner.prune_once(stop)
        except Exception as exc:  # never take the worker down with it
            state.failed(exc, engine)
            stop.wait(settings.interval_seconds)
            continue
        state.succeeded()
        if pruned.total or pruned.yielded:
            log.debug("retention: deleted %s", pruned.counts)
            stop.wait(pause_after(pruned.seconds, settings.max_busy_percent))
        else:
            stop.wait(settings.interval_seconds)


def wait_for_quiet(waiting: Callable[[], bool], stop: threading.Event | None,
                   limit: float = YIELD_WAIT) -> bool:
    """Wait until no other writer waits for the SQLite writer lock or holds it (True), or
    `limit` seconds have passed without such a moment (False: the round goes ahead anyway, so
    a backlog still drains under writers that never pause)."""
    deadline = time.monotonic() + limit
    while waiting():
        if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
            return False
        time.sleep(POLL)
    return True


def pause_after(took: float, busy_percent: int) -> float:
    """The pause after a round that took `took` seconds, so that pruning (its locks, its CPU)
    takes at most `busy_percent` of the time: ingest shares the writer lock on SQLite and the
    cores everywhere. A backlog is worked off slower rather than ingest slowed down."""
    share = min(max(busy_percent, 1), 100) / 100
    return max(MIN_PAUSE, took * (1 - share) / share)


def start(engine: Engine, config: Config, stop: threading.Event) -> threading.Thread | None:
    """Start the pruning loop beside the delivery worker (None when every rule is 0, on
    SQLite: on PostgreSQL the loop also makes the weeks ahead of partitioned tables)."""
    r = config.retention
    if engine.dialect.name == "sqlite" and not any((
            r.events_days, r.delivered_days, r.dead_days, r.attempts_days, r.rejections_days)):
        return None
    thread = threading.Thread(target=run, args=(engine, config, stop), name="retention",
                              daemon=True)
    thread.start()
    return thread
