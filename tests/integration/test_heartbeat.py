"""Heartbeats under concurrency: /health beats from many request threads of one process."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from gateway.db import make_engine
from gateway.heartbeat import HTTP, Heartbeat
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
