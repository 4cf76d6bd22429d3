"""A claim reads only its own destination's due rows (migration 0008), on both databases: one
destination's backlog (a hanging destination, a removed one) must not make the others' claims
slower, and a claim must not grow with the whole queue."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from sqlalchemy import event, insert, select, text

from gateway.delivery.claim import OTHER, claim, orphans
from gateway.store.db import make_engine, write_transaction
from gateway.store.models import deliveries

INDEX_COLUMNS = "destination_state_next_attempt_at"  # in every week's index name too


def _rows(destination: str, count: int, state: str = "pending", start: int = 0) -> list[dict]:
    """Deliveries that carry no event (as a regulation's deletion does): no events rows."""
    at = datetime.now(UTC) - timedelta(minutes=1)
    return [{"event_id": None, "regulation_id": start + n, "destination": destination,
             "user_key": f"{destination}-user-{n}", "state": state, "attempts": 0,
             "next_attempt_at": at, "created_at": at, "updated_at": at}
            for n in range(count)]


def _plan(engine, statement: str, parameters) -> str:
    """The plan of the claim statement as the driver received it."""
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            rows = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement,
                                              parameters).all()
            return "\n".join(str(row[-1]) for row in rows)
        rows = connection.exec_driver_sql("EXPLAIN " + statement, parameters).all()
        return "\n".join(row[0] for row in rows)


def test_a_claim_reads_its_destination_through_the_claim_index(database_url: str) -> None:
    engine = make_engine(database_url)
    with write_transaction(engine) as connection:
        connection.execute(insert(deliveries), _rows("stuck", 20_000))
        connection.execute(insert(deliveries), _rows("stuck", 5_000, "retrying", 50_000))
        connection.execute(insert(deliveries), _rows("stuck", 2_000, "delivering", 60_000))
        connection.execute(insert(deliveries), _rows("dest", 50, start=100_000))
    if engine.dialect.name == "postgresql":  # what the worker does after a slow claim
        with engine.connect() as connection:
            connection.execute(text("ANALYZE deliveries"))
            connection.commit()
    seen: list[tuple[str, object]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def capture(conn, cursor, statement, parameters, context, executemany) -> None:
        if "due_pending" in statement:
            seen.append((statement, parameters))

    claimed = claim(engine, {"dest": 100}, lease_seconds=60)
    assert {c.destination for c in claimed} == {"dest"} and len(claimed) == 50
    event.remove(engine, "before_cursor_execute", capture)
    (statement, parameters), = seen
    plan = _plan(engine, statement, parameters)
    # each of the three kinds (expired leases, due retries, due new ones) seeks the index
    # (PostgreSQL, from its statistics, may also read the barrier's rows through it)
    # (partitioned on PostgreSQL: each week's own index, named after the week; the weeks with
    # no rows are scanned for nothing, cost 0)
    assert plan.count(INDEX_COLUMNS) >= 3, plan
    assert not re.search(r"(ix_deliveries|_p\d{8}(_\d{6})?)_state_id", plan), plan
    assert "SCAN deliveries" not in plan, plan
    assert all("cost=0.00..0.00 " in line for line in plan.splitlines()
               if "Seq Scan on deliveries" in line), plan
    engine.dispose()


def test_orphans_are_unconfigured_destinations_with_unfinished_rows(database_url: str) -> None:
    engine = make_engine(database_url)
    with write_transaction(engine) as connection:
        connection.execute(insert(deliveries), _rows("dest", 3))
        connection.execute(insert(deliveries), _rows("removed", 2, start=10))
        connection.execute(insert(deliveries), _rows("removed-done", 2, "delivered", start=20))
        connection.execute(insert(deliveries), _rows("removed-retrying", 1, "retrying", start=30))
    assert orphans(engine, ["dest"]) == ["removed", "removed-retrying"]
    assert orphans(engine, ["dest", "removed", "removed-retrying"]) == []
    # claimed under OTHER, at most the room given, oldest first
    claimed = claim(engine, {OTHER: 2}, 60, others=["removed", "removed-retrying"])
    assert len(claimed) == 2
    with engine.connect() as connection:
        left = connection.execute(select(deliveries.c.destination).where(
            deliveries.c.state.in_(("pending", "retrying")),
            deliveries.c.destination.like("removed%"))).scalars().all()
    assert len(left) == 1
    engine.dispose()
