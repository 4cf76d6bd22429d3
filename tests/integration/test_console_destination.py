"""The `console` destination logs each event as one record whose event values cannot forge a log
line or reach the terminal as control sequences (L5)."""

from __future__ import annotations

import json
import logging

import pytest

from gateway import create_app
from gateway.config import from_mapping
from gateway.delivery.worker import Worker
from tests.conftest import ADMIN_TOKEN, WRITE_KEY
from tests.helpers import RAW, basic, drain, stored_deliveries

FORGED = "m-1\n2026-12-06 04:00:00,000 ERROR gateway: admin token is hunter2\x1b[1A\u2028\x85!"


@pytest.mark.parametrize("pretty", [False, True])
def test_a_hostile_message_id_stays_inside_its_log_record(
    database_url: str, caplog: pytest.LogCaptureFixture, pretty: bool
) -> None:
    config = from_mapping(
        {
            "database_url": database_url,
            "admin_token": ADMIN_TOKEN,
            "sources": [{"name": "web", "write_key": WRITE_KEY}],
            "destinations": [{"name": "dev", "type": "console", "settings": {"pretty": pretty}}],
        }
    )
    app = create_app(config)
    worker = Worker(app.extensions["gateway.engine"], config)
    try:
        message = {
            "userId": "u1",
            "event": f"Bought\r{FORGED}",
            "messageId": FORGED,
            "type": "track",
            "properties": {"note": "\u202e\x9b2J"},
        }
        assert (
            app.test_client().post("/v1/track", json=message, headers=basic(WRITE_KEY)).status_code
            == 200
        )
        with caplog.at_level(logging.INFO, logger="gateway.console"):
            drain(worker)
        assert [d["state"] for d in stored_deliveries(worker.engine)] == ["delivered"]
        [record] = [r for r in caplog.records if r.name == "gateway.console"]
        text = record.getMessage()
        layout = "\n" if pretty else ""  # pretty JSON is indented over lines by design
        assert {c for c in text if c in RAW and c not in layout} == set()
        head, _, body = text.partition(" {")
        assert head == (
            "console destination: track m-1\\n2026-12-06 04:00:00,000 ERROR "
            "gateway: admin token is hunter2\\x1b[1A\\u2028\\x85!"
        )
        assert json.loads("{" + body)["messageId"] == FORGED  # the JSON still says the truth
    finally:
        worker.close()
        app.extensions["gateway.engine"].dispose()
