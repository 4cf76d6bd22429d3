"""The identity lookup stays an index lookup however many profiles are stored.

A row-value `(kind, value) IN (VALUES …)` made SQLite read the whole identity_keys table on every
request carrying two keys: 0.18 ms per request at a few profiles, 34 ms at 100,000. These tests
store 50,000 keys, send real requests, catch the statement the identity graph runs, and ask each
database how it would run it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, insert, select, text

from gateway import create_app
from gateway.config import from_mapping
from gateway.store.models import identities, identity_keys
from tests.conftest import WRITE_KEY, base_config
from tests.helpers import basic

PROFILES = 25_000  # two keys each: 50,000 identity_keys rows


def load_profiles(engine) -> None:
    now = datetime.now(UTC)
    with engine.begin() as connection:
        connection.execute(insert(identities), [
            {"traits": {}, "first_seen": now, "last_seen": now} for _ in range(PROFILES)])
        ids = connection.execute(select(identities.c.id)).scalars().all()
        connection.execute(insert(identity_keys), [
            {"kind": kind, "value": f"{kind}-{n}", "identity_id": n}
            for n in ids for kind in ("userId", "anonymousId")])
        if engine.dialect.name == "postgresql":
            connection.execute(text("ANALYZE identity_keys"))
            connection.execute(text("ANALYZE identities"))


class Captured:
    """The SELECTs on identity_keys the engine runs while this is attached."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.statements: list[tuple[str, Any]] = []

    def __enter__(self) -> Captured:
        event.listen(self.engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *exc: Any) -> None:
        event.remove(self.engine, "before_cursor_execute", self._seen)

    def _seen(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM identity_keys" in statement:
            self.statements.append((statement, parameters))


def plan(engine, statement: str, parameters: Any) -> str:
    prefix = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(prefix + statement, parameters).all()
    if engine.dialect.name == "sqlite":
        return "\n".join(row[-1] for row in rows)
    return "\n".join(row[0] for row in rows)


def assert_index_lookup(engine, query_plan: str) -> None:
    if engine.dialect.name == "sqlite":
        assert "SCAN identity_keys" not in query_plan, query_plan
        assert "SEARCH identity_keys USING" in query_plan, query_plan
        assert "(kind=? AND value=?)" in query_plan, query_plan
    else:
        assert "Seq Scan on identity_keys" not in query_plan, query_plan
        assert "uq_identity_keys_kind_value" in query_plan, query_plan
        assert any(kind in query_plan for kind in
                   ("Index Scan", "Index Only Scan", "Bitmap Index Scan")), query_plan


def post(client, path: str, body: dict[str, Any]) -> None:
    response = client.post(path, json=body, headers=basic(WRITE_KEY))
    assert response.status_code == 200, response.get_data(as_text=True)


@pytest.mark.slow
def test_identity_lookup_uses_the_kind_value_index_at_50000_keys(client, engine) -> None:
    load_profiles(engine)
    with Captured(engine) as captured:
        # a single track with both ids (the common server-side call)
        post(client, "/v1/track", {"event": "Viewed", "userId": "userId-17",
                                   "anonymousId": "anonymousId-4242"})
        # a batch: known and new users, identify with email, an alias
        batch = [{"type": "track", "event": "Viewed", "userId": f"userId-{n * 7}",
                  "anonymousId": f"anon-new-{n}"} for n in range(1, 60)]
        batch += [{"type": "identify", "userId": f"userId-{n}", "anonymousId": f"anonymousId-{n}",
                   "traits": {"email": f"u{n}@example.com"}} for n in range(1, 40)]
        batch.append({"type": "alias", "userId": "userId-3", "previousId": "anonymousId-9"})
        post(client, "/v1/batch", {"batch": batch})
        # one key only
        post(client, "/v1/track", {"event": "Viewed", "anonymousId": "anonymousId-5"})
    assert len(captured.statements) >= 3
    for statement, parameters in captured.statements:
        if "GROUP BY" in statement:  # the key counts of profiles that may grow (the limits)
            assert_profile_lookup(engine, plan(engine, statement, parameters))
        else:
            assert_index_lookup(engine, plan(engine, statement, parameters))


def assert_profile_lookup(engine, query_plan: str) -> None:
    """Counting a profile's keys reads its keys through the identity_id index, never all."""
    assert "ix_identity_keys_identity_id" in query_plan, query_plan
    if engine.dialect.name == "sqlite":
        assert "SCAN identity_keys" not in query_plan, query_plan
    else:
        assert "Seq Scan on identity_keys" not in query_plan, query_plan


@pytest.mark.slow
def test_the_lookup_still_finds_every_key_it_was_asked_for(database_url: str) -> None:
    """The per-kind condition returns exactly the stored keys asked for, across kinds. (Two
    userIds per profile allowed, so the two identified profiles below may merge.)"""
    app = create_app(from_mapping(base_config(database_url, identity={"limits": {"userId": 2}})))
    client, engine = app.test_client(), app.extensions["gateway.engine"]
    load_profiles(engine)
    post(client, "/v1/track", {"event": "Viewed", "userId": "userId-10",
                               "anonymousId": "anonymousId-11"})  # merges profiles 10 and 11
    with engine.connect() as connection:
        owners = dict(connection.execute(
            select(identity_keys.c.value, identity_keys.c.identity_id).where(
                identity_keys.c.value.in_(["userId-10", "anonymousId-10", "userId-11",
                                           "anonymousId-11"]))).all())
        assert len(set(owners.values())) == 1
        assert connection.scalar(select(identities.c.id).where(
            identities.c.id.in_([10, 11])).order_by(identities.c.id)) == 10
    engine.dispose()
