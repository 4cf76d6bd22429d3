"""Weekly partitions on PostgreSQL (migration 0014, gateway/store/partitions.py): retention drops
whole weeks and keeps what must stay, deduplication holds across weeks and across the
conversion, a writer makes a missing week itself, and an existing database converts in place."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from alembic import command
from sqlalchemy import Engine, func, insert, select, text

from gateway import create_app
from gateway.config import RetentionSettings, from_mapping
from gateway.retention import Pruner
from gateway.retention_partitions import PartitionDropper
from gateway.store import partitions
from gateway.store.db import alembic_config, make_engine
from gateway.store.models import deliveries, delivery_attempts, events, message_ids
from tests.conftest import WRITE_KEY, base_config, pg_schema
from tests.helpers import basic

pytestmark = pytest.mark.postgres
NOW = datetime.now(UTC)


def ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


@pytest.fixture
def url() -> Iterator[str]:
    with pg_schema() as schema_url:
        yield schema_url


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    engine = make_engine(url)
    yield engine
    engine.dispose()


def add_event(engine: Engine, days: float, state: str | None = "delivered",
              key: str | None = None) -> int:
    """An event received `days` ago with one delivery (and attempt) made then, as ingest
    and the worker write them (its week is made first, as a writer would)."""
    partitions.ensure(engine, ago(days), ago(days))
    key = key or f"m-{days}-{state}-{NOW.timestamp()}"
    with engine.begin() as c:
        event_id = c.execute(insert(events).values(
            source="web", message_id=key, type="track", event="E", user_id="u",
            timestamp=ago(days), received_at=ago(days),
            payload=orjson.dumps({"type": "track"}))).inserted_primary_key[0]
        c.execute(insert(message_ids).values(source="web", message_id=key,
                                             received_at=ago(days)))
        if state is not None:
            delivery_id = c.execute(insert(deliveries).values(
                event_id=event_id, destination="cio", user_key="u", state=state, attempts=1,
                next_attempt_at=ago(days), created_at=ago(days),
                updated_at=ago(days))).inserted_primary_key[0]
            c.execute(insert(delivery_attempts).values(
                delivery_id=delivery_id, number=1, started_at=ago(days), duration_ms=3))
    return event_id


def names(engine: Engine, table: str) -> set[str]:
    with engine.connect() as c:
        return {p.name for p in partitions.partitions(c, table)}


def week_name(table: str, days: float) -> str:
    return f"{table}_p{partitions.week_of(ago(days))[0]:%Y%m%d}"


def count(engine: Engine, table) -> int:
    with engine.connect() as c:
        return c.execute(select(func.count()).select_from(table)).scalar()


def test_a_new_database_is_partitioned_by_week(engine: Engine) -> None:
    for table in partitions.PARTITIONED:
        weeks = sorted(names(engine, table))
        assert week_name(table, 0) in weeks and not any("legacy" in w for w in weeks), weeks


def test_expired_weeks_go_whole_and_what_must_stay_holds_its_week(engine: Engine) -> None:
    gone = [add_event(engine, 60), add_event(engine, 59, "dead")]
    held = add_event(engine, 45, "retrying")  # an unfinished delivery: its event stays…
    beside_held = add_event(engine, 45)  # …and the rest of its week goes by row
    young = [add_event(engine, 2), add_event(engine, 1, "pending")]
    old_weeks = {week_name(t, 60) for t in partitions.PARTITIONED}

    pruned = Pruner(engine, dataclasses.replace(RetentionSettings(), batch_size=10)).prune_all()

    assert not old_weeks & (names(engine, "events") | names(engine, "deliveries")
                            | names(engine, "delivery_attempts"))
    assert week_name("events", 45) in names(engine, "events")  # held back by `held`
    with engine.connect() as c:
        kept = {row.id for row in c.execute(select(events.c.id))}
        keys = {row.message_id for row in c.execute(select(message_ids.c.message_id))}
    assert kept == {held, *young}
    assert not kept & {*gone, beside_held}
    assert len(keys) == 4  # the gone weeks' keys went; the held week's stay with it
    assert any(name.startswith("partition events_p") for name in pruned.counts)
    assert pruned.counts.get("events") == 1  # beside_held, the row-level pass
    assert count(engine, deliveries) == 3  # held's, and the young ones


def test_a_week_that_must_stay_after_all_is_put_back(engine: Engine) -> None:
    """What committed between the check and the detach (a replay, a retry) shows in the check
    after it: the week goes back, rows and all."""
    event_id = add_event(engine, 40)
    with engine.connect() as c:
        week = next(p for p in partitions.partitions(c, "events") if p.lower and p.lower
                    <= ago(40) < p.upper)
    answers = iter([True, False])  # may go; then, detached, must stay
    dropper = PartitionDropper(engine, RetentionSettings())
    assert not dropper._drop(week, lambda connection, partition: next(answers))
    assert week.name in names(engine, "events")
    with engine.connect() as c:
        assert c.execute(select(events.c.id)).scalars().all() == [event_id]


def test_a_user_deletion_request_follows_its_own_rule(engine: Engine) -> None:
    """A regulation's delivery has no event to go with: dead_days (here: forever) holds it."""
    partitions.ensure(engine, ago(40), ago(40))
    with engine.begin() as c:
        c.execute(insert(deliveries).values(
            event_id=None, regulation_id=1, destination="cio", user_key="u", state="dead",
            attempts=3, next_attempt_at=ago(40), created_at=ago(40), updated_at=ago(40)))
    Pruner(engine, RetentionSettings(dead_days=0)).prune_all()
    assert count(engine, deliveries) == 1


def test_attempts_kept_forever_stay_while_their_delivery_does(engine: Engine) -> None:
    """attempts_days = 0: a dead delivery retried 20 days ago (dead_days 30) keeps the
    attempts of its first try, 40 days old."""
    event_id = add_event(engine, 40, state=None)
    with engine.begin() as c:
        delivery_id = c.execute(insert(deliveries).values(
            event_id=event_id, destination="cio", user_key="u", state="dead", attempts=2,
            next_attempt_at=ago(20), created_at=ago(40), updated_at=ago(20))
        ).inserted_primary_key[0]
        c.execute(insert(delivery_attempts).values(
            delivery_id=delivery_id, number=1, started_at=ago(40), duration_ms=3))
    settings = RetentionSettings(events_days=0, attempts_days=0, delivered_days=7, dead_days=30)
    Pruner(engine, settings).prune_all()
    assert count(engine, deliveries) == 1 and count(engine, delivery_attempts) == 1


def test_a_week_left_detached_is_put_back_or_dropped(engine: Engine) -> None:
    """A pass that died between the detach and the drop: the next one finishes it."""
    held = add_event(engine, 40, "retrying")
    with engine.connect() as c:
        week = next(p for p in partitions.partitions(c, "events") if p.lower and p.lower
                    <= ago(40) < p.upper)
    partitions.detach(engine, week)  # …and the process dies
    assert count(engine, events) == 0  # out of sight
    PartitionDropper(engine, RetentionSettings()).drop_expired(NOW)
    with engine.connect() as c:  # must stay (a retrying delivery): back in place
        assert c.execute(select(events.c.id)).scalars().all() == [held]
        assert not partitions.detached(c, "events")
        c.execute(text("UPDATE deliveries SET state = 'delivered'"))
        c.commit()
    partitions.detach(engine, week)
    PartitionDropper(engine, RetentionSettings()).drop_expired(NOW)
    with engine.connect() as c:  # may go: gone for good
        assert c.execute(text("SELECT to_regclass(:n)"), {"n": week.name}).scalar() is None


def test_a_replay_of_an_old_event_goes_with_it(engine: Engine) -> None:
    event_id = add_event(engine, 40)
    partitions.ensure(engine, ago(33), ago(33))
    with engine.begin() as c:  # replayed a week later: a delivery in a later week
        c.execute(insert(deliveries).values(
            event_id=event_id, destination="cio", user_key="u", state="delivered", attempts=1,
            next_attempt_at=ago(33), created_at=ago(33), updated_at=ago(33)))
    settings = RetentionSettings(delivered_days=0, dead_days=0, attempts_days=0)
    Pruner(engine, settings).prune_all()
    assert count(engine, events) == 0
    assert count(engine, deliveries) == 0  # not left pointing at nothing


def test_a_writer_makes_a_missing_week(url: str, engine: Engine) -> None:
    with engine.connect() as c:
        current = [p for p in partitions.partitions(c, "events")
                   if (p.lower or NOW) <= NOW < p.upper]
    for week in current:
        partitions.drop(engine, week)
    app = create_app(from_mapping(base_config(url)))
    try:
        answer = app.test_client().post("/v1/track", headers=basic(WRITE_KEY), json={
            "userId": "u1", "event": "E", "messageId": "m-1"})
        assert answer.status_code == 200, answer.get_data(as_text=True)
    finally:
        app.extensions["gateway.engine"].dispose()
    assert count(engine, events) == 1
    assert week_name("events", 0) in names(engine, "events")


def test_a_resend_in_a_later_week_is_a_duplicate(url: str, engine: Engine) -> None:
    add_event(engine, 10, key="old-message")
    app = create_app(from_mapping(base_config(url)))
    try:
        client = app.test_client()
        for _ in range(2):
            answer = client.post("/v1/batch", headers=basic(WRITE_KEY), json={"batch": [
                {"type": "track", "userId": "u1", "event": "E", "messageId": "old-message"},
                {"type": "track", "userId": "u1", "event": "E", "messageId": "new-message"}]})
            assert answer.status_code == 200
    finally:
        app.extensions["gateway.engine"].dispose()
    with engine.connect() as c:
        stored = sorted(row.message_id for row in c.execute(select(events.c.message_id)))
    assert stored == ["new-message", "old-message"]


def test_an_existing_database_converts_in_place() -> None:
    with pg_schema(migrated=False) as url:
        config = alembic_config(url)
        command.upgrade(config, "0013")
        engine = make_engine(url)
        try:
            with engine.begin() as c:  # what a node of the previous release wrote
                c.execute(text(
                    "INSERT INTO events (source, message_id, type, timestamp, received_at, "
                    "payload) SELECT 'web', 'old-' || i, 'track', now(), "
                    "now() - i * interval '1 day', '{}' FROM generate_series(1, 50) i"))
                c.execute(text(
                    "INSERT INTO deliveries (event_id, destination, user_key, state, attempts, "
                    "next_attempt_at, created_at, updated_at) SELECT id, 'cio', 'u', "
                    "'delivered', 1, received_at, received_at, received_at FROM events"))
            command.upgrade(config, "head")
            assert "events_legacy" in names(engine, "events")
            assert count(engine, events) == 50 and count(engine, message_ids) == 50
            # the legacy partition is pruned by row, to the day, until it can go whole
            pruned = Pruner(engine, RetentionSettings()).prune_all()
            assert pruned.counts["events"] == 21  # 30…50 days old
            assert count(engine, events) == 29
            assert count(engine, deliveries) == 6  # delivered: 7 days (1…6 days old are kept)
            with engine.begin() as c:  # what a dropped week of deliveries leaves behind
                c.execute(insert(delivery_attempts).values(
                    delivery_id=10**9, number=1, started_at=NOW, duration_ms=1))
            command.downgrade(config, "0013")  # and back, for an operator who must
            assert count(engine, events) == 29
            assert count(engine, delivery_attempts) == 0  # the orphan went before the keys
        finally:
            engine.dispose()
