"""The delivery row (docs/design.md §2.1–§2.3, §7): its states and allowed moves, the per-user key,
the inserts that queue deliveries, and the one guarded `transition()` every state change
goes through (claiming, renewing a lease, recording a result, retrying a dead delivery).

    pending ──▶ delivering ──▶ delivered | retrying | dead | skipped
    retrying ──▶ delivering            dead ──▶ pending   (explicit retry or replay only)
    delivering ──▶ delivering          (an expired lease reclaimed, or a lease renewed)

Ingest queues rows through `queue_routed`, replay through `queue`, a regulation's deletion
through `queue_deletion`; the worker moves them with `transition`. Nothing else writes the
`state` column, so the rules above hold by construction.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Insert,
    String,
    bindparam,
    func,
    insert,
    literal,
    select,
    true,
    union_all,
    update,
)

from gateway.store.models import deliveries, events
from gateway.store.prepared import Prepared

PENDING = "pending"
DELIVERING = "delivering"
DELIVERED = "delivered"
RETRYING = "retrying"
DEAD = "dead"
SKIPPED = "skipped"

STATES = (PENDING, DELIVERING, DELIVERED, RETRYING, DEAD, SKIPPED)
# Not finished: they hold back later deliveries of the same (destination, user key).
UNFINISHED = (PENDING, DELIVERING, RETRYING)
TERMINAL = (DELIVERED, DEAD, SKIPPED)
# What a claim may take: due pending/retrying rows, and delivering rows whose lease expired.
CLAIMABLE = (PENDING, RETRYING, DELIVERING)

ALLOWED: dict[str, frozenset[str]] = {
    PENDING: frozenset({DELIVERING}),
    DELIVERING: frozenset({DELIVERED, RETRYING, DEAD, SKIPPED, DELIVERING}),
    RETRYING: frozenset({DELIVERING}),
    DEAD: frozenset({PENDING}),
    DELIVERED: frozenset(),
    SKIPPED: frozenset(),
}


class IllegalTransition(ValueError):
    """A state change the machine does not allow: a bug, never a data condition."""


def check_transition(current: str, target: str) -> str:
    """Return `target` if the move is allowed, else raise IllegalTransition."""
    if target not in ALLOWED.get(current, frozenset()):
        raise IllegalTransition(f"delivery cannot move from {current!r} to {target!r}")
    return target


def user_key_of(user_id: object, anonymous_id: object) -> str:
    """The per-user key of the barrier (§2.3): userId, else anonymousId, else '' (one queue for
    every row with neither; no email fallback). The one rule: `user_key()` is it in SQL for the
    inserts, and sampling and a regulation's deletion call this."""
    for value in (user_id, anonymous_id):
        if value not in (None, ""):
            return str(value)
    return ""


def user_key() -> Any:
    """`user_key_of` in SQL, over the events row (stored ids are never '': normalise makes a
    blank id absent). Used by every insert that copies events."""
    return func.coalesce(events.c.user_id, events.c.anonymous_id, literal(""))


def queue(connection: Connection, destination: str, event_ids: Sequence[int],
          at: datetime | None = None, replay_id: str | None = None) -> int:
    """Replay's insert: one pending delivery per event to `destination`, due `at` (None: the
    event's received_at); returns how many."""
    if not event_ids:
        return 0
    params = {"event_ids": list(event_ids), "at": at, "replay_id": replay_id}
    if replay_id is None:
        connection.execute(_queue_statement((destination,)), params)
        return len(event_ids)
    return len(connection.execute(_queue_returning((destination,)), params).all())


def queue_routed(connection: Connection, destinations: tuple[str, ...],
                 event_ids: Sequence[int]) -> int:
    """Ingest's insert: one pending delivery per event for each of `destinations`, in ONE
    statement however many destinations there are (events routed alike share it). Returns how
    many rows were queued."""
    if not event_ids or not destinations:
        return 0
    connection.execute(_queue_statement(destinations),
                       {"event_ids": list(event_ids), "at": None, "replay_id": None})
    return len(event_ids) * len(destinations)


@functools.lru_cache(maxsize=256)
def _queue_statement(destinations: tuple[str, ...]) -> Insert:
    """One `pending` row per event and destination, copied from the events rows in the
    database (INSERT … SELECT): no per-row values cross from Python, and the events × the
    destinations are one statement. Rows are made event by event, in id order, so delivery ids
    follow arrival order for every destination (per-user order, §2.3). Executed with the
    expanding `event_ids`, `at` (None: the event's received_at, as ingest wants; replay passes
    now) and `replay_id` (None outside a replay). Built once per set of destinations."""
    names = union_all(*(select(literal(name, String).label("name"), literal(n).label("ord"))
                        for n, name in enumerate(destinations))).subquery("routed")
    at = func.coalesce(bindparam("at", type_=deliveries.c.next_attempt_at.type),
                       events.c.received_at)
    rows = select(
        events.c.id, names.c.name, user_key(), literal(PENDING), literal(0), at, at, at,
        bindparam("replay_id", type_=String),
    ).select_from(events.join(names, true())).where(
        events.c.id.in_(bindparam("event_ids", expanding=True))).order_by(events.c.id, names.c.ord)
    return insert(deliveries).from_select(
        ["event_id", "destination", "user_key", "state", "attempts", "next_attempt_at",
         "created_at", "updated_at", "replay_id"], rows)


@functools.lru_cache(maxsize=256)
def _queue_returning(destinations: tuple[str, ...]) -> Insert:
    return _queue_statement(destinations).returning(deliveries.c.id)


def queue_deletion(connection: Connection, regulation_id: int, destinations: Sequence[str],
                   user_key: str, not_before: datetime | None = None) -> None:
    """A regulation's deletion (gateway/regulations): one pending delivery per destination that
    carries the regulation instead of an event. Its user key is the profile's, so it waits
    behind that person's earlier deliveries like any event would; `not_before` holds it back
    behind sends in flight whose rows the deletion removed."""
    now = datetime.now(UTC)
    due = max(now, not_before) if not_before is not None else now
    connection.execute(insert(deliveries), [
        {"event_id": None, "regulation_id": regulation_id, "destination": name,
         "user_key": user_key, "state": PENDING, "attempts": 0, "next_attempt_at": due,
         "created_at": now, "updated_at": now} for name in destinations])


def annotate(connection: Connection, delivery_id: int, **values: Any) -> None:
    """Change what a delivery row says about itself (its user key, its last error), never its
    state: a closed regulation erases the keys its deletion deliveries carried."""
    if "state" in values:
        raise IllegalTransition("annotate never moves a delivery: use transition()")
    connection.execute(update(deliveries).where(deliveries.c.id == delivery_id).values(**values))


def transition(connection: Connection, sources: str | Iterable[str], target: str,
               ids: Sequence[int], *, lease: datetime | None = None,
               **values: Any) -> int:
    """Move the deliveries `ids` from one of `sources` to `target`, setting `values` too.

    Guarded in SQL: a row moves only if it is (still) in one of `sources` and, when `lease` is
    given, still holds that lease (another worker that took it over keeps it). Every move is
    checked against ALLOWED first. Returns how many rows moved."""
    allowed = _checked(sources, target)
    if not ids:
        return 0
    where = [deliveries.c.id.in_(list(ids)), deliveries.c.state.in_(allowed)]
    if lease is not None:
        where.append(deliveries.c.lease_expires_at == lease)
    result = connection.execute(update(deliveries).where(*where).values(state=target, **values))
    return result.rowcount


def revive(connection: Connection, ids: Sequence[int], now: datetime | None = None) -> int:
    """Move dead deliveries back to pending with a fresh retry window (an explicit retry: one
    from the admin API, or every dead one a console filter matches). Rows no longer dead stay
    as they are; returns how many moved."""
    now = now or datetime.now(UTC)
    return transition(connection, DEAD, PENDING, ids, next_attempt_at=now,
                      first_attempt_at=None, lease_expires_at=None, updated_at=now)


def transition_each(connection: Connection, source: str, target: str,
                    rows: Sequence[Mapping[str, Any]], memo: dict[Any, Any] | None = None
                    ) -> int:
    """`transition` for many rows with values of their own (one executemany): each row maps
    `b_id`, `b_lease` (the guard) and `b_<column>` for each column to set, the same columns in
    every row (bind names cannot be the columns' own). Returns how many rows moved. `memo`:
    see `Prepared.execute_many`."""
    _checked(source, target)
    if not rows:
        return 0
    columns = [key[2:] for key in rows[0] if key not in ("b_id", "b_lease")]
    return _each_statement(source, target, tuple(columns)).execute_many(connection, rows, memo)


_EACH: dict[tuple[str, str, tuple[str, ...]], Prepared] = {}


def _each_statement(source: str, target: str, columns: tuple[str, ...]) -> Prepared:
    """Built once per shape and run through the driver (gateway/store/prepared.py says why):
    recording results builds no statement and no parameter set per delivery."""
    key = (source, target, columns)
    statement = _EACH.get(key)
    if statement is None:
        statement = _EACH[key] = Prepared(update(deliveries).where(
            deliveries.c.id == bindparam("b_id"), deliveries.c.state == source,
            deliveries.c.lease_expires_at == bindparam("b_lease"),
        ).values(state=target, **{c: bindparam(f"b_{c}") for c in columns}))
    return statement


def _checked(sources: str | Iterable[str], target: str) -> tuple[str, ...]:
    allowed = (sources,) if isinstance(sources, str) else tuple(sources)
    for source in allowed:
        check_transition(source, target)
    return allowed
