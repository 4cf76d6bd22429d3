"""Claiming: take due deliveries under a lease, per destination, in one transaction.

A claim takes, per (destination, user key), only the oldest unfinished delivery (the barrier of
docs/design.md §2.3) and moves it to `delivering` through `outbox.transition`. A lease that
would run out during a long send is renewed (`renew`), so a slow answer is never sent twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Integer, bindparam, exists, func, select, text, union_all
from sqlalchemy.orm import aliased

from gateway.store import outbox
from gateway.store.db import write_transaction
from gateway.store.models import deliveries, events, regulation_subjects

OTHER = ""  # claim key for deliveries of destinations no longer configured


@dataclass(eq=False)
class Claimed:
    """One claimed delivery. `lease` changes only when the worker renews it (the loop thread
    renews and records, so it never races with itself)."""

    id: int
    destination: str
    state: str
    attempts: int
    first_attempt_at: datetime | None
    lease: datetime
    event: Mapping[str, Any] | None  # a regulation's deletion: the subject's keys (or None)
    regulation_id: int | None = None  # set: a user deletion, not an event (gateway.regulations)


def claim(engine: Engine, room: Mapping[str, int], lease_seconds: float,
          others: Sequence[str] = ()) -> list[Claimed]:
    """Claim due deliveries, at most `room[destination]` per destination, in one transaction;
    the key OTHER claims for `others`, destinations no longer configured (`orphans`)."""
    now = datetime.now(UTC)
    lease = now + timedelta(seconds=lease_seconds)
    rows: list[Any] = []
    with write_transaction(engine) as connection:
        for name, limit in room.items():
            for destination in (others if name == OTHER else (name,)):
                if limit <= 0:
                    break
                found = connection.execute(
                    _DUE, {"destination": destination, "now": now, "limit": limit}).all()
                found = sorted(found, key=_claim_order)[:limit]
                rows += found
                limit -= len(found)
        if not rows:
            return []
        moved = outbox.transition(connection, outbox.CLAIMABLE, outbox.DELIVERING,
                                  [r.id for r in rows], lease_expires_at=lease, updated_at=now)
        assert moved == len(rows), "claimed rows are locked: each must move"
        # a regulation's deletion delivery carries no event: its subject's keys instead
        regulation_ids = {r.regulation_id for r in rows if r.regulation_id is not None}
        subjects = dict(connection.execute(
            select(regulation_subjects.c.regulation_id, regulation_subjects.c.payload)
            .where(regulation_subjects.c.regulation_id.in_(regulation_ids))
        ).all()) if regulation_ids else {}
    return [Claimed(r.id, r.destination, r.state, r.attempts, r.first_attempt_at, lease,
                    r.payload if r.regulation_id is None else subjects.get(r.regulation_id),
                    r.regulation_id) for r in rows]


def renew(engine: Engine, claimed: Sequence[Claimed], lease_seconds: float) -> int:
    """Extend the leases of deliveries still being sent; a lease another worker took over is
    left alone (its result will then be dropped when recorded). Returns how many moved."""
    if not claimed:
        return 0
    now = datetime.now(UTC)
    lease = now + timedelta(seconds=lease_seconds)
    with write_transaction(engine) as connection:
        outbox.transition_each(connection, outbox.DELIVERING, outbox.DELIVERING, [
            {"b_id": c.id, "b_lease": c.lease, "b_lease_expires_at": lease, "b_updated_at": now}
            for c in claimed])
        held = {row.id for row in connection.execute(
            select(deliveries.c.id).where(deliveries.c.id.in_([c.id for c in claimed]),
                                          deliveries.c.lease_expires_at == lease))}
    for c in claimed:
        if c.id in held:
            c.lease = lease
    return len(held)


def refresh_statistics(engine: Engine) -> bool:
    """PostgreSQL only: ANALYZE the deliveries table. Until autovacuum first analyzes a young
    table (up to a minute after it starts filling) the planner has no statistics and may read
    the per-user barrier through the (destination, id) index, every earlier row of the
    destination for each candidate (measured: 0.8-1.3 s per claim at 2,000 rows instead of
    40 ms). The worker calls this when a claim was slow, at most once a minute."""
    if engine.dialect.name != "postgresql":
        return False
    with engine.connect() as connection:
        connection.execute(text("ANALYZE deliveries"))
        connection.commit()
    return True


def orphans(engine: Engine, configured: Sequence[str]) -> list[str]:
    """Destinations that have unfinished deliveries but are no longer configured (their rows
    are claimed under OTHER and finished as dead, never left pending). Read through the
    destination index one name at a time (a loose index scan): the cost grows with the number
    of destinations ever used, not with the number of rows."""
    found = []
    with engine.connect() as connection:
        name = connection.execute(_FIRST_DESTINATION).scalar()
        while name is not None:
            if name not in configured and connection.execute(
                    _HAS_UNFINISHED, {"destination": name}).first() is not None:
                found.append(name)
            name = connection.execute(_NEXT_DESTINATION, {"after": name}).scalar()
    return found


_FIRST_DESTINATION = select(func.min(deliveries.c.destination))
_NEXT_DESTINATION = select(func.min(deliveries.c.destination)).where(
    deliveries.c.destination > bindparam("after"))
_HAS_UNFINISHED = select(deliveries.c.id).where(
    deliveries.c.destination == bindparam("destination"),
    deliveries.c.state.in_(outbox.UNFINISHED)).limit(1)

# The order rows of one claim are taken in: expired leases (work a dead worker left), then
# retries that are due, then new deliveries, each oldest first.
_KINDS = {outbox.DELIVERING: 0, outbox.RETRYING: 1, outbox.PENDING: 2}


def _claim_order(row: Any) -> tuple[int, int]:
    """Kind, then id (within a kind, ids follow due times closely enough for fairness; order
    per user is the barrier's, not this one's)."""
    return _KINDS[row.state], row.id


def _due_statement() -> Any:
    """The due deliveries of one destination, each the oldest unfinished delivery of its user
    key (the barrier of docs/design.md §2.3): up to `limit` of each kind (expired leases, due
    retries, due new ones). Each kind is read through (destination, state, next_attempt_at),
    oldest first, stopping at `limit`; so a claim costs the same whatever other destinations
    hold, and whatever this one has already finished. Built once, bound per claim."""
    earlier = aliased(deliveries)
    blocked = exists().where(
        earlier.c.destination == deliveries.c.destination,
        earlier.c.user_key == deliveries.c.user_key,
        # `+ 0`: no index serves `id <` alone, so the barrier index (destination, user_key,
        # state, id) is the one PostgreSQL uses, even on young statistics; with a bare
        # `id <` it took (destination, id) and read every earlier row of the destination
        # for each candidate (measured: 1.6 s per claim at 6,000 due rows, now a few ms)
        earlier.c.id + 0 < deliveries.c.id,
        earlier.c.state.in_(outbox.UNFINISHED))
    # the event's payload comes with its row (an outer join: a regulation's deletion has none)
    columns = (deliveries.c.id, deliveries.c.destination, deliveries.c.state,
               deliveries.c.attempts, deliveries.c.first_attempt_at, deliveries.c.regulation_id,
               events.c.payload)
    rows = deliveries.outerjoin(events, events.c.id == deliveries.c.event_id)
    mine = deliveries.c.destination == bindparam("destination")
    now = bindparam("now", type_=deliveries.c.next_attempt_at.type)
    limit = bindparam("limit", type_=Integer)
    kinds = [
        (outbox.DELIVERING, deliveries.c.lease_expires_at < now),
        (outbox.RETRYING, deliveries.c.next_attempt_at <= now),
        (outbox.PENDING, deliveries.c.next_attempt_at <= now),
    ]
    parts = [select(*columns).select_from(rows)
             .where(mine, deliveries.c.state == state, due, ~blocked)
             .order_by(deliveries.c.next_attempt_at).limit(limit)
             .with_for_update(of=deliveries, skip_locked=True).subquery(f"due_{state}")
             for state, due in kinds]
    return union_all(*(select(*part.c) for part in parts))


_DUE = _due_statement()
