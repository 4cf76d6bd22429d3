"""The admin commands of the `gateway` CLI, run as a user runs them, on real stored data."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from gateway import create_app
from gateway.cli.commands import build_parser, main
from gateway.config import from_mapping
from gateway.config import load as from_path
from gateway.delivery.worker import Worker
from gateway.heartbeat import WORKER, Heartbeat
from gateway.store.db import make_engine
from gateway.store.models import heartbeats
from tests.conftest import ADMIN_TOKEN, POSTGRES_URL, WRITE_KEY, free_port, write_toml
from tests.helpers import basic, drain
from tests.standin import Answer, StandIn


@pytest.fixture
def setup(database_url: str, tmp_path: Path):
    standin = StandIn()
    standin.answer_for = lambda r: Answer(400, {"error": "no"}) if r.json["messageId"] == "m-bad" \
        and [q.json["messageId"] for q in standin.requests].count("m-bad") == 1 else None
    raw = {"database_url": database_url, "admin_token": ADMIN_TOKEN,
           "sources": [{"name": "web", "write_key": WRITE_KEY}],
           "destinations": [{"name": "hook", "type": "webhook", "endpoint": standin.url,
                             "settings": {"webhookUrl": "https://h.example/in",
                                          "apiKey": "cli-secret-1"}}],
           "retry": {"base_delay_seconds": 0}}
    path = tmp_path / "gateway.toml"
    write_toml(path, raw)
    app = create_app(from_mapping(raw))
    batch = [{"type": "identify", "userId": "u1", "messageId": "m-id",
              "traits": {"email": "cli@example.com"}},
             {"type": "track", "userId": "u1", "event": "Bought", "messageId": "m-bad"},
             {"type": "track", "userId": "u2", "event": "Viewed", "messageId": "m-ok"}]
    assert app.test_client().post("/v1/batch", json={"batch": batch},
                                  headers=basic(WRITE_KEY)).status_code == 200
    worker = Worker(app.extensions["gateway.engine"], app.extensions["gateway.config"])
    drain(worker)
    yield path, worker, standin
    worker.close()
    standin.close()
    app.extensions["gateway.engine"].dispose()


def run(capsys: pytest.CaptureFixture, path: Path, *args: str) -> tuple[int, str]:
    code = main(["--config", str(path), *args])
    out = capsys.readouterr()
    assert "cli-secret-1" not in out.out + out.err
    return code, out.out


def test_events_table_json_and_one_event(setup, capsys) -> None:
    path, _, _ = setup
    code, out = run(capsys, path, "events")
    assert code == 0 and out.splitlines()[0].split()[:4] == ["ID", "RECEIVED_AT", "SOURCE",
                                                              "TYPE"]
    assert "Bought" in out and "m-ok" in out
    code, out = run(capsys, path, "events", "--user-id", "u2", "--json")
    data = json.loads(out)["data"]
    assert [e["message_id"] for e in data] == ["m-ok"]
    code, out = run(capsys, path, "events", str(data[0]["id"]), "--json")
    assert json.loads(out)["deliveries"][0]["state"] == "delivered"


def test_deliveries_retry_and_identities(setup, capsys) -> None:
    path, worker, _ = setup
    code, out = run(capsys, path, "deliveries", "--state", "dead", "--json")
    [dead] = json.loads(out)["data"]
    assert dead["last_status"] == 400
    code, out = run(capsys, path, "retry", str(dead["id"]), "--json")
    assert code == 0 and json.loads(out)["state"] == "pending"
    code, _ = run(capsys, path, "retry", str(dead["id"]))
    assert code == 1  # not dead any more
    drain(worker)
    code, out = run(capsys, path, "deliveries", "--state", "delivered")
    assert len(out.strip().splitlines()) == 4  # header + three deliveries
    code, out = run(capsys, path, "identities", "--email", "CLI@example.com", "--json")
    assert {k["value"] for k in json.loads(out)["keys"]} == {"u1", "cli@example.com"}
    code, _ = run(capsys, path, "identities", "--user-id", "nobody")
    assert code == 1


def test_replay_dry_run_and_with_progress(setup, capsys) -> None:
    path, worker, standin = setup
    code, out = run(capsys, path, "replay", "hook", "--user-id", "u1", "--dry-run", "--json")
    assert json.loads(out) == {"replay_id": None, "matched": 2, "queued": 0}
    code = main(["--config", str(path), "replay", "hook", "--type", "track"])
    captured = capsys.readouterr()
    assert code == 0 and "replaying [" in captured.err and "2/2" in captured.err
    assert "queued" in captured.out
    before = len(standin.requests)
    drain(worker)
    assert sorted(r.json["messageId"] for r in standin.requests[before:]) == ["m-bad", "m-ok"]
    code, _ = run(capsys, path, "replay", "nowhere")
    assert code == 2


def test_destinations_listing(capsys) -> None:
    assert main(["destinations", "--json"]) == 0
    entries: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    hook = next(e for e in entries if e["type"] == "webhook")
    assert {s["name"]: s["secret"] for s in hook["settings"]}["apiKey"] is True


# --- people-facing behaviour: one line per problem, never a traceback ------------------------

def gateway(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            ) -> subprocess.CompletedProcess:
    """`gateway ARGS` as a user runs it, in a clean environment (plus `env`)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], cwd=cwd, timeout=60,
                          capture_output=True, text=True, env={**clean, **(env or {})})


def one_line(stderr: str) -> str:
    """The user sees exactly one line: no traceback, no usage block."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def write_config(folder: Path, database_url: str, **extra: Any) -> Path:
    path = folder / "gateway.toml"
    write_toml(path, {"database_url": database_url, "admin_token": ADMIN_TOKEN,
                      "sources": [{"name": "web", "write_key": WRITE_KEY}], **extra})
    return path


@pytest.mark.slow
def test_a_weak_admin_token_stops_everything_but_check(database_url: str,
                                                     tmp_path: Path) -> None:
    """A weak admin token: `gateway check` once said ok for "x". Now check flags it on its own line
    (and goes on with the rest), and every other command refuses to start, in one line; the
    token is never printed."""
    path = write_config(tmp_path, database_url, admin_token="change-me")
    path.chmod(0o600)  # a config others can read would add its own WARN line
    done = gateway("--config", str(path), "check")
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["ok", "config"], ["FAIL", "admin"], ["ok", "database"], ["ok", "schema"],
        ["ok", "delivery"], ["ok", "identity"]]
    assert "field 'admin_token': too short (9 characters, at least 32)" in lines[1]
    for command in (["events"], ["serve", "--no-worker"], ["worker"]):
        done = gateway("--config", str(path), *command)
        line = one_line(done.stderr)
        assert done.returncode == 2, command
        assert "field 'admin_token': too short" in line and "token_urlsafe(32)" in line
        assert "change-me" not in done.stderr + done.stdout
    done = gateway("--config", str(path), "check", env={"GATEWAY_ADMIN_TOKEN": "still-short"})
    assert "(from $GATEWAY_ADMIN_TOKEN): too short" in done.stdout
    assert "still-short" not in done.stdout


@pytest.mark.slow
def test_version() -> None:
    done = gateway("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"gateway {version('event-gateway')}"


def test_config_is_accepted_before_or_after_the_subcommand(setup, capsys) -> None:
    path, _, _ = setup
    assert build_parser().parse_args(["--config", "a.toml", "events"]).config == "a.toml"
    assert build_parser().parse_args(["serve", "--config", "b.toml"]).config == "b.toml"
    assert build_parser().parse_args(["--config", "a.toml", "serve", "--no-worker"]).config \
        == "a.toml"
    assert main(["events", "--config", str(path), "--json"]) == 0
    first = json.loads(capsys.readouterr().out)["data"][0]["id"]
    assert main(["events", str(first), "--config", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == first


@pytest.mark.slow
@pytest.mark.parametrize("args,fragment", [
    (["--bind", "127.0.0.1:99999"], "port must be a number from 1 to 65535"),
    (["--bind", ":80x"], "port must be a number"),
    (["--workers", "-1"], "at least 1"),
    (["--workers", "0"], "at least 1"),
])
def test_bad_bind_or_workers_is_a_usage_error_before_anything_starts(
        tmp_path: Path, args: list[str], fragment: str) -> None:
    done = gateway("serve", *args, cwd=tmp_path)
    assert done.returncode == 2 and fragment in one_line(done.stderr)
    assert "Serving on" not in done.stdout and not list(tmp_path.iterdir())  # no config written


def test_bind_defaults() -> None:
    assert build_parser().parse_args(["serve", "--bind", "localhost"]).bind == "localhost:8080"
    assert build_parser().parse_args(["serve", "--bind", ":9000"]).bind == "127.0.0.1:9000"


@pytest.mark.slow
def test_config_path_problems_are_one_line(tmp_path: Path) -> None:
    done = gateway("--config", "sub/x.toml", "serve", "--init", cwd=tmp_path)
    assert done.returncode == 2
    assert one_line(done.stderr).endswith("cannot write sub/x.toml: folder sub does not exist")
    done = gateway("--config", str(tmp_path), "events")
    assert done.returncode == 2 and "is a folder" in one_line(done.stderr)


@pytest.mark.slow
def test_serve_writes_a_config_only_at_the_default_path_or_with_init(tmp_path: Path) -> None:
    """A typo in --config or $GATEWAY_CONFIG must not start an empty installation with a new
    write key (healthy-looking while every SDK gets 401): it is an error, as for every other
    command. The default ./gateway.toml, or --init, still writes a starter config."""
    with socket.socket() as busy:  # serve stops at the busy port, after the config part
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        bind = f"127.0.0.1:{busy.getsockname()[1]}"
        for how in (["--config", "typo.toml"], ["--config", str(tmp_path / "gateway.toml")]):
            done = gateway(*how, "serve", "--bind", bind, cwd=tmp_path)
            assert done.returncode == 2
            assert one_line(done.stderr).endswith(
                "file not found (gateway serve writes a new config only at the default "
                "./gateway.toml, or with --init)")
            assert "write key" not in done.stdout
        done = gateway("serve", "--bind", bind, cwd=tmp_path,
                       env={"GATEWAY_CONFIG": str(tmp_path / "typo.toml")})
        assert done.returncode == 2 and "typo.toml: file not found" in done.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written or served

        done = gateway("serve", "--bind", bind, cwd=tmp_path)  # the default path
        assert "already in use" in done.stderr and "write key:" in done.stdout
        assert (tmp_path / "gateway.toml").is_file()
        done = gateway("--config", "other.toml", "serve", "--init", "--bind", bind, cwd=tmp_path)
        assert "already in use" in done.stderr and "write key:" in done.stdout
        assert (tmp_path / "other.toml").is_file()


DATABASE_COMMANDS = [["serve", "--no-worker"], ["worker"], ["migrate"], ["events"],
                     ["deliveries"], ["identities", "--user-id", "u"], ["replay", "hook"],
                     ["retry", "1"]]


@pytest.mark.parametrize("command", DATABASE_COMMANDS, ids=lambda c: c[0])
def test_an_unreachable_database_is_one_line_naming_it_with_the_password_masked(
        tmp_path: Path, capsys, command: list[str]) -> None:
    url = f"postgresql://ann:s3cret@127.0.0.1:{free_port()}/gw"
    path = write_config(tmp_path, url, destinations=[{"name": "hook", "type": "console"}])
    assert main(["--config", str(path), *command]) == 1
    err = capsys.readouterr().err
    assert one_line(err) == ("gateway: cannot connect to the database at "
                             f"postgresql://ann:***@{url.split('@')[1]}: connection refused")


@pytest.mark.parametrize("command", [*DATABASE_COMMANDS, ["check"]], ids=lambda c: c[0])
def test_a_password_in_the_query_is_masked_too(tmp_path: Path, capsys,
                                               command: list[str]) -> None:
    """libpq takes `?password=` as well as `user:password@`: neither is ever printed."""
    url = f"postgresql://ann@127.0.0.1:{free_port()}/gw?sslmode=disable&password=s3cret-q"
    path = write_config(tmp_path, url, destinations=[{"name": "hook", "type": "console"}])
    assert main(["--config", str(path), *command]) == 1
    captured = capsys.readouterr()
    assert "s3cret-q" not in captured.out + captured.err
    assert "password=***" in captured.out + captured.err
    assert "connection refused" in captured.out + captured.err


@pytest.mark.parametrize("url,message,code", [
    ("mysql://u:p@h/db", "gateway: database_url 'mysql://u:***@h/db': mysql is not supported; "
                         "only sqlite and postgresql are", 2),
    ("not a url", "gateway: cannot parse database_url 'not a url': expected "
                  "sqlite:///path/to/file.db or postgresql://user@host/database", 2),
    ("postgresql://u@h:port/db", "gateway: cannot parse database_url", 2),
])
def test_unusable_database_urls_are_one_line(tmp_path: Path, capsys, url: str, message: str,
                                              code: int) -> None:
    path = write_config(tmp_path, url)
    for command in (["events"], ["migrate"], ["serve", "--no-worker"]):
        assert main(["--config", str(path), *command]) == code
        assert one_line(capsys.readouterr().err).startswith(message)


def test_postgresql_without_psycopg_says_what_to_install(tmp_path: Path, capsys,
                                                         monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "psycopg" else real(name, *a))
    path = write_config(tmp_path, "postgresql://u@127.0.0.1/db")
    assert main(["--config", str(path), "migrate"]) == 2
    assert one_line(capsys.readouterr().err) == (
        "gateway: postgresql URLs need: pip install 'event-gateway[postgres]'")


@pytest.mark.postgres
@pytest.mark.skipif(not POSTGRES_URL, reason="GATEWAY_TEST_POSTGRES_URL is not set")
@pytest.mark.parametrize("change,reason", [
    (lambda u: u.set(database="no_such_db_here"), 'database "no_such_db_here" does not exist'),
    (lambda u: u.set(username="no_such_role"), 'role "no_such_role" does not exist'),
])
def test_missing_database_or_role_is_named(tmp_path: Path, capsys, change, reason: str) -> None:
    url = change(make_url(POSTGRES_URL)).render_as_string(hide_password=False)
    path = write_config(tmp_path, url)
    assert main(["--config", str(path), "events"]) == 1
    line = one_line(capsys.readouterr().err)
    assert line.startswith("gateway: cannot connect to the database at ") and reason in line


def test_other_database_errors_and_ctrl_c_are_one_line_too(tmp_path: Path, capsys,
                                                           monkeypatch) -> None:
    path = write_config(tmp_path, "sqlite:///x.db")

    def fail(_args: Any) -> int:
        raise IntegrityError("INSERT …", {}, Exception("UNIQUE constraint failed: x.id\nmore"))

    monkeypatch.setattr("gateway.cli.commands._run", fail)
    assert main(["--config", str(path), "events"]) == 1
    assert one_line(capsys.readouterr().err) == (
        f"gateway: database error at sqlite:///{tmp_path}/x.db: UNIQUE constraint failed: x.id")

    def interrupted(_args: Any) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr("gateway.cli.commands._run", interrupted)
    assert main(["--config", str(path), "events"]) == 130
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.slow
def test_a_database_problem_as_a_subprocess_has_no_traceback(tmp_path: Path) -> None:
    path = write_config(tmp_path, f"postgresql://u:pw@127.0.0.1:{free_port()}/gw")
    done = gateway("--config", str(path), "migrate")
    assert done.returncode == 1 and "connection refused" in one_line(done.stderr)
    assert "pw" not in done.stderr


def test_admin_commands_on_an_unmigrated_database_say_migrate(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty.db").touch()
    path = write_config(tmp_path, "sqlite:///empty.db")
    for command in (["events"], ["deliveries"], ["identities", "--user-id", "u"], ["worker"]):
        assert main(["--config", str(path), *command]) == 1
        assert one_line(capsys.readouterr().err) == (
            "gateway: the schema is not migrated: run gateway migrate")


@pytest.mark.parametrize("command", [["events"], ["deliveries"], ["identities", "--email", "e"],
                                     ["check"]])
def test_read_only_commands_never_create_a_database(tmp_path: Path, capsys,
                                                    command: list[str]) -> None:
    path = write_config(tmp_path, "sqlite:///data/gateway.db")
    assert main(["--config", str(path), *command]) == 1
    captured = capsys.readouterr()
    expected = f"no database at {tmp_path}/data/gateway.db: run gateway serve or gateway " \
               "migrate first"
    assert expected in captured.err + captured.out
    assert not (tmp_path / "data").exists()


def test_relative_sqlite_path_is_found_from_any_folder(tmp_path: Path, capsys,
                                                       monkeypatch) -> None:
    path = write_config(tmp_path, "sqlite:///gateway.db")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["--config", "../gateway.toml", "migrate"]) == 0
    assert (tmp_path / "gateway.db").is_file() and not list(elsewhere.iterdir())
    assert main(["--config", "../gateway.toml", "events"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("ID")
    assert path.exists()


@pytest.mark.slow
def test_a_closed_pipe_ends_quietly(setup) -> None:
    path, _, _ = setup
    process = subprocess.Popen([sys.executable, "-m", "gateway.cli", "--config", str(path),
                                "events"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # `| head -0`: the reader is gone before anything is written
    stderr = process.communicate(timeout=60)[1].decode()
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr


@pytest.mark.slow
def test_unknown_environment_variables_are_warned_about_once(setup) -> None:
    path, _, _ = setup
    done = gateway("--config", str(path), "events",
                   env={"GATEWAY_WORKER_CONCURENCY": "3"})
    assert done.returncode == 0
    assert done.stderr.splitlines() == [
        "gateway: warning: ignoring unknown environment variable GATEWAY_WORKER_CONCURENCY "
        "(did you mean GATEWAY_WORKER_CONCURRENCY?)"]


def test_check_reports_each_part(setup, tmp_path: Path, capsys) -> None:
    path, _, _ = setup
    path.chmod(0o600)  # else a WARN line says others can read it (test_file_modes.py)
    # a destination is enabled and no worker runs: its deliveries wait for nobody
    assert main(["--config", str(path), "check"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["ok", "config"], ["ok", "admin"], ["ok", "database"], ["ok", "schema"],
        ["FAIL", "delivery"], ["ok", "destination"], ["ok", "identity"]]
    assert lines[0].endswith(str(path.resolve())) and "hook (webhook)" in lines[5]
    assert "no delivery worker is running: deliveries to 1 enabled destination(s) wait" \
        in lines[4]
    engine = make_engine(from_path(path).database_url)
    beat = Heartbeat(engine, WORKER, every=1)
    beat.beat()
    assert main(["--config", str(path), "check"]) == 0
    assert "1 alive" in capsys.readouterr().out
    beat.remove()  # a clean stop removes the row: still a failure, not "none running, ok"
    assert main(["--config", str(path), "check"]) == 1
    assert re.search(r"FAIL delivery worker +no delivery worker is running",
                     capsys.readouterr().out)
    (tmp_path / "quiet").mkdir()
    quiet = write_config(tmp_path / "quiet", from_path(path).database_url)
    quiet.chmod(0o600)
    assert main(["--config", str(quiet), "check"]) == 0  # nothing to deliver: no worker needed
    assert re.search(r"ok +delivery worker +none running", capsys.readouterr().out)
    beat.beat(force=True)
    with engine.begin() as connection:  # that worker's last beat was a minute ago
        connection.execute(update(heartbeats).values(
            beat_at=datetime.now(UTC) - timedelta(minutes=1)))
    engine.dispose()
    assert main(["--config", str(path), "check"]) == 1
    assert re.search(r"FAIL delivery worker +no delivery worker heartbeat for 6\d s",
                     capsys.readouterr().out)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "empty.db").touch()
    bad = write_config(tmp_path / "other", "sqlite:///empty.db", destinations=[
        {"name": "hook", "type": "webhook", "settings": {"webhookUrl": "https://h.example/in",
                                                         "sharedSecre": "s"}}])
    assert main(["--config", str(bad), "check"]) == 1
    out = capsys.readouterr().out
    assert "FAIL schema" in out and "the schema is not migrated: run gateway migrate" in out
    assert "FAIL destination hook (webhook)" in out
    assert "unknown setting 'sharedSecre' (did you mean 'sharedSecret'?)" in out
    assert main(["--config", str(tmp_path / "none.toml"), "check"]) == 1
    assert capsys.readouterr().out.startswith("FAIL config")


def test_one_event_and_one_delivery_as_readable_trees(setup, capsys) -> None:
    path, _, _ = setup
    code, out = run(capsys, path, "deliveries", "--state", "dead", "--json")
    [dead] = json.loads(out)["data"]
    code, out = run(capsys, path, "events", str(dead["event_id"]))
    lines = out.splitlines()
    assert code == 0 and lines[0] == f"event {dead['event_id']}: track 'Bought' from source web"
    assert "  payload:" in lines and '      "event": "Bought",' in lines
    assert f"    delivery {dead['id']} to hook: dead" in lines
    assert any(line.startswith("        #1  ") and "  400  " in line for line in lines)
    code, out = run(capsys, path, "deliveries", str(dead["id"]))
    lines = out.splitlines()
    assert code == 0 and lines[0] == f"delivery {dead['id']} to hook: dead"
    assert lines[1].split() == ["event_id", str(dead["event_id"])]
    assert "  attempts: 1" in lines and '        response: {"error": "no"}' in lines
    code, out = run(capsys, path, "deliveries", str(dead["id"]), "--json")
    assert json.loads(out)["attempts"][0]["status"] == 400
    code, _ = run(capsys, path, "deliveries", "999999")
    assert code == 1


def test_replay_says_what_it_did(setup, capsys) -> None:
    path, _, _ = setup
    code, out = run(capsys, path, "replay", "hook", "--user-id", "u1", "--dry-run")
    assert code == 0
    assert out.strip() == "would queue 2 deliveries to hook (dry run; nothing queued)"
    code, out = run(capsys, path, "replay", "hook", "--type", "identify")
    assert code == 0
    assert re.fullmatch(r"queued 1 delivery to hook \(replay [0-9a-f]{32}\)", out.strip())


def test_admin_replay_reads_json_whatever_the_content_type(database_url: str) -> None:
    app = create_app(from_mapping({"database_url": database_url, "admin_token": ADMIN_TOKEN,
                                   "destinations": [{"name": "hook", "type": "console"}]}))
    client = app.test_client()
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    answer = client.post("/admin/v1/replay", data='{"destination": "hook", "dry_run": true}',
                         headers={**auth, "Content-Type": "text/plain"})
    assert answer.status_code == 200 and answer.get_json()["matched"] == 0
    answer = client.post("/admin/v1/replay", data="destination=hook", headers=auth)
    assert answer.status_code == 400
    app.extensions["gateway.engine"].dispose()
