"""A tracking plan through `gateway serve` and its delivery worker, as a user runs it: the plan
file beside the config, a trimmed and flagged event reaching a webhook with
`context.violationErrors`, an unplanned event dropped with 200, and the violations read over
HTTP from the admin API."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import requests

from gateway.store.db import make_engine
from tests import conftest
from tests.conftest import ADMIN_TOKEN, WRITE_KEY, LiveGateway
from tests.helpers import basic, wait_for, wait_until_finished
from tests.standin import StandIn

pytestmark = pytest.mark.slow  # `gateway serve` with its delivery worker

PLAN = Path(__file__).resolve().parents[1] / "fixtures" / "plans" / "segment_export.json"
LIBRARY = {"library": {"name": "analytics.js", "version": "5.2.0"}}


def test_a_plan_end_to_end(database_url: str, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(PLAN, tmp_path / "web-plan.json")
    write = conftest.write_toml

    def with_plans(path: Path, raw: dict[str, Any]) -> None:
        write(path, raw)
        with path.open("a") as toml:
            toml.write('[[tracking_plans]]\nname = "web"\nfile = "web-plan.json"\n')

    monkeypatch.setattr(conftest, "write_toml", with_plans)
    hook = StandIn()
    raw = {"database_url": database_url, "admin_token": ADMIN_TOKEN,
           "worker": {"poll_interval_ms": 50},
           "sources": [{"name": "web", "write_key": WRITE_KEY, "tracking_plan": "web",
                        "unplanned_events": "drop", "violations": "drop_properties"}],
           "destinations": [{"name": "hook", "type": "webhook", "endpoint": hook.url,
                             "settings": {"webhookUrl": "https://hooks.example/in"}}]}
    gateway = LiveGateway(tmp_path, raw, delivery_worker=True)
    engine = make_engine(database_url)
    try:
        batch = [
            {"type": "track", "event": "Signed Up", "userId": "u1", "messageId": "fits",
             "context": LIBRARY, "properties": {"method": "github"}},
            {"type": "track", "event": "Signed Up", "userId": "u1", "messageId": "trimmed",
             "context": LIBRARY, "properties": {"method": "github", "card": "4111-SECRET"}},
            {"type": "track", "event": "Banner Clicked", "userId": "u1",
             "messageId": "unplanned", "context": LIBRARY},
        ]
        answer = requests.post(gateway.url + "/v1/batch", json={"batch": batch},
                               headers=basic(WRITE_KEY), timeout=10)
        assert answer.status_code == 200 and answer.json() == {"success": True}
        rows = wait_until_finished(engine, expected=2)
        assert {r["state"] for r in rows} == {"delivered"}
        received = {r.json["messageId"]: r.json for r in hook.requests}
        assert set(received) == {"fits", "trimmed"}
        assert "violationErrors" not in received["fits"]["context"]
        assert received["trimmed"]["properties"] == {"method": "github"}
        assert received["trimmed"]["context"]["violationErrors"] == [{
            "type": "Additional-Properties", "message": "must NOT have additional properties",
            "meta": {"instancePath": "/properties", "additionalProperty": "card",
                     "schemaPath": "#/properties/properties/additionalProperties"}}]
        assert b"4111-SECRET" not in b"".join(r.body for r in hook.requests)

        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

        def counted() -> list[dict[str, Any]]:
            found = requests.get(gateway.url + "/admin/v1/violations", headers=admin,
                                 timeout=10).json()["violations"]
            return found if len(found) == 2 else []

        found = {v["violation_type"]: v for v in wait_for(counted, 10, "two violations")}
        assert found["Unplanned-Event"]["event"] == "Banner Clicked"
        assert found["Additional-Properties"]["example_message_id"] == "trimmed"
        why = requests.get(gateway.url + "/admin/v1/explain", headers=admin, timeout=10,
                           params={"message_id": "unplanned"}).json()
        assert why["outcome"] == "rejected"
        assert "unplanned_events = drop" in why["rejections"][0]["detail"]
    finally:
        engine.dispose()
        gateway.stop()
        hook.close()
