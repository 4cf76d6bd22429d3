"""The claim's order and the recorder's lease guard, tested directly on a real database (SQLite
and PostgreSQL): which due rows one claim takes first, and that a result is written only while
its lease is still the one in the row (another worker that took over keeps the delivery)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from gateway import create_app
from gateway.config import Config, from_mapping
from gateway.delivery.claim import claim
from gateway.delivery.worker import Worker
from gateway.store.models import deliveries, delivery_attempts
from tests.conftest import ADMIN_TOKEN, WRITE_KEY
from tests.helpers import FakeClock, send, stored_deliveries, tracks, wait_for
from tests.standin import Answer, StandIn


def hook_config(database_url: str, url: str) -> Config:
    return from_mapping(
        {
            "database_url": database_url,
            "admin_token": ADMIN_TOKEN,
            "sources": [{"name": "web", "write_key": WRITE_KEY}],
            "destinations": [
                {
                    "name": "hook",
                    "type": "webhook",
                    "endpoint": url,
                    "settings": {"webhookUrl": "https://hooks.example/in"},
                }
            ],
            "retry": {"base_delay_seconds": 0},
        }
    )


@pytest.fixture
def stored(database_url: str, standin: StandIn) -> Iterator[tuple[Any, Engine]]:
    """The app on one webhook destination (pointed at the stand-in), with six users' events
    stored: deliveries 1 to 6, all pending and due."""
    app = create_app(hook_config(database_url, standin.url))
    engine = app.extensions["gateway.engine"]
    send(app, WRITE_KEY, tracks("u", 6))
    yield app, engine
    engine.dispose()


def ids(engine: Engine) -> list[int]:
    return [row["id"] for row in stored_deliveries(engine)]


def set_rows(engine: Engine, delivery_ids: list[int], **values: Any) -> None:
    with engine.begin() as connection:
        connection.execute(
            deliveries.update().where(deliveries.c.id.in_(delivery_ids)).values(**values)
        )


def test_a_claim_takes_expired_leases_then_due_retries_then_new_ones(stored) -> None:
    _, engine = stored
    one, two, three, four, five, six = ids(engine)
    past = datetime.now(UTC) - timedelta(seconds=5)
    later = datetime.now(UTC) + timedelta(hours=1)
    set_rows(engine, [five], state="delivering", lease_expires_at=past, attempts=1)  # expired
    set_rows(engine, [six], state="delivering", lease_expires_at=later, attempts=1)  # held
    set_rows(engine, [two, four], state="retrying", next_attempt_at=past, attempts=1)
    set_rows(engine, [three], state="retrying", next_attempt_at=later, attempts=1)  # not due
    # left pending and due: one
    assert [c.id for c in claim(engine, {"hook": 2}, 60)] == [five, two]
    assert [c.id for c in claim(engine, {"hook": 10}, 60)] == [four, one]
    assert claim(engine, {"hook": 10}, 60) == []  # three is not due, six is held


def test_a_claim_takes_each_kind_oldest_first_and_stops_at_the_room(stored) -> None:
    _, engine = stored
    every = ids(engine)
    assert [c.id for c in claim(engine, {"hook": 4}, 60)] == every[:4]
    assert [c.id for c in claim(engine, {"hook": 0}, 60)] == []
    assert [c.id for c in claim(engine, {"hook": 4}, 60)] == every[4:]


def test_a_result_is_recorded_only_under_the_lease_it_was_claimed_with(
    stored, database_url: str, standin: StandIn
) -> None:
    app, engine = stored
    worker = Worker(engine, app.extensions["gateway.config"])
    try:
        claimed = claim(engine, {"hook": 2}, 60)
        finished = [f for c in claimed for f in worker.process(c)]
        assert len(standin.requests) == 2
        taken_over, kept = claimed
        # another worker took the first over once its lease ran out: a new lease in the row
        set_rows(engine, [taken_over.id], lease_expires_at=taken_over.lease + timedelta(seconds=30))
        assert worker.recorder.record_safely(finished) == []
        rows = {r["id"]: r for r in stored_deliveries(engine)}
        assert rows[taken_over.id]["state"] == "delivering"  # left to the worker holding it
        assert rows[taken_over.id]["attempts"] == 0
        assert rows[kept.id]["state"] == "delivered" and rows[kept.id]["attempts"] == 1
        with engine.connect() as connection:
            attempts = connection.execute(
                select(delivery_attempts.c.delivery_id, func.count()).group_by(
                    delivery_attempts.c.delivery_id
                )
            ).all()
        assert [tuple(a) for a in attempts] == [(kept.id, 1)]
    finally:
        worker.close()


def test_the_worker_renews_the_leases_of_what_it_still_sends_once_a_third_has_gone(
    stored, standin: StandIn
) -> None:
    app, engine = stored
    standin.answer_for = lambda r: Answer(delay=1.0)  # still sending while the clock moves
    clock = FakeClock()
    worker = Worker(engine, app.extensions["gateway.config"], now=clock.now)
    stop = threading.Event()
    try:
        worker.turn(stop, 0.0)
        sending = list(worker.sending.values())
        assert sending and worker.config.worker.lease_seconds == 10
        claimed = {c.id: c.lease for c in sending}
        # each send reads the clock as it starts: all of them under way before it moves
        wait_for(lambda: len(standin.requests) == len(sending), 5, "the sends")
        clock.advance(3)  # 7 s of the lease left: not yet
        worker.turn(stop, 0.0)
        assert leases(engine) == claimed
        clock.advance(1)  # 6 s left: less than two thirds
        worker.turn(stop, 0.0)
        renewed = leases(engine)
        assert set(renewed) == set(claimed)
        assert all(renewed[i] > claimed[i] for i in claimed)
        assert {c.id: c.lease for c in worker.sending.values()} == renewed
        wait_for(
            lambda: worker.turn(stop, 0.05) and not worker.sending and not worker.unrecorded,
            10,
            "the answers",
        )
        rows = [r for r in stored_deliveries(engine) if r["id"] in claimed]
        assert {(r["state"], r["attempts"]) for r in rows} == {("delivered", 1)}
    finally:
        worker.close()


def leases(engine: Engine) -> dict[int, datetime]:
    """The lease of every delivery being sent, as the worker holds it (aware, UTC)."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(deliveries.c.id, deliveries.c.lease_expires_at).where(
                deliveries.c.state == "delivering"
            )
        ).all()
    return {i: lease if lease.tzinfo else lease.replace(tzinfo=UTC) for i, lease in rows}
