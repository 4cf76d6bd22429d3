"""`outbox.revive`, the one way back from dead: the admin API's retry and the console's "retry
all matching" both go through it, so both give the same fresh retry window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, insert, select

from gateway.console import data
from gateway.replay import retry_dead
from gateway.store import outbox, partitions
from gateway.store.db import write_transaction
from gateway.store.models import deliveries, events

LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)


def delivery(engine: Engine, state: str) -> int:
    """An event and one delivery of it in `state`, moved there through the outbox."""
    partitions.ensure(engine, LONG_AGO, LONG_AGO)  # PostgreSQL: that week's partitions
    with write_transaction(engine) as connection:
        event_id = connection.execute(insert(events).values(
            source="web", message_id=f"m-{state}-{datetime.now(UTC).timestamp()}",
            type="track", event="E", user_id="u", anonymous_id=None, timestamp=LONG_AGO,
            received_at=LONG_AGO, payload=b'{"type":"track"}')).inserted_primary_key[0]
        outbox.queue(connection, "cio", [event_id], at=LONG_AGO)
        delivery_id = connection.execute(select(deliveries.c.id).where(
            deliveries.c.event_id == event_id)).scalar_one()
        if state != outbox.PENDING:
            outbox.transition(connection, outbox.PENDING, outbox.DELIVERING, [delivery_id],
                              lease_expires_at=LONG_AGO, first_attempt_at=LONG_AGO)
            outbox.transition(connection, outbox.DELIVERING, state, [delivery_id])
    return delivery_id


def row(engine: Engine, delivery_id: int) -> dict:
    with engine.connect() as connection:
        return dict(connection.execute(select(deliveries).where(
            deliveries.c.id == delivery_id)).one()._mapping)


def test_revive_moves_only_dead_rows_with_a_fresh_window(engine: Engine) -> None:
    dead, delivered = delivery(engine, outbox.DEAD), delivery(engine, outbox.DELIVERED)
    now = datetime.now(UTC).replace(microsecond=0)
    with write_transaction(engine) as connection:
        assert outbox.revive(connection, [dead, delivered], now=now) == 1
    revived = row(engine, dead)
    assert revived["state"] == outbox.PENDING
    assert (revived["first_attempt_at"], revived["lease_expires_at"]) == (None, None)
    assert revived["next_attempt_at"].replace(tzinfo=UTC) == now
    assert row(engine, delivered)["state"] == outbox.DELIVERED


def test_the_admin_retry_and_the_console_retry_revive_alike(engine: Engine) -> None:
    one, many = delivery(engine, outbox.DEAD), delivery(engine, outbox.DEAD)
    before = datetime.now(UTC) - timedelta(seconds=1)
    retry_dead(engine, one)
    assert data.retry_dead_matching(engine, {"destination": "cio"}) == 1
    for delivery_id in (one, many):
        revived = row(engine, delivery_id)
        assert revived["state"] == outbox.PENDING and revived["first_attempt_at"] is None
        assert revived["next_attempt_at"].replace(tzinfo=UTC) >= before
