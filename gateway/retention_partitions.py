"""Retention on partitioned PostgreSQL tables (gateway/store/partitions.py): whole weeks go.

A week of a table is dropped once every row in it may go under `[retention]`, so the common case
costs a catalog change instead of a delete per row:
- deliveries: none unfinished, every delivered or skipped one past `delivered_days` and every
  dead one past `dead_days` (a week whose events are past `events_days` goes whole: an event
  takes its deliveries with it);
- events: past `events_days`, none referenced by an unfinished delivery; deliveries of its events
  kept elsewhere (a replay's, in a later week) are deleted first, by row;
- attempts: past `attempts_days`, none of an unfinished delivery.
Each week is checked, detached (concurrently: writers of the other weeks never wait), checked
again — a replay or a retry that committed in between shows now, and puts it back — and dropped.
What must stay holds its week back (checked again every round), and gateway/retention.py's
row-level rules delete the rest of such a week around it: the row-level pass. `message_ids`
loses, by row, the keys of events whose weeks are gone. Checks read indexes only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, bindparam, text
from sqlalchemy.exc import DBAPIError

from gateway.config import RetentionSettings
from gateway.store import outbox, partitions
from gateway.store.partitions import Partition

log = logging.getLogger(__name__)

_UNFINISHED = tuple(outbox.UNFINISHED)


def cutoff(now: datetime, days: int) -> datetime | None:
    return now - timedelta(days=days) if days > 0 else None


class PartitionDropper:
    """One pass: every week that may go, dropped; returns the partitions dropped."""

    def __init__(self, engine: Engine, settings: RetentionSettings) -> None:
        self.engine = engine
        self.settings = settings

    def drop_expired(self, now: datetime) -> list[str]:
        s = self.settings
        events_cut = cutoff(now, s.events_days)
        dropped: list[str] = []
        checks: list[tuple[str, datetime | None, Callable[[Connection, Partition], bool]]] = [
            ("deliveries", now, lambda c, p: self._deliveries_may_go(c, p, now)),
            ("events", events_cut, self._events_may_go),
            ("delivery_attempts", self._attempts_cutoff(now), self._attempts_may_go),
        ]
        for table, cut, may_go in checks:
            self._recover(table, may_go)
            if cut is None:
                continue
            with self.engine.connect() as connection:
                weeks = [p for p in partitions.partitions(connection, table)
                         if p.upper <= cut and p.upper <= now]
            gone = 0
            for week in weeks:
                try:
                    if self._drop(week, may_go):
                        dropped.append(week.name)
                        gone += 1
                except DBAPIError:
                    if self._exists(week):
                        raise
                    log.debug("partition %s dropped by another worker", week.name)
            if gone:
                self._analyze(table)
        return dropped

    def _recover(self, table: str, may_go: Callable[[Connection, Partition], bool]) -> None:
        """A week a pass detached and then neither dropped nor put back (the process died, the
        connection broke): dropped now if it may go, else attached again."""
        with self.engine.connect() as connection:
            stranded = partitions.detached(connection, table)
        for week in stranded:
            log.warning("partition %s was left detached: finishing", week.name)
            self._finish(week, may_go)

    def _analyze(self, table: str) -> None:
        """Autovacuum never analyzes a partitioned table itself, only its partitions: the
        table-wide statistics would still count the weeks just dropped, and plans made from
        them (measured: ingest at 60 % of its rate after a drop) until someone runs ANALYZE."""
        with self.engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(
                text(f'ANALYZE "{table}"'))

    def _exists(self, week: Partition) -> bool:
        """Several workers run this pass: the week another one dropped is not an error."""
        with self.engine.connect() as connection:
            return connection.execute(text("SELECT to_regclass(:n) IS NOT NULL"),
                                      {"n": week.name}).scalar()

    def _drop(self, week: Partition, may_go: Callable[[Connection, Partition], bool]) -> bool:
        """Checked, detached, checked again (a replay or a retry may have committed in
        between: once detached, the week no longer changes), then dropped; put back if what
        it holds must stay after all."""
        with self.engine.connect() as connection:
            if not may_go(connection, week):
                return False
        partitions.detach(self.engine, week)
        return self._finish(week, may_go)

    def _finish(self, week: Partition, may_go: Callable[[Connection, Partition], bool]) -> bool:
        """The detached week: checked again, then dropped or attached again."""
        with self.engine.begin() as connection:
            if not may_go(connection, week):
                keep = True
            else:
                keep = False
                if week.table == "events":
                    self._delete_other_deliveries(connection, week)
        if keep:
            partitions.attach(self.engine, week)
            return False
        partitions.drop(self.engine, week)
        return True

    def _attempts_cutoff(self, now: datetime) -> datetime | None:
        """attempts_days; or, kept "forever" (0), any week once the deliveries it tells of
        are gone (_attempts_may_go)."""
        return cutoff(now, self.settings.attempts_days) if self.settings.attempts_days else now

    def _deliveries_may_go(self, connection: Connection, week: Partition,
                           now: datetime) -> bool:
        """Every row past its rule (a user deletion's too: it has no event to go with). The
        deliveries of events dropped meanwhile went with them (_delete_other_deliveries)."""
        name = week.name
        if _exists(connection, f'SELECT 1 FROM "{name}" WHERE state IN :states',
                   states=_UNFINISHED):
            return False
        s = self.settings
        for states, days in (((outbox.DELIVERED, outbox.SKIPPED), s.delivered_days),
                             ((outbox.DEAD,), s.dead_days)):
            since = cutoff(now, days)
            for state in states:  # one (state, updated_at) index range each
                if since is None:
                    young = _exists(connection, f'SELECT 1 FROM "{name}" WHERE state = :state',
                                    state=state)
                else:
                    young = _exists(connection, f'SELECT 1 FROM "{name}" WHERE state = :state '
                                    "AND updated_at >= :since", state=state, since=since)
                if young:
                    return False
        return True

    def _events_may_go(self, connection: Connection, week: Partition) -> bool:
        """No unfinished delivery of its events. By the week's id range, not a join: the
        planner walks either the unfinished deliveries (state, id) or the deliveries of that
        range (event_id), whichever is fewer; ids follow time, so a range can take in a few
        events of the next week, which can only keep a week a little longer."""
        first, last = _id_range(connection, week.name, "id")
        return first is None or not _exists(connection, (
            "SELECT 1 FROM deliveries WHERE state IN :states "
            "AND event_id BETWEEN :first AND :last"), states=_UNFINISHED, first=first, last=last)

    def _attempts_may_go(self, connection: Connection, week: Partition) -> bool:
        """No attempt of an unfinished delivery (the (state, id) range of the unfinished);
        with attempts kept "forever", none of a delivery still kept."""
        first, last = _id_range(connection, week.name, "delivery_id")
        if first is None:
            return True
        states = _UNFINISHED if self.settings.attempts_days else tuple(outbox.STATES)
        return not _exists(connection, (
            "SELECT 1 FROM deliveries WHERE state IN :states AND id BETWEEN :first AND :last"),
            states=states, first=first, last=last)

    def _delete_other_deliveries(self, connection: Connection, week: Partition) -> None:
        """Deliveries of the week's events outside the weeks already dropped (a replay made
        later lives in a later week), with their attempts: an event takes them with it."""
        first, last = _id_range(connection, week.name, "id")
        if first is None:
            return
        ids = [row.id for row in connection.execute(text(
            "SELECT id FROM deliveries WHERE event_id BETWEEN :first AND :last "
            f'AND event_id IN (SELECT id FROM "{week.name}")'), {"first": first, "last": last})]
        for start in range(0, len(ids), 1000):
            chunk = ids[start:start + 1000]
            connection.execute(text("DELETE FROM delivery_attempts WHERE delivery_id IN :ids")
                               .bindparams(bindparam("ids", expanding=True)), {"ids": chunk})
            connection.execute(text("DELETE FROM deliveries WHERE id IN :ids")
                               .bindparams(bindparam("ids", expanding=True)), {"ids": chunk})


def _id_range(connection: Connection, table: str, column: str) -> tuple[int | None, int | None]:
    """Lowest and highest of an indexed id column of one partition (two index probes)."""
    return tuple(connection.execute(text(
        f'SELECT min("{column}"), max("{column}") FROM "{table}"')).one())


def _exists(connection: Connection, query: str, **params: object) -> bool:
    statement = text(f"SELECT EXISTS ({query})")
    for name, value in params.items():
        if isinstance(value, tuple):
            statement = statement.bindparams(bindparam(name, expanding=True))
    return bool(connection.execute(statement, {
        k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}).scalar())


def oldest_event_week(connection: Connection) -> datetime | None:
    """Where the oldest events partition left begins (None: the legacy one, or none at all):
    every message key received before it belongs to an event that is gone. A week detached
    right now (another worker's pass) counts: it may be put back."""
    weeks = partitions.partitions(connection, "events") + partitions.detached(connection,
                                                                              "events")
    if not weeks:
        return None
    lowers = [w.lower for w in weeks]
    return None if None in lowers else min(lowers)
