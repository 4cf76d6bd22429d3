"""The pixel API enforces `max_json_depth` like every other route, and whatever it is sent it
answers the GIF: never a 500, never a traceback in the log (L4)."""

from __future__ import annotations

import time

import pytest
import requests
from sqlalchemy import select

from gateway.store.db import make_engine
from gateway.store.models import rejections
from tests.conftest import WRITE_KEY, LiveGateway
from tests.helpers import stored_events

pytestmark = pytest.mark.slow  # `gateway serve`


def nested_query(depth: int) -> str:
    """A pixel query whose message nests `depth` levels (the message itself is level 1)."""
    return "properties." + ".".join(f"k{n}" for n in range(depth - 1)) + "=deep"


def pixel(gateway: LiveGateway, query: str, user: str) -> requests.Response:
    return requests.get(
        f"{gateway.url}/pixel/v1/track?writeKey={WRITE_KEY}&userId={user}&event=Open&{query}",
        timeout=10,
    )


def test_depth_is_enforced_and_every_answer_is_the_gif(live_gateway: LiveGateway) -> None:
    answers = {
        depth: pixel(live_gateway, nested_query(depth), f"u{depth}") for depth in (64, 65, 100, 300)
    }
    for depth, response in answers.items():
        assert response.status_code == 200, (depth, response.status_code, response.text[:200])
        assert response.headers["Content-Type"] == "image/gif"
        assert response.content.startswith(b"GIF89a")
    engine = make_engine(live_gateway.database_url)
    try:
        assert {e["user_id"] for e in stored_events(engine)} == {"u64"}  # at the limit: kept
        reasons: list[str] = []
        for _ in range(50):  # refusals are written off the request path
            with engine.connect() as connection:
                reasons = connection.execute(select(rejections.c.reason)).scalars().all()
            if len(reasons) >= 3:
                break
            time.sleep(0.1)
        assert reasons == ["too_deep"] * 3
    finally:
        engine.dispose()
    log = live_gateway.log_text()
    assert "Traceback" not in log and "Internal Server Error" not in log
