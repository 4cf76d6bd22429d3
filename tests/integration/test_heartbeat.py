"""Heartbeats under concurrency (/health beats from many request threads of one process), and
the count of live workers that divides each destination's rate limit."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, func, select, update

from gateway import create_app
from gateway.config import from_mapping
from gateway.heartbeat import HTTP, STALE_INTERVALS, WORKER, Heartbeat, LiveCount
from gateway.store.db import make_engine
from gateway.store.models import heartbeats
from tests.conftest import base_config


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


@pytest.mark.slow
def test_health_fails_while_destinations_wait_for_a_worker_that_stopped_cleanly(
        database_url: str) -> None:
    """A worker's clean stop removes its heartbeat row: /health used to answer 200 then, while
    deliveries piled up. With a destination enabled and no live worker past the start-up grace
    (three heartbeat intervals, so serve's own worker starting up never flaps it) it is 503."""
    every = 1
    apps = {name: create_app(from_mapping(base_config(
        database_url, worker={"heartbeat_seconds": every}, **extra)))
        for name, extra in (("destinations", {}), ("none", {"destinations": []}),
                            ("paused", {"destinations": [base_config(database_url)[
                                "destinations"][2]]}))}
    client = apps["destinations"].test_client()
    engine = apps["destinations"].extensions["gateway.engine"]
    try:
        assert client.get("/health").get_json() == {"status": "ok", "database": "ok"}  # grace
        worker = Heartbeat(engine, WORKER, every)
        worker.beat(force=True)
        assert client.get("/health").get_json() == {"status": "ok", "database": "ok",
                                                    "delivery_worker": "ok"}
        worker.remove()  # `gateway worker` stopped cleanly
        time.sleep(every * STALE_INTERVALS + 0.2)
        response = client.get("/health")
        assert response.status_code == 503
        body = response.get_json()
        assert body["status"] == "unavailable" and body["database"] == "ok"
        assert body["delivery_worker"].startswith(
            "no delivery worker is running: deliveries to 2 enabled destination(s) wait")
        for name in ("none", "paused"):  # nothing to deliver: no worker needed
            answer = apps[name].test_client().get("/health")
            assert answer.status_code == 200 and "delivery_worker" not in answer.get_json()
        Heartbeat(engine, WORKER, every).beat(force=True)  # a worker again: healthy at once
        assert client.get("/health").status_code == 200
    finally:
        for app in apps.values():
            app.extensions["gateway.engine"].dispose()
