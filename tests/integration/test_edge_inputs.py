"""Regression tests for inputs the fuzzer (tests/property/test_fuzz.py) found failing: each
used to answer 500, or 503 on PostgreSQL only. Both databases must now answer alike."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from gateway import create_app, messages
from gateway.config import from_mapping
from tests.conftest import ADMIN_TOKEN, POSTGRES_URL, WRITE_KEY, base_config, pg_schema
from tests.helpers import basic, stored_events

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
TRACK = {"type": "track", "userId": "u1", "event": "Valid"}


def post(client, path: str, body: Any):
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return client.post(path, data=data, headers={**basic(WRITE_KEY),
                                                 "Content-Type": "application/json"})


def admin(client, path: str, **params: str):
    return client.get(path, query_string=params, headers=ADMIN)


def cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


# Times at the calendar's edges --------------------------------------------------------------

EDGE_TIMES = {
    "original +14:00 in year 1": {"originalTimestamp": "0001-01-01T00:00:00+14:00"},
    "timestamp -00:01 in year 9999": {"timestamp": "9999-12-31T23:59:59-00:01"},
    "sentAt year 1, original year 9999": {"sentAt": "0001-01-01T00:00:00Z",
                                          "originalTimestamp": "9999-12-31T23:59:59Z"},
    "sentAt year 9999, original year 1": {"sentAt": "9999-12-31T23:59:59Z",
                                          "originalTimestamp": "0001-01-01T00:00:00Z"},
    "explicit timestamp on year 1's first day": {"timestamp": "0001-01-01T12:00:00Z",
                                                 "originalTimestamp": "2024-01-01T00:00:00Z"},
}


@pytest.mark.parametrize("times", EDGE_TIMES.values(), ids=EDGE_TIMES.keys())
def test_edge_times_fall_back_to_received_at(client, engine, times: dict[str, str]) -> None:
    response = post(client, "/v1/batch", {"batch": [{**TRACK, "messageId": "edge", **times},
                                                    {**TRACK, "messageId": "ok"}]})
    assert response.status_code == 200 and response.get_json() == {"success": True}
    rows = {row["message_id"]: row for row in stored_events(engine)}
    assert set(rows) == {"edge", "ok"}
    edge = rows["edge"]
    assert edge["timestamp"] == edge["received_at"]
    for name in ("originalTimestamp", "sentAt"):  # the raw values are kept
        if name in times:
            assert edge["payload"][name] == times[name]


def test_a_single_call_with_an_edge_time_is_stored(client, engine) -> None:
    edge = {**TRACK, "originalTimestamp": "0001-01-01T00:00:00+14:00"}
    response = post(client, "/v1/track", edge)
    assert response.status_code == 200
    [row] = stored_events(engine)
    assert row["timestamp"] == row["received_at"]


def test_early_years_are_formatted_with_four_digits(client, engine) -> None:
    assert post(client, "/v1/track", {**TRACK, "timestamp": "0001-01-02T00:00:00Z"}
                ).status_code == 200
    [row] = stored_events(engine)
    assert row["payload"]["timestamp"] == "0001-01-02T00:00:00.000Z"
    assert row["timestamp"] == datetime(1, 1, 2, tzinfo=UTC)


def test_parse_time_treats_times_without_a_utc_equivalent_as_absent() -> None:
    assert messages.parse_time("0001-01-01T00:00:00+14:00") is None
    assert messages.parse_time("9999-12-31T23:59:59-00:01") is None
    assert messages.parse_time("0001-01-01T00:00:00Z") == datetime(1, 1, 1, tzinfo=UTC)


@pytest.mark.postgres
def test_postgresql_west_of_utc_reads_back_the_earliest_times(tmp_path) -> None:
    """A session TimeZone west of UTC reads year 1 as 1 BC, which psycopg cannot load: an event
    (and a profile's first_seen) must never be stored that early."""
    if not POSTGRES_URL:
        pytest.skip("GATEWAY_TEST_POSTGRES_URL is not set")
    with pg_schema() as url:
        app = create_app(from_mapping(base_config(url + "%20-cTimeZone%3DAmerica/New_York")))
        client = app.test_client()
        try:
            for when in ("0001-01-01T00:00:00Z", "0001-01-01T23:59:59Z"):
                response = post(client, "/v1/identify", {"userId": "u1", "timestamp": when,
                                                         "traits": {"plan": "pro"}})
                assert response.status_code == 200
            assert admin(client, "/admin/v1/events").status_code == 200
            assert admin(client, "/admin/v1/identities", user_id="u1").status_code == 200
        finally:
            app.extensions["gateway.engine"].dispose()


# Numbers -------------------------------------------------------------------------------------

def test_numbers_past_64_bits(client, engine) -> None:
    body = (b'{"type": "track", "userId": 18446744073709551616,'
            b' "anonymousId": -9223372036854775809, "event": "E",'
            b' "properties": {"a": 18446744073709551615, "b": -0.0, "c": 1e308}}')
    assert post(client, "/v1/track", body).status_code == 200
    [row] = stored_events(engine)
    assert row["user_id"] == "18446744073709551616"
    assert row["payload"]["properties"]["a"] == 18446744073709551615
    response = post(client, "/v1/track", b'{"userId": "u", "event": "E", "properties": 1e400}')
    assert response.status_code == 400 and response.get_json()["code"] == "invalid_json"
