"""Copy one installation's database into another (SQLite → PostgreSQL, the move off the
embedded default): every table that holds data a user would miss, in id order, in short
transactions, resumable, then verified by counts and checksums.

Not copied: heartbeats (liveness of processes that will not run there) and console sessions
(sign in again); PostgreSQL's message_ids is filled from the copied events instead. The target
is migrated first, so both hold the same schema; each table's columns are read from the models,
so a column a migration adds is copied with the rest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Engine, Table, func, insert, select, text

from gateway.heartbeat import STALE_INTERVALS
from gateway.store import partitions
from gateway.store.models import (
    deliveries,
    delivery_attempts,
    events,
    gateway_secrets,
    heartbeats,
    identities,
    identity_conflicts,
    identity_keys,
    regulation_subjects,
    regulations,
    rejections,
    suppressed_keys,
    violations,
)

# parents before children (deliveries name events, attempts name deliveries, keys identities)
TABLES: tuple[Table, ...] = (events, deliveries, delivery_attempts, identities, identity_keys,
                             identity_conflicts, regulations, regulation_subjects,
                             suppressed_keys, rejections, gateway_secrets, violations)
DEFAULT_BATCH = 2_000
LIVE_WITHIN_SECONDS = 5 * STALE_INTERVALS  # a heartbeat this fresh: a process is still running


class CopyProblem(Exception):
    """The copy cannot start or did not verify; the message says what to do."""


@dataclass
class TableReport:
    name: str
    copied: int  # rows written by this run (0 when an earlier run had copied them all)
    rows: int  # rows in the source
    verified: bool = False


Progress = Callable[[str, int, int], None]  # table, rows done, rows in all


def live_processes(engine: Engine, now: datetime) -> list[str]:
    """Gateway processes that beat recently: a source still written to cannot be copied
    consistently (stop `gateway serve` and every `gateway worker` first)."""
    with engine.connect() as connection:
        rows = connection.execute(select(heartbeats.c.role, heartbeats.c.host, heartbeats.c.pid,
                                         heartbeats.c.beat_at)).all()
    return [f"{r.role} pid {r.pid} on {r.host}" for r in rows
            if (now - r.beat_at).total_seconds() < LIVE_WITHIN_SECONDS]


def copy_all(source: Engine, target: Engine, batch: int = DEFAULT_BATCH,
             progress: Progress | None = None,
             stop_after_batches: int | None = None) -> list[TableReport]:
    """Copy every table not yet fully in the target. Rows are written in the source's id
    order, so a run that was stopped resumes after the last row it committed.
    `stop_after_batches` ends the run early (how the tests interrupt it)."""
    reports = []
    budget = [stop_after_batches]
    for table in TABLES:
        reports.append(_copy_table(source, target, table, batch, progress, budget))
        if budget[0] == 0:
            break
    if budget[0] != 0 and target.dialect.name == "postgresql":
        _advance_sequences(target)
        _fill_message_ids(target)
    return reports


def verify(source: Engine, target: Engine, reports: list[TableReport]) -> list[str]:
    """Counts and checksums of every table, side by side; the problems found (none: every
    report is marked verified)."""
    problems = []
    for report in reports:
        table = next(t for t in TABLES if t.name == report.name)
        mine, theirs = checksum(source, table), checksum(target, table)
        if mine != theirs:
            problems.append(f"{table.name}: {mine[0]} rows (sha256 {mine[1][:12]}) in the "
                            f"source, {theirs[0]} (sha256 {theirs[1][:12]}) in the target")
        else:
            report.verified = True
    return problems


def checksum(engine: Engine, table: Table) -> tuple[int, str]:
    """Rows and a sha256 of the table in key order, every value as the models read it
    (JSON as data with sorted keys, times as UTC ISO text): equal on SQLite and PostgreSQL
    exactly when the rows are."""
    digest = hashlib.sha256()
    count = 0
    for rows in _batches(engine, table, 5_000):
        for row in rows:
            digest.update(orjson.dumps([_plain(v) for v in row], option=orjson.OPT_SORT_KEYS))
            count += 1
    return count, digest.hexdigest()


def _copy_table(source: Engine, target: Engine, table: Table, batch: int,
                progress: Progress | None, budget: list[int | None]) -> TableReport:
    key = _order_key(table)
    with source.connect() as connection:
        total = connection.execute(select(func.count()).select_from(table)).scalar_one()
    with target.connect() as connection:
        last = connection.execute(select(func.max(key))).scalar()
        done = connection.execute(select(func.count()).select_from(table)).scalar_one()
    _make_weeks(source, target, table)
    copied = 0
    for rows in _batches(source, table, batch, after=last):
        if budget[0] == 0:
            break
        with target.begin() as connection:
            connection.execute(insert(table), [dict(row._mapping) for row in rows])
        copied += len(rows)
        if budget[0] is not None:
            budget[0] -= 1
        if progress:
            progress(table.name, done + copied, total)
    return TableReport(table.name, copied, total)


def _batches(engine: Engine, table: Table, size: int, after: Any = None) -> Iterator[list[Any]]:
    """The table in key order, `size` rows at a time, each read in a short transaction of its
    own (keyset pagination: no offset, no long-held snapshot)."""
    key = _order_key(table)
    while True:
        query = select(table).order_by(key).limit(size)
        if after is not None:
            query = query.where(key > after)
        with engine.connect() as connection:
            rows = connection.execute(query).all()
        if not rows:
            return
        yield rows
        after = rows[-1]._mapping[key.name]


def _order_key(table: Table) -> Any:
    (column,) = table.primary_key.columns  # every copied table has a one-column key
    return column


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _make_weeks(source: Engine, target: Engine, table: Table) -> None:
    """A partitioned target table (PostgreSQL, migration 0014) gets the weeks the source's
    rows fall in before they arrive."""
    column = partitions.PARTITIONED.get(table.name)
    if column is None or target.dialect.name != "postgresql":
        return
    with source.connect() as connection:
        first, last = connection.execute(select(func.min(table.c[column]),
                                                func.max(table.c[column]))).one()
    if first is not None:
        partitions.ensure(target, first, last)


def _fill_message_ids(target: Engine) -> None:
    """The deduplication keys of the copied events (PostgreSQL keeps them in message_ids,
    models.py): a resend of a message stored before the move is still a duplicate."""
    with target.begin() as connection:
        connection.execute(text(
            "INSERT INTO message_ids (source, message_id, received_at) "
            "SELECT source, message_id, received_at FROM events "
            "ON CONFLICT (source, message_id) DO NOTHING"))


def _advance_sequences(target: Engine) -> None:
    """Rows came with their ids: move each id sequence past them, so the next insert does not
    collide with a copied row."""
    with target.begin() as connection:
        for table in TABLES:
            key = _order_key(table)
            if not key.autoincrement or not isinstance(key.type.python_type, type) \
                    or key.type.python_type is not int:
                continue
            connection.execute(text(
                f"SELECT setval(pg_get_serial_sequence('{table.name}', '{key.name}'), "
                f"COALESCE((SELECT max({key.name}) FROM {table.name}), 0) + 1, false)"))
