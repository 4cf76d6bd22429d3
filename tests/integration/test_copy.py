"""`gateway copy --to postgresql://…`: a SQLite installation with real traffic moved into
PostgreSQL — every table equal row for row, resumable after an interruption, and the gateway
carries on there (new ids after the copied ones, copied deliveries still delivered)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from gateway import create_app
from gateway.cli.commands import main
from gateway.config import from_mapping
from gateway.delivery.worker import Worker
from gateway.store.copy import TABLES, checksum, copy_all
from gateway.store.db import make_engine, migrate
from gateway.store.models import deliveries, events, heartbeats, message_ids, metadata
from tests.conftest import ADMIN_TOKEN, POSTGRES_URL, WRITE_KEY, pg_schema, write_toml
from tests.helpers import basic
from tests.standin import StandIn

pytestmark = pytest.mark.postgres
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def raw_config(database_url: str, endpoint: str) -> dict[str, Any]:
    return {
        "database_url": database_url, "admin_token": ADMIN_TOKEN,
        "sources": [{"name": "web", "write_key": WRITE_KEY}],
        "destinations": [
            {"name": "hook", "type": "webhook", "endpoint": endpoint,
             "settings": {"webhookUrl": "https://hooks.example/in"}},
            {"name": "later", "type": "webhook", "endpoint": "http://127.0.0.1:9",
             "settings": {"webhookUrl": "https://hooks.example/later"}},
        ],
        "retry": {"base_delay_seconds": 600},
    }


@pytest.fixture
def postgres() -> Iterator[str]:
    if not POSTGRES_URL:
        pytest.skip("GATEWAY_TEST_POSTGRES_URL is not set")
    with pg_schema() as url:
        yield url


@pytest.fixture
def installation(tmp_path: Path) -> Iterator[tuple[Path, StandIn]]:
    """A SQLite installation that has seen traffic: events of every type (with text that
    tests encodings), identities merged by alias, deliveries delivered, retrying and pending,
    a rejected request, a suppression."""
    standin = StandIn()
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    raw = raw_config(url, standin.url)
    path = tmp_path / "gateway.toml"
    write_toml(path, raw)
    migrate(url)
    app = create_app(from_mapping(raw))
    client = app.test_client()
    batch = [
        {"type": "identify", "userId": "ada", "anonymousId": "anon-1",
         "traits": {"email": "ada@example.com", "name": "Ada ☃", "nested": {"b": 1, "a": [1.5]}}},
        {"type": "alias", "userId": "ada", "previousId": "anon-2"},
        {"type": "page", "anonymousId": "anon-2", "name": "Home"},
        {"type": "group", "userId": "ada", "groupId": "g-1", "traits": {"plan": "pro"}},
        *[{"type": "track", "userId": f"user-{n % 7}", "event": "Order Completed",
           "properties": {"revenue": n / 3, "quote": "it's \"x\" \u2028"}} for n in range(40)],
    ]
    assert client.post("/v1/batch", json={"batch": batch}, headers=basic(WRITE_KEY)).status_code \
        == 200
    assert client.post("/v1/track", json={"userId": "x", "event": "e"},
                       headers=basic("wrong-key")).status_code == 401
    assert client.post("/admin/v1/regulations", headers=AUTH, json={
        "type": "suppress", "subject": {"user_id": "user-6"}}).status_code == 202
    worker = Worker(app.extensions["gateway.engine"], app.extensions["gateway.config"])
    try:
        worker.run_once()  # "hook" delivered, "later" retrying (nothing listens on port 9)
    finally:
        worker.close()
    app.extensions["gateway.engine"].dispose()
    yield path, standin
    standin.close()


def counts(url: str) -> dict[str, int]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return {t.name: connection.execute(select(func.count()).select_from(t)).scalar_one()
                    for t in TABLES}
    finally:
        engine.dispose()


def source_url(path: Path) -> str:
    return f"sqlite:///{path.parent / 'gateway.db'}"


def test_copy_moves_every_table_and_verifies(installation, postgres: str, capsys) -> None:
    path, _ = installation
    assert main(["--config", str(path), "copy", "--to", postgres, "--batch", "7"]) == 0
    out = capsys.readouterr().out
    assert "copied and verified" in out and " NO" not in out
    mine, theirs = counts(source_url(path)), counts(postgres)
    assert mine == theirs
    target = make_engine(postgres)
    try:  # a resend of a copied message is still a duplicate there
        with target.connect() as connection:
            keys = connection.execute(select(func.count()).select_from(message_ids)).scalar()
    finally:
        target.dispose()
    assert keys == mine["events"]
    assert mine["events"] == 44 and mine["identity_keys"] >= 4 and mine["rejections"] >= 1
    assert mine["delivery_attempts"] > 0 and mine["suppressed_keys"] >= 1
    source, target = make_engine(source_url(path)), make_engine(postgres)
    try:
        for table in TABLES:
            assert checksum(source, table) == checksum(target, table), table.name
    finally:
        source.dispose()
        target.dispose()


def test_an_interrupted_copy_resumes_without_duplicates(installation, postgres: str) -> None:
    path, _ = installation
    migrate(postgres)
    source, target = make_engine(source_url(path)), make_engine(postgres)
    try:
        copy_all(source, target, batch=5, stop_after_batches=4)  # stopped inside events
        partial = counts(postgres)
        assert 0 < partial["events"] < 44 and partial["deliveries"] == 0
    finally:
        source.dispose()
        target.dispose()
    assert main(["--config", str(path), "copy", "--to", postgres, "--batch", "5"]) == 0
    assert counts(postgres) == counts(source_url(path))


def test_the_gateway_carries_on_in_postgresql_after_the_copy(installation, postgres: str,
                                                             tmp_path: Path) -> None:
    path, standin = installation
    assert main(["--config", str(path), "copy", "--to", postgres]) == 0
    delivered_before = len(standin.requests)
    raw = raw_config(postgres, standin.url)
    app = create_app(from_mapping(raw))
    engine = app.extensions["gateway.engine"]
    try:
        with engine.connect() as connection:
            newest = connection.execute(select(func.max(events.c.id))).scalar_one()
            waiting = dict(connection.execute(
                select(deliveries.c.state, func.count()).where(deliveries.c.destination == "hook")
                .group_by(deliveries.c.state)).all())
        assert waiting.get("pending", 0) > 0  # the copied queue: per-user order held them
        answer = app.test_client().post("/v1/track", headers=basic(WRITE_KEY),
                                        json={"userId": "ada", "event": "After the move"})
        assert answer.status_code == 200
        with engine.connect() as connection:
            row = connection.execute(select(events.c.id).where(
                events.c.event == "After the move")).one()
        assert row.id == newest + 1  # the id sequence moved past the copied rows
        worker = Worker(engine, app.extensions["gateway.config"])
        try:
            while worker.run_once():
                pass
        finally:
            worker.close()
        sent = [r.json["messageId"] for r in standin.requests]
        assert len(sent) == len(set(sent)) == delivered_before + waiting["pending"] + 1
        with engine.connect() as connection:
            states = dict(connection.execute(
                select(deliveries.c.state, func.count()).where(deliveries.c.destination == "hook")
                .group_by(deliveries.c.state)).all())
        assert states == {"delivered": sum(waiting.values()) + 1}
    finally:
        engine.dispose()


def test_copy_refuses_a_source_still_in_use_and_a_foreign_target(installation, postgres: str,
                                                                 capsys) -> None:
    path, _ = installation
    engine = make_engine(source_url(path))
    now = datetime.now(UTC)
    with engine.begin() as connection:
        connection.execute(insert(heartbeats).values(
            id="w1", role="worker", host="node-1", pid=4242, started_at=now, beat_at=now))
    engine.dispose()
    assert main(["--config", str(path), "copy", "--to", postgres]) == 1
    assert "still in use (worker pid 4242 on node-1)" in capsys.readouterr().err
    with make_engine(source_url(path)).begin() as connection:
        connection.execute(heartbeats.delete())
    migrate(postgres)
    target = make_engine(postgres)
    with target.begin() as connection:  # another installation's events, newer ids
        connection.execute(insert(events).values(
            id=10_000, source="web", message_id="theirs", type="track", timestamp=now,
            received_at=now, payload={}))
    target.dispose()
    assert main(["--config", str(path), "copy", "--to", postgres]) == 1
    assert "copy into an empty database" in capsys.readouterr().err


def test_every_table_is_copied_or_deliberately_left(tmp_path: Path) -> None:
    """A table a migration adds must be named here: copied, or left on purpose."""
    left = {"heartbeats", "console_sessions", "message_ids"}  # message_ids: from the events
    assert {t.name for t in TABLES} | left == set(metadata.tables)
    assert not {t.name for t in TABLES} & left
