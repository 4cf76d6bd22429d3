"""The admin commands of the `gateway` CLI, run as a user runs them, on real stored data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway import create_app
from gateway.cli import main
from gateway.config import from_mapping
from gateway.delivery.worker import Worker
from tests.conftest import WRITE_KEY, write_toml
from tests.helpers import basic
from tests.integration.test_worker import drain
from tests.standin import Answer, StandIn


@pytest.fixture
def setup(database_url: str, tmp_path: Path):
    standin = StandIn()
    standin.answer_for = lambda r: Answer(400, {"error": "no"}) if r.json["messageId"] == "m-bad" \
        and [q.json["messageId"] for q in standin.requests].count("m-bad") == 1 else None
    raw = {"database_url": database_url, "admin_token": "t",
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
