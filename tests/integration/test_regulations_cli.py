"""`gateway suppress | unsuppress | delete [--suppress] [--wait]` and `gateway regulations`, run
as a user runs them (a subprocess on a config file), on SQLite and PostgreSQL; and migration
0007 on a database that already holds deliveries and attempts."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text

from gateway import create_app
from gateway.config import from_mapping
from gateway.store.db import alembic_config, make_engine
from tests.conftest import WRITE_KEY, base_config, write_toml
from tests.helpers import basic, stored_events

pytestmark = pytest.mark.slow  # the CLI in a subprocess, on a terminal


def gateway(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The command with no terminal on stdin (as from a script or a service)."""
    return subprocess.run([sys.executable, "-m", "gateway.cli", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def on_a_terminal(config: Path, answer: str, *args: str) -> tuple[int, str]:
    """The command with a terminal on stdin, typing `answer`; (exit code, what it printed)."""
    primary, secondary = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "--config", str(config), *args],
            stdin=secondary, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        os.write(primary, answer.encode() + b"\n")
        out, _ = process.communicate(timeout=120)
        return process.returncode, out
    finally:
        os.close(primary)
        os.close(secondary)


def test_cli_regulations(database_url: str, tmp_path: Path) -> None:
    # two userIds per profile: the shared email below merges dana@corp and dana-1
    raw = base_config(database_url, destinations=[], identity={"limits": {"userId": 2}})
    path = tmp_path / "gateway.toml"
    write_toml(path, raw)
    app = create_app(from_mapping(raw))
    client, engine = app.test_client(), app.extensions["gateway.engine"]

    def send(message_id: str, **ids: str) -> None:
        response = client.post("/v1/identify", headers=basic(WRITE_KEY), json={
            "messageId": message_id, **ids, "traits": {"email": "dana@example.com"}})
        assert response.status_code == 200

    try:
        send("m-1", userId="dana@corp")  # a userId with an @ in it
        send("m-2", userId="dana-1", anonymousId="anon-d")
        # ID_OR_EMAIL: "@" means an email, unless --user-id says otherwise
        done = gateway(path, "suppress", "dana@corp", "--user-id", "--json", "--yes")
        assert done.returncode == 0, done.stderr
        suppressed = json.loads(done.stdout)
        assert suppressed["subject_kind"] == "user_id"
        # the whole profile (linked by the email): dana@corp, the email, dana-1, anon-d
        assert suppressed["counts"]["suppressed_keys"] == 4
        send("m-3", userId="dana@corp")
        assert len(stored_events(engine)) == 2
        lifted = gateway(path, "unsuppress", "DANA@example.com")
        assert lifted.returncode == 0, lifted.stderr
        assert "unsuppress (email) finished" in lifted.stdout
        send("m-4", userId="dana@corp")
        assert len(stored_events(engine)) == 3

        # delete --suppress = suppress_with_delete; no destination: finished at once
        deleted = gateway(path, "delete", "dana@example.com", "--suppress", "--wait", "--yes")
        assert deleted.returncode == 0, deleted.stderr
        assert "suppress_with_delete (email) finished" in deleted.stdout
        assert "events 3" in deleted.stdout and "identities 1" in deleted.stdout
        assert stored_events(engine) == []
        send("m-5", userId="dana-1")
        assert stored_events(engine) == []

        listed = gateway(path, "regulations")
        assert listed.returncode == 0
        lines = listed.stdout.splitlines()
        assert lines[0].split()[:3] == ["ID", "TYPE", "STATUS"]
        assert [line.split()[1] for line in lines[1:]] == [
            "suppress_with_delete", "unsuppress", "suppress"]
        one = gateway(path, "regulations", "1", "--json")
        assert json.loads(one.stdout)["type"] == "suppress"
        assert "dana" not in listed.stdout + one.stdout  # the record keeps no key

        bad = gateway(path, "suppress", "  ", "--json", "--yes")
        assert bad.returncode == 2 and "subject.user_id: a non-empty string" in bad.stderr
        missing = gateway(path, "regulations", "99")
        assert missing.returncode == 1 and "no regulation 99" in missing.stderr
    finally:
        engine.dispose()


def test_delete_and_suppress_show_the_keys_and_ask_first(database_url: str,
                                                         tmp_path: Path) -> None:
    """A key linked by anyone with the write key widens a regulation to its whole profile: the
    command shows every key it will cover and asks (y/N) on a terminal; without one it refuses
    unless --yes, rather than hang or act unseen."""
    raw = base_config(database_url)  # cio and kustomer enabled, a custify one paused
    path = tmp_path / "gateway.toml"
    write_toml(path, raw)
    app = create_app(from_mapping(raw))
    client, engine = app.test_client(), app.extensions["gateway.engine"]
    try:
        for message_id, email in (("v-1", "victim@example.com"), ("a-1", "attacker@evil.example")):
            assert client.post("/v1/identify", headers=basic(WRITE_KEY), json={
                "messageId": message_id, "userId": "victim-123",
                "traits": {"email": email}}).status_code == 200

        for command in (["delete"], ["suppress"], ["delete", "--suppress"]):
            refused = gateway(path, *command, "attacker@evil.example")
            assert refused.returncode == 2
            assert "stdin is not a terminal" in refused.stderr and "--yes" in refused.stderr
            assert "user_id: victim-123" in refused.stdout  # whose data it would reach
            assert "email: victim@example.com" in refused.stdout
        assert "events 2" in refused.stdout and "cio (customerio): deletion requested" \
            in refused.stdout and "kustomer-main (kustomer): deletion unsupported" \
            in refused.stdout and "paused" not in refused.stdout

        planned = gateway(path, "delete", "attacker@evil.example", "--dry-run", "--json")
        assert planned.returncode == 0, planned.stderr
        plan = json.loads(planned.stdout)
        assert plan["profile"]["keys"]["user_ids"] == ["victim-123"]
        assert plan["counts"]["events"] == 2

        code, out = on_a_terminal(path, "n", "delete", "attacker@evil.example")
        assert code == 1 and "user_id: victim-123" in out and "[y/N]" in out
        assert "cancelled, nothing changed" in out
        assert len(stored_events(engine)) == 2
        listed = gateway(path, "regulations", "--json")
        assert json.loads(listed.stdout)["data"] == []  # no dry run nor refusal left a trace

        code, out = on_a_terminal(path, "y", "delete", "attacker@evil.example", "--json")
        assert code == 0, out
        assert stored_events(engine) == []
    finally:
        engine.dispose()


def test_migration_0007_keeps_existing_deliveries_and_attempts(database_url: str) -> None:
    """SQLite rebuilds the deliveries table to make event_id nullable; with foreign keys on,
    dropping the old table would cascade to every attempt unless the migration keeps them."""
    config = alembic_config(database_url)
    command.downgrade(config, "0003")
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO events (id, source, message_id, type, timestamp, received_at, "
                "payload) VALUES (1, 'web', 'm', 'track', :t, :t, '{}')"), {"t": "2026-12-01"})
            connection.execute(text(
                "INSERT INTO deliveries (id, event_id, destination, user_key, state, attempts, "
                "next_attempt_at, created_at, updated_at) "
                "VALUES (1, 1, 'hook', 'u', 'delivered', 1, :t, :t, :t)"), {"t": "2026-12-01"})
            connection.execute(text(
                "INSERT INTO delivery_attempts (delivery_id, number, started_at, duration_ms, "
                "status) VALUES (1, 1, :t, 12, 200)"), {"t": "2026-12-01"})
        engine.dispose()
        command.upgrade(config, "head")
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM delivery_attempts")).scalar() == 1
            assert connection.execute(text(
                "SELECT event_id, regulation_id FROM deliveries")).one() == (1, None)
        with engine.begin() as connection:  # event_id may be NULL now (a deletion request)
            connection.execute(text(
                "INSERT INTO deliveries (id, event_id, regulation_id, destination, user_key, "
                "state, attempts, next_attempt_at, created_at, updated_at) "
                "VALUES (2, NULL, 7, 'hook', 'u', 'pending', 0, :t, :t, :t)"), {"t": "2026-12-01"})
    finally:
        engine.dispose()
