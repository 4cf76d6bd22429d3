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


# Admin API: ids, cursors, times --------------------------------------------------------------

BIG = "99999999999999999999999"


@pytest.mark.parametrize("path", [
    f"/admin/v1/events/{BIG}", "/admin/v1/events/9223372036854775808", "/admin/v1/events/0",
    "/admin/v1/events/" + "9" * 5000,
])
def test_event_ids_outside_bigint_are_400(client, path: str) -> None:
    response = client.get(path, headers=ADMIN)
    assert response.status_code == 400 and response.get_json()["code"] == "invalid_id"


@pytest.mark.parametrize("ident", [BIG, "9223372036854775808", "0"])
def test_delivery_ids_outside_bigint_are_400(client, ident: str) -> None:
    response = client.post(f"/admin/v1/deliveries/{ident}/retry", headers=ADMIN)
    assert response.status_code == 400 and response.get_json()["code"] == "invalid_id"


def test_well_formed_ids_that_do_not_exist_are_404(client) -> None:
    for path in ("/admin/v1/events/9223372036854775807", "/admin/v1/events/1"):
        assert client.get(path, headers=ADMIN).status_code == 404
    assert client.post("/admin/v1/deliveries/9223372036854775807/retry",
                       headers=ADMIN).status_code == 404
    assert client.get("/admin/v1/events/-1", headers=ADMIN).status_code == 404  # no such route


@pytest.mark.parametrize("path,params", [
    ("/admin/v1/events", {"cursor": cursor(f"id:{BIG}")}),
    ("/admin/v1/events", {"cursor": cursor("id:9223372036854775808")}),
    ("/admin/v1/events", {"cursor": cursor("id:0")}),
    ("/admin/v1/events", {"cursor": cursor("id:-1")}),
    ("/admin/v1/events", {"cursor": cursor("id:" + "9" * 5000)}),
    ("/admin/v1/events", {"cursor": "é"}),
    ("/admin/v1/deliveries", {"cursor": cursor(f"id:{BIG}")}),
    ("/admin/v1/events", {"since": "0001-01-01T00:00:00+14:00"}),
    ("/admin/v1/events", {"until": "9999-12-31T23:59:59-00:01"}),
    ("/admin/v1/deliveries", {"since": "0001-01-01T00:00:00+14:00"}),
    ("/admin/v1/deliveries", {"event_id": BIG}),
    ("/admin/v1/deliveries", {"event_id": "-1"}),
    ("/admin/v1/events", {"limit": BIG}),
    ("/admin/v1/events", {"limit": "9" * 5000}),
])
def test_bad_admin_parameters_are_400(client, path: str, params: dict[str, str]) -> None:
    response = admin(client, path, **params)
    assert response.status_code == 400 and response.get_json()["code"] == "invalid_query"


def test_edge_but_valid_admin_parameters_are_200(client) -> None:
    assert post(client, "/v1/track", TRACK).status_code == 200
    assert len(admin(client, "/admin/v1/events", since="0001-01-01T00:00:00Z",
                     until="9999-12-31T23:59:59Z").get_json()["data"]) == 1
    assert admin(client, "/admin/v1/events",
                 cursor=cursor("id:9223372036854775807")).status_code == 200
    assert admin(client, "/admin/v1/deliveries",
                 event_id="9223372036854775807").get_json()["data"] == []


def test_replay_filters_no_database_can_hold_are_400(client) -> None:
    body = b'{"destination": "cio", "filter": {"user_id": "\\ud800"}, "dry_run": true}'
    response = client.post("/admin/v1/replay", data=body,
                           headers={**ADMIN, "Content-Type": "application/json"})
    assert response.status_code == 400 and response.get_json()["code"] == "invalid_query"


# NUL characters ------------------------------------------------------------------------------

def test_nul_is_stripped_from_every_string_and_key(client, engine) -> None:
    body = (b'{"type": "track", "userId": "u\\u00001", "event": "Order\\u0000 Completed",'
            b' "properties": {"k\\u0000": ["v\\u0000", {"\\u0000n": "\\u0000"}]},'
            b' "context": {"traits": {"email": "a\\u0000@example.com"}}}')
    response = post(client, "/v1/track", body)
    assert response.status_code == 200
    [row] = stored_events(engine)
    assert (row["user_id"], row["event"]) == ("u1", "Order Completed")
    assert row["payload"]["properties"] == {"k": ["v", {"n": ""}]}
    assert row["payload"]["context"]["traits"] == {"email": "a@example.com"}
    found = admin(client, "/admin/v1/events", user_id="u\x001").get_json()["data"]
    assert [e["user_id"] for e in found] == ["u1"]


def test_a_nul_message_does_not_cost_its_batch(client, engine) -> None:
    body = (b'{"batch": [{"type": "identify", "userId": "\\u0000a", "traits": {"x": "\\u0000"}},'
            b' {"type": "track", "userId": "u2", "event": "Valid"},'
            b' {"type": "track", "userId": "\\u0000", "event": "No id left"}]}')
    response = post(client, "/v1/batch", body)
    assert response.status_code == 200
    assert [r["code"] for r in response.get_json()["rejected"]] == ["no_user_anon_id"]
    assert [r["user_id"] for r in stored_events(engine)] == ["a", "u2"]


def test_nul_in_the_pixel_query_is_stripped(client, engine) -> None:
    response = client.get(f"/pixel/v1/track?writeKey={WRITE_KEY}&userId=u%001&event=E%00"
                          "&properties.k%00=v%00")
    assert response.status_code == 200 and response.mimetype == "image/gif"
    [row] = stored_events(engine)
    assert (row["user_id"], row["event"], row["payload"]["properties"]) == ("u1", "E",
                                                                            {"k": "v"})


def test_bodies_without_a_nul_escape_are_not_walked(client, monkeypatch) -> None:
    def fail(value: Any) -> Any:
        raise AssertionError("walked a body without \\u0000")

    monkeypatch.setattr("gateway.http.tracking.strip_nul", fail)
    assert post(client, "/v1/track", {**TRACK, "properties": {"a": "\\u0001"}}
                ).status_code == 200


def test_admin_filters_ignore_nul(client) -> None:
    assert admin(client, "/admin/v1/events", source="\x00").status_code == 200
    assert admin(client, "/admin/v1/deliveries", state="dead\x00").status_code == 200
    # a value of NUL alone is an empty one
    assert admin(client, "/admin/v1/identities", email="\x00").status_code == 400


# Strings longer than the columns -------------------------------------------------------------

def test_long_ids_and_emails_are_linked_on_every_database(client, engine) -> None:
    user, anonymous, email = "u" * 600, "a" * 700, "e" * 990 + "@Example.com"
    response = post(client, "/v1/identify", {"userId": user, "anonymousId": anonymous,
                                             "traits": {"email": email}})
    assert response.status_code == 200
    # another id sharing the first 500 characters is another profile
    assert post(client, "/v1/identify", {"userId": "u" * 599 + "v"}).status_code == 200
    profile = admin(client, "/admin/v1/identities", user_id=user).get_json()
    assert {k["kind"] for k in profile["keys"]} == {"userId", "anonymousId", "email"}
    assert all(len(k["value"]) <= 500 for k in profile["keys"])
    assert admin(client, "/admin/v1/identities", email=email.upper()).get_json()["id"] == \
        profile["id"]
    assert admin(client, "/admin/v1/identities", user_id="u" * 599 + "v").get_json()["id"] != \
        profile["id"]
    found = admin(client, "/admin/v1/events", user_id=user).get_json()["data"]
    assert len(found) == 1 and stored_events(engine)[0]["payload"]["userId"] == user
    assert post(client, "/v1/alias", {"userId": "u2", "previousId": anonymous}).status_code == 200
    merged = admin(client, "/admin/v1/identities", user_id="u2").get_json()
    assert merged["id"] == profile["id"]


def test_message_ids_never_exceed_the_column(database_url: str) -> None:
    config = from_mapping(base_config(database_url, limits={"max_message_id_length": 1000}))
    app = create_app(config)
    try:
        response = post(app.test_client(), "/v1/track", {**TRACK, "messageId": "m" * 300})
        assert response.status_code == 400
        assert response.get_json()["message"] == "messageId: at most 255 characters"
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
