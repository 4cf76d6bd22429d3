"""Weekly time partitions of the big tables on PostgreSQL (migration 0014), so retention drops a
whole week instead of deleting it row by row.

`events` is partitioned by `received_at`, `deliveries` by `created_at`, `delivery_attempts` by
`started_at`: one partition per week (Monday 00:00 UTC to the next), named `<table>_pYYYYMMDD`
after its first day, plus `<table>_legacy` — the table as it was before the conversion, attached
for everything older. A row needs its partition to exist: the delivery worker makes each week a
day before it starts (AHEAD: every week more is one more partition each query by id visits), and
a writer that finds none (no worker has run for a while) makes it and retries. Dropping detaches
first, CONCURRENTLY, so neither ingest nor the worker waits on the lock a plain DROP takes on the
parent. SQLite is not partitioned: every function here is a no-op there.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

log = logging.getLogger(__name__)

# table → the time column it is partitioned by
PARTITIONED: dict[str, str] = {
    "events": "received_at", "deliveries": "created_at", "delivery_attempts": "started_at"}
SPAN = timedelta(days=7)
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)  # a Monday: every partition starts on one
AHEAD = timedelta(days=1)  # next week's partitions made this long before it starts
LABEL = "gateway: detached week of "  # the comment `detach` leaves on a week it takes out
LOCK_TIMEOUT = "2s"  # a partition DDL gives way rather than queue ingest behind it
_BOUND = re.compile(r"FROM \((MINVALUE|'[^']+')\) TO \((MAXVALUE|'[^']+')\)")


@dataclass(frozen=True)
class Partition:
    table: str
    name: str
    lower: datetime | None  # None: MINVALUE (the legacy partition)
    upper: datetime


def week_of(at: datetime) -> tuple[datetime, datetime]:
    """The [start, end) of the partition a time falls in."""
    weeks = (at - EPOCH) // SPAN
    start = EPOCH + weeks * SPAN
    return start, start + SPAN


def is_partitioned(connection: Connection, table: str) -> bool:
    if connection.dialect.name != "postgresql":
        return False
    return connection.execute(text(
        "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table p JOIN pg_class c "
        "ON c.oid = p.partrelid WHERE c.relname = :t "
        "AND c.relnamespace = current_schema()::regnamespace)"), {"t": table}).scalar()


def partitions(connection: Connection, table: str) -> list[Partition]:
    """The table's partitions, oldest first (none when it is not partitioned)."""
    if connection.dialect.name != "postgresql":
        return []
    rows = connection.execute(text(
        "SELECT c.relname AS name, pg_get_expr(c.relpartbound, c.oid) AS bound "
        "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent "
        "WHERE p.relname = :t AND p.relnamespace = current_schema()::regnamespace"),
        {"t": table}).all()
    found = []
    for row in rows:
        match = _BOUND.search(row.bound or "")
        if match is None or match.group(2) == "MAXVALUE":
            continue  # not one of ours
        lower = None if match.group(1) == "MINVALUE" else _timestamp(match.group(1))
        found.append(Partition(table, row.name, lower, _timestamp(match.group(2))))
    return sorted(found, key=lambda p: p.upper)


def _timestamp(literal: str) -> datetime:
    return datetime.fromisoformat(literal.strip("'")).astimezone(UTC)


def create(connection: Connection, table: str, start: datetime) -> None:
    """The week `start` falls in, where no partition covers it yet (the week a conversion
    happened in is partly the legacy partition's). Fails with a lock timeout rather than
    waiting long behind a running query."""
    lower, upper = week_of(start)
    for gap_lower, gap_upper in _gaps(partitions(connection, table), lower, upper):
        name = f"{table}_p{gap_lower:%Y%m%d}" + (
            "" if gap_lower == lower else f"_{gap_lower:%H%M%S}")
        # made apart, then attached: ATTACH takes a lock writers do not wait on, where
        # CREATE TABLE … PARTITION OF would queue every insert behind a long-running read
        connection.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        connection.execute(text(
            f'CREATE TABLE IF NOT EXISTS "{name}" (LIKE "{table}" INCLUDING DEFAULTS)'))
        connection.execute(text(
            f'ALTER TABLE "{table}" ATTACH PARTITION "{name}" '
            f"FOR VALUES FROM ('{gap_lower.isoformat()}') TO ('{gap_upper.isoformat()}')"))
        log.info("partition %s created", name)


def _gaps(existing: list[Partition], lower: datetime,
          upper: datetime) -> list[tuple[datetime, datetime]]:
    """The parts of [lower, upper) no existing partition covers."""
    gaps, start = [], lower
    for p in existing:  # oldest first
        if p.upper <= start or (p.lower is not None and p.lower >= upper):
            continue
        if p.lower is not None and p.lower > start:
            gaps.append((start, p.lower))
        start = max(start, p.upper)
    if start < upper:
        gaps.append((start, upper))
    return gaps


def legacy_upper(connection: Connection, table: str) -> datetime | None:
    """Where the legacy partition (the table before migration 0014) ends, if it is still
    there: its rows are pruned row by row, as before, until it can go whole."""
    return next((p.upper for p in partitions(connection, table) if p.lower is None), None)


def ensure(engine: Engine, first: datetime, last: datetime) -> None:
    """Every partitioned table covered from the week of `first` to the week of `last`, each
    week in a transaction of its own. Two processes making the same week: one wins, the other's
    error is ignored once the week is there."""
    if engine.dialect.name != "postgresql":
        return
    for table in PARTITIONED:
        start, _ = week_of(first)
        while start <= last:
            try:
                with engine.begin() as connection:
                    if not is_partitioned(connection, table):
                        break
                    create(connection, table, start)
            except DBAPIError as exc:
                with engine.connect() as connection:
                    if not _covered(connection, table, start):
                        raise
                log.debug("partition of %s for %s made elsewhere: %s", table, start, exc)
            start += SPAN


def _covered(connection: Connection, table: str, at: datetime) -> bool:
    return any((p.lower is None or p.lower <= at) and at < p.upper
               for p in partitions(connection, table))


def ensure_ahead(engine: Engine, now: datetime | None = None) -> None:
    """This week, and the next once it is less than AHEAD away, for every partitioned table
    (the worker calls this once a minute)."""
    now = now or datetime.now(UTC)
    ensure(engine, now, now + AHEAD)


def is_missing_partition(exc: BaseException) -> bool:
    """A write refused because no partition holds its time."""
    return "no partition of relation" in str(getattr(exc, "orig", exc))


def detach(engine: Engine, partition: Partition) -> None:
    """Take a week out of its table CONCURRENTLY: no lock that blocks the writers of the other
    weeks, and once it returns no new statement sees the week. A detach interrupted halfway is
    finished first. The week is labelled with its table and bounds first, so a pass that dies
    before it drops or attaches it again finds it (`detached`)."""
    with _autocommit(engine) as connection:
        pending = connection.execute(text(
            "SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = to_regclass(:n)"),
            {"n": partition.name}).scalar()
        if pending is None:
            return  # already out
        lower = "MINVALUE" if partition.lower is None else partition.lower.isoformat()
        connection.execute(text(
            f"COMMENT ON TABLE \"{partition.name}\" IS '{LABEL}{partition.table} FROM "
            f"{lower} TO {partition.upper.isoformat()}'"))
        how = "FINALIZE" if pending else "CONCURRENTLY"
        connection.execute(text(
            f'ALTER TABLE "{partition.table}" DETACH PARTITION "{partition.name}" {how}'))


def detached(connection: Connection, table: str) -> list[Partition]:
    """Weeks of `table` that `detach` took out and nothing attached again or dropped."""
    if connection.dialect.name != "postgresql":
        return []
    rows = connection.execute(text(
        "SELECT c.relname AS name, obj_description(c.oid, 'pg_class') AS label "
        "FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace "
        "AND c.relkind = 'r' AND NOT c.relispartition "
        "AND obj_description(c.oid, 'pg_class') LIKE :label"),
        {"label": f"{LABEL}{table} FROM %"}).all()
    found = []
    for row in rows:
        lower, upper = row.label.removeprefix(f"{LABEL}{table} FROM ").split(" TO ")
        found.append(Partition(table, row.name,
                               None if lower == "MINVALUE" else _timestamp(lower),
                               _timestamp(upper)))
    return found


def attach(engine: Engine, partition: Partition) -> None:
    """Put a detached week back (what it held must stay after all)."""
    lower = "MINVALUE" if partition.lower is None else f"'{partition.lower.isoformat()}'"
    with _autocommit(engine) as connection:
        connection.execute(text(
            f'ALTER TABLE "{partition.table}" ATTACH PARTITION "{partition.name}" '
            f"FOR VALUES FROM ({lower}) TO ('{partition.upper.isoformat()}')"))
        connection.execute(text(f'COMMENT ON TABLE "{partition.name}" IS NULL'))
    log.info("partition %s attached again", partition.name)


def drop(engine: Engine, partition: Partition) -> None:
    """Detach, then drop the detached table."""
    detach(engine, partition)
    with _autocommit(engine) as connection:
        connection.execute(text(f'DROP TABLE IF EXISTS "{partition.name}"'))
    log.info("partition %s dropped", partition.name)


@contextmanager
def _autocommit(engine: Engine) -> Iterator[Connection]:
    """A connection outside any transaction block (DETACH … CONCURRENTLY refuses one). No
    session settings: behind PgBouncer the next statement may run on another server
    connection. None is needed: detach and attach take a lock writers do not wait on, and the
    detached table is no one else's."""
    with engine.connect() as connection:
        yield connection.execution_options(isolation_level="AUTOCOMMIT")
