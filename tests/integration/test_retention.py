"""Retention on both databases: each rule removes exactly its expired rows, an event with an
unfinished delivery is never removed, expired rejections are pruned, the worker
process runs the loop, and a SQLite file stays flat across fill/prune cycles.

The row-level rules are tested on PostgreSQL without partitions (the schema before migration
0014, which is how they still prune its legacy partition); whole weeks: test_partitions.py."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from alembic import command
from sqlalchemy import Engine, Table, func, insert, select, text

from gateway.config import RetentionSettings
from gateway.retention import Pruner
from gateway.store import partitions
from gateway.store.db import alembic_config, make_engine, sqlite_file
from gateway.store.models import deliveries, delivery_attempts, events, rejections
from tests.conftest import WRITE_KEY, LiveGateway, base_config
from tests.helpers import Rows, ago


@pytest.fixture(autouse=True)
def row_level(request: pytest.FixtureRequest) -> None:
    """The tests that take `engine` get PostgreSQL unpartitioned (migration 0013)."""
    if "engine" not in request.fixturenames:
        return
    engine = request.getfixturevalue("engine")
    if engine.dialect.name == "postgresql":
        command.downgrade(alembic_config(engine.url.render_as_string(hide_password=False)),
                          "0013")


def ids(engine: Engine, table: Table) -> set[int]:
    with engine.connect() as c:
        return {row[0] for row in c.execute(select(table.c.id))}


def test_each_rule_removes_exactly_its_expired_rows(engine: Engine) -> None:
    rows = Rows(engine)
    # events (30 days): old and finished → gone with deliveries and attempts
    old_done = rows.event(40)
    old_done_d = [rows.delivery(old_done, "delivered", 1), rows.delivery(old_done, "dead", 1)]
    # old but with an unfinished delivery → kept, all of it
    kept_events, kept_deliveries = [], []
    for state in ("pending", "delivering", "retrying"):
        event = rows.event(40)
        kept_events.append(event)
        kept_deliveries += [rows.delivery(event, state, 1), rows.delivery(event, "delivered", 1)]
    young = rows.event(29)
    # delivered and skipped (7 days), dead (30 days), on young events
    expired = [rows.delivery(young, "delivered", 8), rows.delivery(young, "skipped", 8),
               rows.delivery(young, "dead", 31)]
    dead_29 = rows.delivery(young, "dead", 29)  # kept; its 29-day-old attempt is not (7 days)
    fresh = [rows.delivery(young, "delivered", 6), rows.delivery(young, "skipped", 6),
             dead_29, rows.delivery(young, "retrying", 40)]
    # attempts (7 days): old attempts of finished deliveries go, of unfinished ones stay
    finished_old_attempt = rows.delivery(young, "delivered", 1, attempt_days=8)
    retrying_old_attempt = rows.delivery(young, "retrying", 1, attempt_days=8)
    fresh.append(finished_old_attempt)
    fresh.append(retrying_old_attempt)
    with engine.connect() as c:
        attempts_of = {r.delivery_id: r.id for r in c.execute(select(delivery_attempts))}

    pruner = Pruner(engine, dataclasses.replace(RetentionSettings(), batch_size=2))
    pruned = pruner.prune_all()

    assert ids(engine, events) == {*kept_events, young}
    assert ids(engine, deliveries) == {*kept_deliveries, *fresh}
    assert not ids(engine, deliveries) & {*old_done_d, *expired}
    assert ids(engine, delivery_attempts) == {
        attempts_of[d] for d in (*kept_deliveries, *fresh)
        if d not in (finished_old_attempt, dead_29)}
    assert pruned.counts == {"events": 1, "deliveries": 2 + 3,
                             "delivery_attempts": 2 + 3 + 2}
    assert not pruner.prune_once().total  # nothing left: the next round deletes nothing


def test_old_events_held_back_do_not_block_the_ones_behind_them(engine: Engine) -> None:
    rows = Rows(engine)
    held = []
    for k in range(5):  # the oldest five wait for a delivery: pages of two are read past them
        held.append(rows.event(50 - k))
        rows.delivery(held[-1], "retrying", 1)
    free = rows.event(40)
    rows.delivery(free, "delivered", 1)
    pruned = Pruner(engine, RetentionSettings(batch_size=2)).prune_once()
    assert pruned.counts["events"] == 1
    assert ids(engine, events) == set(held)


def test_zero_keeps_forever(engine: Engine) -> None:
    rows = Rows(engine)
    event = rows.event(4000)
    delivery = rows.delivery(event, "delivered", 4000)
    settings = RetentionSettings(events_days=0, delivered_days=0, dead_days=0,
                                 attempts_days=0, rejections_days=0)
    assert Pruner(engine, settings).rules() == []
    assert not Pruner(engine, settings).prune_all().total
    assert ids(engine, events) == {event} and ids(engine, deliveries) == {delivery}


def test_expired_rejections_are_pruned(engine: Engine) -> None:
    settings = RetentionSettings(rejections_days=7)
    with engine.begin() as c:
        c.execute(insert(rejections), [
            {"received_at": ago(30), "reason": "older", "detail": "d"},
            {"received_at": ago(8), "reason": "old", "detail": "d"},
            {"received_at": ago(6), "reason": "young", "detail": "d"}])
    pruned = Pruner(engine, settings).prune_all()
    assert pruned.counts == {"rejections": 2}
    with engine.connect() as c:
        assert [r.reason for r in c.execute(select(rejections))] == ["young"]


@pytest.mark.slow
def test_the_worker_process_prunes(database_url: str, tmp_path: Path) -> None:
    engine = make_engine(database_url)
    try:
        rows = Rows(engine)  # old enough that its whole week is past (PostgreSQL drops weeks)
        old = rows.event(20)
        partitions.ensure(engine, ago(20), ago(0))
        rows.delivery(old, "delivered", 20)
        young = rows.event(0)
        raw = base_config(database_url, retention={"events_days": 2, "interval_seconds": 1},
                          worker={"poll_interval_ms": 50})
        gateway = LiveGateway(tmp_path, raw, delivery_worker=True)
        try:
            deadline = time.monotonic() + 30
            while ids(engine, events) != {young} and time.monotonic() < deadline:
                time.sleep(0.2)
            assert ids(engine, events) == {young}
            assert WRITE_KEY not in gateway.log_text()
        finally:
            gateway.stop()
    finally:
        engine.dispose()


def file_size(path: Path, engine: Engine) -> int:
    with engine.connect() as c:
        c.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").all()
    return os.path.getsize(path)


@pytest.mark.slow
def test_sqlite_file_stays_flat_across_fill_and_prune(tmp_path: Path) -> None:
    from gateway.store.db import migrate

    url = f"sqlite:///{tmp_path / 'flat.db'}"
    migrate(url)
    path = sqlite_file(url)
    assert path is not None
    assert sqlite3.connect(path).execute("PRAGMA auto_vacuum").fetchone() == (2,)
    engine = make_engine(url)
    try:
        pruner = Pruner(engine, RetentionSettings(batch_size=500))
        sizes = []
        for cycle in range(5):
            fill(engine, 10_000, cycle)
            filled = file_size(path, engine)
            pruned = pruner.prune_all()
            assert pruned.counts["events"] == 10_000
            sizes.append((filled, file_size(path, engine)))
        grown = [filled for filled, _ in sizes]
        assert max(grown) <= grown[0] * 1.1, sizes  # filled file: same size every cycle
        assert all(after < filled / 2 for filled, after in sizes), sizes  # pages handed back
    finally:
        engine.dispose()


def fill(engine: Engine, n: int, cycle: int) -> None:
    """n expired events (1 KB payloads), each with a delivered delivery and an attempt."""
    old = ago(60)
    with engine.begin() as c:
        c.execute(insert(events), [{
            "source": "web", "message_id": f"c{cycle}-{i}", "type": "track", "event": "E",
            "user_id": f"u{i}", "anonymous_id": None, "timestamp": old, "received_at": old,
            "payload": orjson.dumps({"type": "track", "pad": "x" * 1000})} for i in range(n)])
        first = c.execute(select(func.min(events.c.id)).where(
            events.c.message_id.like(f"c{cycle}-%"))).scalar_one()
        c.execute(text(
            "INSERT INTO deliveries (event_id, destination, user_key, state, attempts, "
            "next_attempt_at, created_at, updated_at) SELECT id, 'cio', user_id, 'delivered', "
            "1, received_at, received_at, received_at FROM events WHERE id >= :first"),
            {"first": first})
        c.execute(text(
            "INSERT INTO delivery_attempts (delivery_id, number, started_at, duration_ms, "
            "status) SELECT id, 1, created_at, 3, 200 FROM deliveries"))


@pytest.fixture
def engine(database_url: str) -> Any:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()
