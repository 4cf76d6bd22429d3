"""`gateway plan check`, `gateway plan test` and `gateway violations`, with a plan file beside
the config (its path relative to the config's folder) and a real database on both backends."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from gateway import create_app
from gateway.cli.commands import main
from gateway.config import load
from gateway.plans import record
from tests.conftest import WRITE_KEY, base_config, write_toml
from tests.helpers import basic

PLAN = Path(__file__).resolve().parents[1] / "fixtures" / "plans" / "segment_export.json"
LIBRARY = {"library": {"name": "analytics-python", "version": "2.3.0"}}


def sample(path: Path, *messages: Any) -> Path:
    path.write_text("\n".join(m if isinstance(m, str) else json.dumps(m) for m in messages)
                    + "\n")
    return path


def test_plan_check_lists_the_rules(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "check", str(PLAN)]) == 0
    out = capsys.readouterr().out
    assert "10 rules compiled (1 common, 1 group, 1 identify, 7 track)" in out
    assert "  track Order Completed" in out


def test_plan_check_refuses_a_broken_plan(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "plan.json"
    broken.write_text(json.dumps({"rules": {"events": [
        {"name": "A", "rules": {"properties": {"properties": {"required": "x"}}}}]}}))
    assert main(["plan", "check", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "rules.events[0] ('A'): not a valid JSON Schema at /properties/properties/required" \
        in err and err.count("\n") == 1


def test_plan_test_reports_each_message(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    events = sample(
        tmp_path / "sample.ndjson",
        {"type": "track", "event": "Signed Up", "userId": "u", "messageId": "ok",
         "context": LIBRARY, "properties": {"method": "github"}},
        {"type": "track", "event": "Signed Up", "userId": "u", "messageId": "bad",
         "context": LIBRARY, "properties": {"method": "fax", "\x1b[31mred": 1}},
        "{not json",
        {"type": "track", "event": "Banner Clicked", "userId": "u", "messageId": "new",
         "context": LIBRARY})
    assert main(["plan", "test", str(PLAN), "--events", str(events)]) == 1
    out = capsys.readouterr().out
    assert "line 1: fits: track Signed Up (ok)" in out
    assert "line 2: flagged: track Signed Up (bad)" in out
    assert "Unknown-Violation: /properties/method must be equal to one of the allowed values" \
        in out
    assert "line 3: invalid: not JSON" in out
    assert "line 4: allowed: track Banner Clicked (new)" in out
    assert "\x1b" not in out  # a sender's escape sequence never reaches the terminal
    assert out.rstrip().endswith("1 allowed, 1 fits, 1 flagged, 1 invalid")
    assert main(["plan", "test", str(PLAN), "--events", str(events), "--json",
                 "--violations", "drop_event", "--unplanned-events", "drop"]) == 1
    verdicts = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [v["verdict"] for v in verdicts] == ["fits", "dropped", "invalid", "dropped"]
    only_fits = sample(tmp_path / "fits.ndjson", {"type": "track", "event": "Signed Up",
                                                  "userId": "u", "context": LIBRARY,
                                                  "properties": {"method": "email"}})
    assert main(["plan", "test", str(PLAN), "--events", str(only_fits)]) == 0


def test_violations_from_a_config_with_a_plan_file(
        database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(PLAN, tmp_path / "web-plan.json")
    raw = base_config(database_url)
    raw["sources"][0]["tracking_plan"] = "web"
    path = tmp_path / "gateway.toml"
    write_toml(path, raw)
    with path.open("a") as toml:
        toml.write('[[tracking_plans]]\nname = "web"\nfile = "web-plan.json"\n')
    app = create_app(load(path, env={}))
    response = app.test_client().post("/v1/batch", headers=basic(WRITE_KEY), json={"batch": [
        {"type": "track", "event": "Product Added", "userId": "u", "messageId": f"m-{n}",
         "context": LIBRARY, "properties": {"product_id": "p", "quantity": "2"}}
        for n in range(3)]})
    assert response.status_code == 200
    record.flush(app.extensions["gateway.engine"])  # the record is written in the background
    app.extensions["gateway.engine"].dispose()
    assert main(["--config", str(path), "violations", "--json", "--source", "web"]) == 0
    found = json.loads(capsys.readouterr().out)
    [row] = found["violations"]
    assert (row["event"], row["violation_type"], row["count"]) == (
        "Product Added", "Datatype-Mismatch", 3)
    assert main(["--config", str(path), "violations", "--event", "Product Added"]) == 0
    out = capsys.readouterr().out
    assert "Product Added" in out and "3 violations since" in out
    assert main(["--config", str(path), "violations", "--since", "soon"]) == 2
    capsys.readouterr()
    main(["--config", str(path), "check"])
    assert "tracking plan 'web': 10 rules, 6 track events; unplanned events: allow; " \
        "violations: flag" in capsys.readouterr().out
