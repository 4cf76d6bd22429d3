"""SDK → `gateway serve` (HTTP + delivery worker, as a user runs it) → stand-in destination."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest
from segment.analytics import Client

from tests.conftest import ADMIN_TOKEN, WRITE_KEY, LiveGateway
from tests.standin import StandIn

pytestmark = pytest.mark.slow  # a real SDK flushes to `gateway serve`

HOOK_KEY = "e2e-hook-key"


def test_sdk_events_arrive_at_the_destination(database_url: str, tmp_path: Path) -> None:
    standin = StandIn()
    raw = {
        "database_url": database_url, "admin_token": ADMIN_TOKEN,
        "sources": [{"name": "web", "write_key": WRITE_KEY}],
        "destinations": [{"name": "hook", "type": "webhook", "endpoint": standin.url,
                          "settings": {"webhookUrl": "https://hooks.example/segment",
                                       "apiKey": HOOK_KEY}}],
        "worker": {"poll_interval_ms": 50},
    }
    gateway = LiveGateway(tmp_path, raw, delivery_worker=True)
    try:
        client = Client(WRITE_KEY, host=gateway.url, sync_mode=True, max_retries=0)
        client.identify("user-1", {"email": "a@example.com"})
        client.track("user-1", "Order Completed", {"revenue": 9.99})
        client.page("user-1", "Docs", "Tracking API", {"url": "https://example.com/docs"})
        deadline = time.monotonic() + 30
        while len(standin.requests) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [r.json["type"] for r in standin.requests] == ["identify", "track", "page"]
        track = standin.requests[1]
        assert track.path == "/segment" and track.method == "POST"
        assert track.headers["Authorization"] == "Basic " + base64.b64encode(
            f"{HOOK_KEY}:".encode()).decode()
        assert track.json["event"] == "Order Completed"
        assert track.json["properties"] == {"revenue": 9.99}
        assert track.json["receivedAt"] and track.json["messageId"]
        assert "writeKey" not in track.json
        assert HOOK_KEY not in gateway.log_text()
    finally:
        gateway.stop()
        standin.close()
