"""Heartbeats under concurrency (/health beats from many request threads of one process), and
the count of live workers that divides each destination's rate limit."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from sqlalchemy import create_engine, func, select, update

from gateway.db import make_engine
from gateway.heartbeat import HTTP, STALE_INTERVALS, WORKER, Heartbeat, LiveCount
from gateway.models import heartbeats


def test_concurrent_first_beats_of_one_process_write_one_row(database_url: str) -> None:
    """Two first beats used to both find no row and both insert it: a primary-key conflict on
    PostgreSQL, which /health reported as a storage failure (a false 503)."""
    engine = make_engine(database_url)
    try:
        for _ in range(5):  # a fresh process's first beat, five times over
            beat = Heartbeat(engine, HTTP, every=30)
            with ThreadPoolExecutor(16) as pool:
                results = list(pool.map(lambda _, b=beat: b.beat(force=True), range(16)))
            assert all(results)
            with engine.connect() as connection:
                rows = connection.execute(select(func.count()).select_from(heartbeats).where(
                    heartbeats.c.id == beat.id)).scalar_one()
            assert rows == 1
    finally:
        engine.dispose()


def test_live_workers_are_counted_at_most_once_an_interval_and_an_outage_keeps_the_count(
        database_url: str) -> None:
    engine = make_engine(database_url)
    now = [0.0]
    live = LiveCount(engine, WORKER, every=5, clock=lambda: now[0])
    try:
        assert live.current() == 1  # no row yet: the caller itself
        beats = [Heartbeat(engine, WORKER, 5) for _ in range(3)]
        for beat in beats:
            beat.beat(force=True)
        Heartbeat(engine, HTTP, 5).beat(force=True)  # not a worker
        with engine.begin() as connection:  # one worker missed its beats: gone
            connection.execute(update(heartbeats).where(heartbeats.c.id == beats[2].id).values(
                beat_at=datetime.now(UTC) - timedelta(seconds=5 * STALE_INTERVALS + 1)))
        assert live.current() == 1  # not re-read within the interval
        now[0] += 5
        assert live.current() == 2
        live.engine = create_engine("sqlite:////nonexistent-directory/gateway.db")
        now[0] += 5
        assert live.current() == 2  # the database failed: the last count holds
        live.engine = engine
        beats[0].remove()
        now[0] += 5
        assert live.current() == 1
    finally:
        engine.dispose()
