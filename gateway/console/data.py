"""What the console reads and changes beyond gateway/queries.py and gateway/replay.py: the live
feed's "newer than" poll, capped counts, the last hour per destination, and retrying every dead
delivery a filter matches. Every query walks an index from the newest row and stops at a bound,
so a page costs the same with ten rows or ten million.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Select, func, or_, select

from adapters.status import is_success
from gateway import metrics, queries
from gateway.messages import parse_time
from gateway.store import outbox
from gateway.store.db import write_transaction
from gateway.store.models import clip_indexed, deliveries, delivery_attempts, events

COUNT_CAP = 2_000  # counts above this show as "2,000+"…
BULK_CAP = 1_000  # …and for the states that pile up by the million (delivered, skipped) this
FEED_BATCH = 200  # newest events sent per poll
CHART_BUCKETS = 12  # 5-minute buckets over the last hour
CHART_ROWS = 2_000  # newest attempts read for the chart (a busy hour shows its latest part)
CHART_DEAD_ROWS = 1_000  # newest dead deliveries read for it
RETRY_CAP = 10_000  # dead deliveries one "retry all matching" moves at most
FEED_FILTERS = ("source", "type", "event", "user")


@dataclass(frozen=True)
class Count:
    value: int
    capped: bool

    def __str__(self) -> str:
        return f"{self.value:,}+" if self.capped else f"{self.value:,}"


def capped_count(connection: Connection, query: Select, cap: int = COUNT_CAP) -> Count:
    """count(*) of a one-column query that reads at most cap+1 rows."""
    inner = query.limit(cap + 1).subquery()
    n = connection.execute(select(func.count()).select_from(inner)).scalar_one()
    return Count(min(n, cap), n > cap)


# the live feed ---------------------------------------------------------------------------------

def feed_filters(args: Mapping[str, str]) -> dict[str, str]:
    return {k: args[k].strip()[:500] for k in FEED_FILTERS if args.get(k, "").strip()}


def newest_event_id(connection: Connection) -> int:
    return connection.execute(select(func.max(events.c.id))).scalar_one() or 0


def events_after(connection: Connection, after: int, filters: Mapping[str, str],
                 limit: int = FEED_BATCH) -> list[dict[str, Any]]:
    """Events with id > after that match, oldest first (the page puts each on top)."""
    query = _feed_query(filters).where(events.c.id > after).order_by(events.c.id.desc())
    rows = connection.execute(query.limit(limit)).all()
    return [queries.event_summary(r) for r in reversed(rows)]


def events_before(connection: Connection, before: int | None, filters: Mapping[str, str],
                  limit: int = 50) -> list[dict[str, Any]]:
    """A page of the feed, newest first, below id `before` (keyset; None = the newest)."""
    query = _feed_query(filters)
    if before:
        query = query.where(events.c.id < before)
    rows = connection.execute(query.order_by(events.c.id.desc()).limit(limit)).all()
    return [queries.event_summary(r) for r in rows]


def _feed_query(filters: Mapping[str, str]) -> Select:
    query = select(events.c.id, events.c.source, events.c.message_id, events.c.type,
                   events.c.event, events.c.user_id, events.c.anonymous_id, events.c.timestamp,
                   events.c.received_at)
    for column in ("source", "type"):
        if filters.get(column):
            query = query.where(events.c[column] == filters[column])
    if filters.get("event"):
        query = query.where(events.c.event == clip_indexed(filters["event"]))
    if filters.get("user"):
        user = clip_indexed(filters["user"])
        query = query.where(or_(events.c.user_id == user, events.c.anonymous_id == user))
    return query


# the deliveries desk ---------------------------------------------------------------------------

def state_counts(connection: Connection, destinations: list[str]) -> dict[str, dict[str, Count]]:
    """Per destination, per state, a count. One query per state reads at most `cap` of its
    newest rows down the (state, id) index and groups them; when a state has more rows than
    that, every count of it is a lower bound ("1,000+"). BULK_CAP for the states that pile up
    by the million (delivered, skipped), COUNT_CAP for the ones an operator acts on."""
    out: dict[str, dict[str, Count]] = {name: {} for name in destinations}
    for state in outbox.STATES:
        cap = BULK_CAP if state in (outbox.DELIVERED, outbox.SKIPPED) else COUNT_CAP
        newest = select(deliveries.c.destination).where(deliveries.c.state == state) \
            .order_by(deliveries.c.id.desc()).limit(cap + 1).subquery()
        found = dict(connection.execute(select(newest.c.destination, func.count())
                                        .group_by(newest.c.destination)).all())
        capped = sum(found.values()) > cap
        for name in destinations:
            out[name][state] = Count(found.get(name, 0), capped and name in found)
    return out


def dead_selection(filters: Mapping[str, str]) -> Select:
    """Dead deliveries matching the desk's filter (destination, since, until)."""
    query = select(deliveries.c.id).where(deliveries.c.state == outbox.DEAD)
    if filters.get("destination"):
        query = query.where(deliveries.c.destination == filters["destination"])
    for name, compare in (("since", deliveries.c.updated_at.__ge__),
                          ("until", deliveries.c.updated_at.__lt__)):
        if filters.get(name):
            when = parse_time(filters[name])
            if when is None:
                raise queries.QueryError(f"{name}: not an ISO-8601 time")
            query = query.where(compare(when))
    return query


def retry_dead_matching(engine: Engine, filters: Mapping[str, str]) -> int:
    """Move up to RETRY_CAP dead deliveries matching the filter back to pending (`outbox.revive`,
    as replay.retry_dead does for one), in chunks; returns how many moved."""
    with engine.connect() as connection:
        ids = [r.id for r in connection.execute(
            dead_selection(filters).order_by(deliveries.c.id).limit(RETRY_CAP))]
    moved = 0
    for start in range(0, len(ids), 1000):
        with write_transaction(engine) as connection:  # the guarded move: still dead only
            moved += outbox.revive(connection, ids[start:start + 1000])
    return moved


# destinations overview -------------------------------------------------------------------------

def queue_gauges(engine: Engine) -> dict[str, tuple[float, float]]:
    """Per destination (queue depth, oldest unfinished age in seconds): the same numbers as
    /metrics' gauges, read through its collector."""
    depth: dict[str, float] = {}
    age: dict[str, float] = {}
    for family in metrics.QueueCollector(engine).collect():
        target = depth if family.name == "gateway_delivery_queue_depth" else age
        for sample in family.samples:
            target[sample.labels["destination"]] = sample.value
    return {name: (depth[name], age.get(name, 0.0)) for name in depth}


@dataclass
class Chart:
    series: dict[str, dict[str, list[int]]]  # destination → kind → 5-minute buckets
    since: datetime  # what the buckets cover: the hour, or less when the row caps cut it


def last_hour(connection: Connection, now: datetime | None = None) -> Chart:
    """Per destination, 5-minute buckets over the last hour of delivered and failed attempts
    and of deliveries that went dead, from the newest CHART_ROWS attempts and CHART_DEAD_ROWS
    dead deliveries (walked down the primary key and the state index: bounded at any size)."""
    now = now or datetime.now(UTC)
    start = now - timedelta(hours=1)
    width = 3600 / CHART_BUCKETS
    out: dict[str, dict[str, list[int]]] = {}
    since = start

    def bucket(name: str, kind: str, when: datetime) -> None:
        series = out.setdefault(name, {k: [0] * CHART_BUCKETS
                                       for k in ("delivered", "failed", "dead")})
        index = min(CHART_BUCKETS - 1, int((when - start).total_seconds() // width))
        series[kind][index] += 1

    recent = select(delivery_attempts.c.delivery_id, delivery_attempts.c.started_at,
                    delivery_attempts.c.status).order_by(delivery_attempts.c.id.desc()) \
        .limit(CHART_ROWS).subquery()
    rows = connection.execute(select(deliveries.c.destination, recent.c.started_at,
                                     recent.c.status)
                              .join(deliveries, deliveries.c.id == recent.c.delivery_id)).all()
    if len(rows) >= CHART_ROWS:
        since = max(since, min(r.started_at for r in rows))
    for row in rows:
        if row.started_at >= since:
            bucket(row.destination, "delivered" if is_success(row.status) else "failed",
                   row.started_at)
    for row in connection.execute(
            select(deliveries.c.destination, deliveries.c.updated_at)
            .where(deliveries.c.state == outbox.DEAD).order_by(deliveries.c.id.desc())
            .limit(CHART_DEAD_ROWS)):
        if row.updated_at >= since:
            bucket(row.destination, "dead", row.updated_at)
    return Chart(out, since)


def circuit_words(destinations: Iterable[str]) -> dict[str, str | None]:
    """Per destination, its circuit/rate-limit state in words ("open, 3 tokens"), as the
    delivery worker last published it (read once per page); None before it has."""
    lanes = metrics.destination_status()
    return {name: _lane_words(lanes.get(name)) for name in destinations}


def _lane_words(lane: dict[str, float] | None) -> str | None:
    """The delivery worker's own per-destination state (lanes.py), as it publishes it to the
    gauges any process can read (metrics.destination_status); None before it has published."""
    if not lane or "circuit_open" not in lane:
        return None
    words = metrics.CIRCUIT_STATE.get(lane["circuit_open"], "open")
    if "rate_tokens" in lane:
        words += f", {lane['rate_tokens']:g} tokens"
    return words
