"""gateway/store/prepared.py: statements run through the driver must store exactly what SQLAlchemy's
Core would (the lease guard compares stored datetimes as SQLite text), on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from gateway.store.db import make_engine, write_transaction
from gateway.store.models import UTCDateTime, deliveries, delivery_attempts
from gateway.store.prepared import Prepared, utc_datetime_converter

MOMENTS = [
    datetime(2026, 12, 1, 20, 0, 0, tzinfo=UTC),  # no microseconds: isoformat would drop them
    datetime(2026, 12, 1, 20, 0, 0, 1, tzinfo=UTC),
    datetime(1999, 1, 2, 3, 4, 5, 999999, tzinfo=UTC),
    datetime(2026, 6, 30, 23, 59, 59, 500000, tzinfo=timezone(timedelta(hours=-7))),
    datetime(2026, 3, 29, 1, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))),
]


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.psycopg.dialect()],
                         ids=["sqlite", "postgresql"])
@pytest.mark.parametrize("moment", MOMENTS)
def test_the_fast_datetime_conversion_equals_sqlalchemys(dialect, moment) -> None:
    processor = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert utc_datetime_converter(dialect)(moment) == processor(moment)


def test_a_naive_datetime_is_refused_as_core_refuses_it() -> None:
    with pytest.raises(ValueError, match="naive"):
        utc_datetime_converter(sqlite.dialect())(datetime(2026, 1, 1))


def _row(event_id: int, at: datetime) -> dict:
    """A delivery of no event (as a regulation's deletion is): no events row needed."""
    return {"event_id": None, "regulation_id": event_id, "destination": "d",
            "user_key": f"u{event_id}", "state": "delivering", "attempts": 0,
            "next_attempt_at": at, "created_at": at, "updated_at": at, "lease_expires_at": at}


def test_a_prepared_update_moves_only_the_rows_its_guard_holds(database_url: str) -> None:
    engine = make_engine(database_url)
    lease = datetime(2026, 12, 1, 20, 0, 0, tzinfo=UTC)
    other = lease + timedelta(microseconds=1)
    with write_transaction(engine) as connection:
        connection.execute(insert(deliveries), [_row(1, lease), _row(2, lease), _row(3, other)])
        ids = list(connection.execute(select(deliveries.c.id).order_by(deliveries.c.id))
                   .scalars())
    statement = Prepared(update(deliveries).where(
        deliveries.c.id == bindparam("b_id"), deliveries.c.state == "delivering",
        deliveries.c.lease_expires_at == bindparam("b_lease"),
    ).values(state="delivered", updated_at=bindparam("b_updated_at")))
    done = datetime.now(UTC)
    with write_transaction(engine) as connection:
        moved = statement.execute_many(connection, [
            {"b_id": i, "b_lease": lease, "b_updated_at": done} for i in ids])
    assert moved == 2  # the third row's lease differs by one microsecond
    with engine.connect() as connection:
        rows = {r.id: r for r in connection.execute(select(deliveries))}
    assert [rows[i].state for i in ids] == ["delivered", "delivered", "delivering"]
    assert rows[ids[0]].updated_at == done  # read back through Core: the same instant
    engine.dispose()


def test_a_prepared_insert_stores_what_core_reads_back(database_url: str) -> None:
    engine = make_engine(database_url)
    started = datetime(2026, 12, 1, 20, 0, 0, 250, tzinfo=UTC)
    with write_transaction(engine) as connection:
        connection.execute(insert(deliveries), [_row(1, started)])
        delivery = connection.execute(select(deliveries.c.id)).scalar_one()
        columns = ("delivery_id", "number", "started_at", "duration_ms", "status",
                   "error_class", "excerpt")
        Prepared(insert(delivery_attempts).values({c: bindparam(c) for c in columns})) \
            .execute_many(connection, [
                {"delivery_id": delivery, "number": n, "started_at": started, "duration_ms": 7,
                 "status": None if n == 2 else 200, "error_class": None, "excerpt": "ok ✓"}
                for n in (1, 2)])
    with engine.connect() as connection:
        rows = connection.execute(select(delivery_attempts).order_by(
            delivery_attempts.c.number)).all()
    assert [(r.number, r.started_at, r.status, r.excerpt) for r in rows] == [
        (1, started, 200, "ok ✓"), (2, started, None, "ok ✓")]
    engine.dispose()
