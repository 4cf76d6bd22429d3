"""Regulations and the identity graph's guardrails, on SQLite and PostgreSQL: a dry run says
which message linked a key, hashed keys are found from the raw id, and a deletion takes the
person's refused merges with it."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from gateway import create_app
from gateway.config import from_mapping
from gateway.identity import lookup
from gateway.store.models import events, identity_conflicts
from tests.conftest import WRITE_KEY, base_config
from tests.helpers import ADMIN_AUTH, basic

SALT = "a-long-random-salt-for-tests"


@pytest.fixture
def make(database_url: str):
    made: list[Any] = []

    def build(**overrides: Any):
        app = create_app(from_mapping(base_config(database_url, destinations=[], **overrides)))
        made.append(app)
        return app.test_client(), app.extensions["gateway.engine"]

    yield build
    for app in made:
        app.extensions["gateway.engine"].dispose()


def send(client, *messages: dict[str, Any]) -> None:
    response = client.post("/v1/batch", json={"batch": list(messages)}, headers=basic(WRITE_KEY))
    assert response.status_code == 200, response.get_data(as_text=True)


def regulate(client, kind: str, dry_run: bool, **subject: str) -> dict[str, Any]:
    response = client.post("/admin/v1/regulations", headers=ADMIN_AUTH, json={
        "type": kind, "subject": subject, "dry_run": dry_run})
    assert response.status_code == (200 if dry_run else 202), response.get_data(as_text=True)
    return response.get_json()


def count(engine, table: Any) -> int:
    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(table)).scalar_one()


def test_a_dry_run_names_the_victim_and_the_message_that_linked_the_attackers_email(
        make) -> None:
    client, _ = make()
    send(client, {"type": "identify", "userId": "victim-123", "messageId": "m-victim",
                  "traits": {"name": "Vic"}})
    send(client, {"type": "identify", "userId": "victim-123", "messageId": "m-attack",
                  "traits": {"email": "attacker@evil.example"}})
    plan = regulate(client, "delete", True, email="attacker@evil.example")
    assert plan["profile"]["keys"]["user_ids"] == ["victim-123"]
    linked = {(link["kind"], link["value"]): link for link in plan["profile"]["links"]}
    assert linked[("email", "attacker@evil.example")]["linked_by"] == "m-attack"
    assert linked[("email", "attacker@evil.example")]["source"] == "web"
    assert linked[("userId", "victim-123")]["linked_by"] == "m-victim"
    assert plan["counts"]["events"] == 2


def test_the_cli_dry_run_prints_which_message_linked_each_key(make, database_url, tmp_path,
                                                              capsys) -> None:
    from gateway.cli.commands import main
    from tests.conftest import write_toml

    client, _ = make()
    send(client, {"type": "identify", "userId": "victim-123", "messageId": "m-attack",
                  "traits": {"email": "attacker@evil.example"}})
    path = tmp_path / "gateway.toml"
    write_toml(path, base_config(database_url, destinations=[]))
    assert main(["--config", str(path), "delete", "attacker@evil.example", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "user_id: victim-123" in out
    assert "email attacker@evil.example: message m-attack (source web)" in out


@pytest.mark.parametrize("given", ["u-raw", "Ann@Example.com"])
def test_regulations_find_profiles_a_source_stores_hashed(make, given: str) -> None:
    hashing = {"name": "web", "write_key": WRITE_KEY,
               "filters": {"hash_fields": ["userId", "traits.email"], "hash_salt": SALT}}
    client, engine = make(sources=[hashing])
    send(client, {"type": "identify", "userId": "u-raw", "anonymousId": "a-1",
                  "traits": {"email": "Ann@Example.com"}},
         {"type": "track", "event": "e", "userId": "u-raw"})
    with engine.connect() as connection:
        assert lookup(connection, "userId", "u-raw") is None  # the graph holds hashes
        assert lookup(connection, "anonymousId", "a-1") is not None
    subject = {"email": given} if "@" in given else {"user_id": given}
    plan = regulate(client, "delete", True, **subject)
    assert plan["profile"]["id"] is not None
    assert plan["profile"]["keys"]["anonymous_ids"] == ["a-1"]
    assert plan["counts"]["events"] == 2
    done = regulate(client, "suppress_with_delete", False, **subject)
    assert done["counts"]["events"] == 2 and count(engine, events) == 0
    send(client, {"type": "track", "event": "e", "userId": "u-raw"})  # suppressed: hashed too
    assert count(engine, events) == 0


def test_a_deletion_takes_the_refused_merges_naming_the_person(make) -> None:
    client, engine = make()
    send(client, {"type": "identify", "userId": "ann", "traits": {"email": "x@example.com"}})
    send(client, {"type": "identify", "userId": "bob", "traits": {"email": "x@example.com"}})
    assert count(engine, identity_conflicts) == 1  # on Bob's profile, naming Ann's email
    plan = regulate(client, "delete", True, user_id="ann")
    assert plan["counts"]["identity_conflicts"] == 1
    regulate(client, "delete", False, user_id="ann")
    assert count(engine, identity_conflicts) == 0
    with engine.connect() as connection:
        assert lookup(connection, "userId", "bob")["conflicts"] == []
