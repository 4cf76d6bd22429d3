"""Transformations in a real `gateway serve` (gunicorn workers and the delivery worker as
processes), on SQLite and PostgreSQL: the module sits beside the config file, as an operator
keeps it; HTTP in, a stand-in destination out, /metrics after."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests import conftest
from tests.conftest import ADMIN_TOKEN, WRITE_KEY, LiveGateway
from tests.helpers import basic, stored_payloads, wait_until_finished
from tests.standin import StandIn

pytestmark = pytest.mark.slow  # `gateway serve` with its delivery worker

MODULE = '''\
def mask(event, ctx):
    card = (event.get("properties") or {}).get("card")
    if card:
        event["properties"]["card"] = "****" + card[-4:]
    return event

def split(event, ctx):
    items = (event.get("properties") or {}).get("items")
    if not items:
        return event
    return [{**event, "event": "Item", "properties": item} for item in items]

def refuse_internal(event, ctx):
    if (event.get("properties") or {}).get("internal"):
        raise RuntimeError("internal events must not leave")
    return event
'''
CARD = "4111111111111111"
CONFIG = """\
database_url = "{database_url}"
admin_token = "{admin_token}"

[worker]
poll_interval_ms = 50

[[transformations]]
name = "mask"
function = "acme_live_transforms:mask"

[[transformations]]
name = "split"
function = "acme_live_transforms:split"

[[transformations]]
name = "refuse-internal"
function = "acme_live_transforms:refuse_internal"

[[sources]]
name = "web"
write_key = "{write_key}"
transformations = ["mask"]

[[destinations]]
name = "hook"
type = "webhook"
endpoint = "{endpoint}"
transformations = ["refuse-internal", "split"]
[destinations.settings]
webhookUrl = "https://hooks.example/in"
"""


def test_transformations_in_gateway_serve(database_url: str, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "acme_live_transforms.py").write_text(MODULE)
    hook = StandIn()
    text = CONFIG.format(database_url=database_url, admin_token=ADMIN_TOKEN,
                         write_key=WRITE_KEY, endpoint=hook.url)
    # the suite's writer knows no [[transformations]]: this test writes its file as a person would
    monkeypatch.setattr(conftest, "write_toml", lambda path, raw: path.write_text(text))
    gateway = LiveGateway(tmp_path, {"database_url": database_url}, delivery_worker=True)
    try:
        batch = [
            {"type": "track", "userId": "u1", "event": "Paid", "messageId": "paid",
             "properties": {"card": CARD}},
            {"type": "track", "userId": "u1", "event": "Order", "messageId": "order",
             "properties": {"items": [{"sku": "A"}, {"sku": "B"}]}},
            {"type": "track", "userId": "u1", "event": "Ping", "messageId": "internal",
             "properties": {"internal": True}},
        ]
        answer = requests.post(gateway.url + "/v1/batch", json={"batch": batch},
                               headers=basic(WRITE_KEY), timeout=10)
        assert answer.status_code == 200 and answer.json() == {"success": True}

        from gateway.store.db import make_engine
        engine = make_engine(database_url)
        try:
            stored = {p["messageId"]: p for p in stored_payloads(engine)}
            assert stored["paid"]["properties"]["card"] == "****1111"  # never stored unmasked
            rows = {r["event"]: r for r in wait_until_finished(engine, expected=3)}
        finally:
            engine.dispose()
        assert rows["Paid"]["state"] == "delivered" and rows["Order"]["state"] == "delivered"
        assert rows["Ping"]["state"] == "dead"
        assert "RuntimeError: internal events must not leave" in rows["Ping"]["last_error"]
        assert "acme_live_transforms.py:" in rows["Ping"]["last_error"]

        received = [(r.json["event"], r.json["properties"]) for r in hook.requests]
        assert received == [("Paid", {"card": "****1111"}), ("Item", {"sku": "A"}),
                            ("Item", {"sku": "B"})]
        assert CARD.encode() not in b"".join(r.body for r in hook.requests)

        metrics = requests.get(gateway.url + "/metrics", timeout=10,
                               headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).text
        assert 'gateway_transformation_seconds_count{transformation="mask"} 3.0' in metrics
    finally:
        gateway.stop()
        hook.close()
