"""The tracking API's wire contract (docs/tracking-api.md), one test per MUST line.

These run the real app in-process on a real, migrated database (SQLite and PostgreSQL).
"""

from __future__ import annotations

import base64
import gzip
import http.client
from typing import Any

import orjson
import pytest

from gateway.config import from_mapping
from tests.conftest import OTHER_KEY, WRITE_KEY, base_config
from tests.helpers import basic, stored_deliveries, stored_events, stored_payloads

TRACK = {"type": "track", "event": "Order Completed", "userId": "u1"}


def post(client, path: str, body: Any, headers: dict[str, str] | None = None,
         key: str | None = WRITE_KEY, **kwargs: Any):
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    all_headers = {"Content-Type": "application/json", **(basic(key) if key else {}),
                   **(headers or {})}
    return client.post(path, data=data, headers=all_headers, **kwargs)


def assert_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["code"] == code
    assert isinstance(body["message"], str) and body["message"]


# §1 endpoints and path aliases ------------------------------------------------------------

SINGLE = {"identify": {}, "track": {"event": "Clicked"}, "page": {"name": "Home"},
          "screen": {"name": "Main"}, "group": {"groupId": "g1"}, "alias": {"previousId": "a0"}}


@pytest.mark.parametrize("path,kind", [(f"/v1/{k}", k) for k in SINGLE]
                         + [(f"/v1/{k[0]}", k) for k in SINGLE])
def test_single_call_paths_store_their_type(client, engine, path: str, kind: str) -> None:
    # the path fixes the type, whatever the body says (rudder-server overwrites it)
    response = post(client, path, {"type": "bogus", "userId": "u1", **SINGLE[kind]})
    assert response.status_code == 200
    assert response.get_json() == {"success": True}
    [row] = stored_events(engine)
    assert row["type"] == kind and row["payload"]["type"] == kind


@pytest.mark.parametrize("path", ["/v1/batch", "/v1/import", "/v1/b"])
def test_batch_paths(client, engine, path: str) -> None:
    response = post(client, path, {"batch": [TRACK, {**TRACK, "type": "identify"}]})
    assert response.status_code == 200
    assert [p["type"] for p in stored_payloads(engine)] == ["track", "identify"]


def test_beacon_batch_takes_the_key_from_the_query(client, engine) -> None:
    response = post(client, f"/beacon/v1/batch?writeKey={WRITE_KEY}", {"batch": [TRACK]},
                    key=None, headers={"Content-Type": "text/plain"})
    assert response.status_code == 200
    assert stored_events(engine)[0]["source"] == "web"


def test_client_telemetry_is_accepted_and_discarded(client, engine) -> None:
    response = client.post("/v1/m", data=b'{"series":[]}', headers={"Content-Type": "text/plain"})
    assert response.status_code == 200
    assert stored_events(engine) == []


def test_pixel_stores_query_fields_and_answers_a_gif(client, engine) -> None:
    response = client.get(f"/pixel/v1/track?writeKey={WRITE_KEY}&anonymousId=a1&event=Open"
                          "&properties.revenue=9")
    assert response.status_code == 200 and response.mimetype == "image/gif"
    [payload] = stored_payloads(engine)
    assert payload["event"] == "Open" and payload["anonymousId"] == "a1"
    assert payload["properties"] == {"revenue": "9"}


def test_pixel_answers_a_gif_even_when_the_key_is_wrong(client, engine) -> None:
    response = client.get("/pixel/v1/page?writeKey=nope&anonymousId=a1")
    assert response.status_code == 200 and response.mimetype == "image/gif"
    assert stored_events(engine) == []


@pytest.mark.parametrize("path", ["/v1/merge", "/v1/audiencelist", "/v1/webhook"])
def test_rudderstack_only_extras_are_not_found(client, path: str) -> None:
    assert_error(post(client, path, TRACK), 404, "not_found")


def test_wrong_method_is_a_json_405(client) -> None:
    assert_error(client.get("/v1/track"), 405, "method_not_allowed")


def test_health(client) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "ok"}


# §2 authentication ----------------------------------------------------------------------------

def test_basic_auth_username_is_the_key_and_the_password_is_ignored(client, engine) -> None:
    token = base64.b64encode(f"{OTHER_KEY}:whatever".encode()).decode()
    response = post(client, "/v1/track", TRACK, key=None,
                    headers={"Authorization": f"Basic {token}"})
    assert response.status_code == 200
    assert stored_events(engine)[0]["source"] == "server"


def test_basic_auth_without_a_colon_is_accepted(client, engine) -> None:
    token = base64.b64encode(WRITE_KEY.encode()).decode()
    response = post(client, "/v1/track", TRACK, key=None,
                    headers={"Authorization": f"Basic {token}"})
    assert response.status_code == 200
    assert [row["source"] for row in stored_events(engine)] == ["web"]


def test_write_key_in_the_body_is_used_and_not_stored(client, engine) -> None:
    response = post(client, "/v1/batch", {"batch": [TRACK], "writeKey": OTHER_KEY}, key=None)
    assert response.status_code == 200
    [row] = stored_events(engine)
    assert row["source"] == "server" and "writeKey" not in row["payload"]


def test_write_key_in_a_single_call_body(client, engine) -> None:
    response = post(client, "/v1/track", {**TRACK, "writeKey": WRITE_KEY}, key=None)
    assert response.status_code == 200
    assert "writeKey" not in stored_payloads(engine)[0]


def test_bearer_token_authenticates_by_the_body_write_key(client, engine) -> None:
    response = post(client, "/v1/batch", {"batch": [TRACK], "writeKey": WRITE_KEY}, key=None,
                    headers={"Authorization": "Bearer some-oauth-token"})
    assert response.status_code == 200
    assert [row["source"] for row in stored_events(engine)] == ["web"]


def test_write_key_as_query_parameter(client, engine) -> None:
    response = post(client, f"/v1/batch?writeKey={WRITE_KEY}", {"batch": [TRACK]}, key=None)
    assert response.status_code == 200
    assert [row["source"] for row in stored_events(engine)] == ["web"]


def test_missing_write_key_is_401(client, engine) -> None:
    assert_error(post(client, "/v1/batch", {"batch": [TRACK]}, key=None), 401,
                 "missing_write_key")
    assert stored_events(engine) == []


def test_unknown_write_key_is_401(client, engine) -> None:
    assert_error(post(client, "/v1/batch", {"batch": [TRACK]}, key="wk_nope"), 401,
                 "invalid_write_key")
    assert stored_events(engine) == []


def test_disabled_source_is_404(client, engine) -> None:
    assert_error(post(client, "/v1/batch", {"batch": [TRACK]}, key="wk_disabled"), 404,
                 "source_disabled")
    assert stored_events(engine) == []


def test_garbage_basic_credentials_are_401(client, engine) -> None:
    response = post(client, "/v1/track", TRACK, key=None,
                    headers={"Authorization": "Basic %%%not-base64"})
    assert_error(response, 401, "invalid_authorization")
    assert stored_events(engine) == []


# §3 content types, encoding, framing ----------------------------------------------------------

@pytest.mark.parametrize("content_type", ["text/plain", "application/json;charset=UTF-8",
                                          "application/x-www-form-urlencoded", None])
def test_body_is_json_whatever_the_content_type(client, engine, content_type) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/v1/batch", data=orjson.dumps({"batch": [TRACK]}),
                           headers={**basic(WRITE_KEY), **headers})
    assert response.status_code == 200
    assert len(stored_events(engine)) == 1


def test_gzip_body_as_rudder_node_sends_it(client, engine) -> None:
    body = gzip.compress(orjson.dumps({"batch": [TRACK]}))
    response = post(client, "/v1/batch", body, headers={
        "Content-Encoding": "gzip", "Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200
    assert stored_payloads(engine)[0]["event"] == "Order Completed"


def test_corrupt_gzip_is_400(client, engine) -> None:
    response = post(client, "/v1/batch", b"\x1f\x8b\x08\x00garbage",
                    headers={"Content-Encoding": "gzip"})
    assert_error(response, 400, "invalid_gzip")
    assert stored_events(engine) == []


def test_truncated_gzip_is_400(client, engine) -> None:
    body = gzip.compress(orjson.dumps({"batch": [TRACK]}))[:-12]
    assert_error(post(client, "/v1/batch", body, headers={"Content-Encoding": "gzip"}), 400,
                 "invalid_gzip")
    assert stored_events(engine) == []


def test_unknown_content_encoding_is_415(client, engine) -> None:
    assert_error(post(client, "/v1/batch", {"batch": [TRACK]},
                      headers={"Content-Encoding": "br"}), 415, "unsupported_encoding")
    assert stored_events(engine) == []


@pytest.mark.slow
def test_chunked_body_through_the_real_server(live_gateway) -> None:
    body = orjson.dumps({"batch": [TRACK]})
    connection = http.client.HTTPConnection("127.0.0.1", live_gateway.port, timeout=10)
    connection.putrequest("POST", "/v1/batch")
    for name, value in {**basic(WRITE_KEY), "Transfer-Encoding": "chunked",
                        "Content-Type": "text/plain"}.items():
        connection.putheader(name, value)
    connection.endheaders()
    for start in range(0, len(body), 16):
        piece = body[start:start + 16]
        connection.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
    connection.send(b"0\r\n\r\n")
    response = connection.getresponse()
    assert response.status == 200, response.read()
    assert orjson.loads(response.read()) == {"success": True}


# §4 responses ---------------------------------------------------------------------------------

@pytest.mark.parametrize("body,code", [
    (b"", "invalid_json"),
    (b"{not json", "invalid_json"),
    (b"[1, 2]", "invalid_json"),
    (b'"a string"', "invalid_json"),
    (b"\xff\xfe{}", "invalid_json"),
    (b"{}", "empty_batch"),
    (b'{"batch": []}', "empty_batch"),
    (b'{"batch": {"type": "track"}}', "invalid_batch"),
])
def test_request_level_problems_are_400_and_store_nothing(client, engine, body, code) -> None:
    assert_error(post(client, "/v1/batch", body), 400, code)
    assert stored_events(engine) == []


def test_success_is_exactly_200_with_json(client) -> None:
    response = post(client, "/v1/batch", {"batch": [TRACK]})
    assert response.status_code == 200
    assert response.mimetype == "application/json"


# §6 / §8 per-message validation ---------------------------------------------------------------

@pytest.mark.parametrize("message,code", [
    ({"type": "track", "event": "x"}, "no_user_anon_id"),
    ({"type": "track", "event": "x", "userId": None, "anonymousId": None}, "no_user_anon_id"),
    ({"type": "track", "event": "x", "userId": "  "}, "no_user_anon_id"),
    ({"type": "track", "userId": "u"}, "missing_field"),
    ({"type": "track", "userId": "u", "event": ""}, "invalid_field"),
    ({"type": "track", "userId": "u", "event": 5}, "invalid_field"),
    ({"type": "group", "userId": "u"}, "missing_field"),
    ({"type": "alias", "userId": "u"}, "missing_field"),
    ({"type": "alias", "anonymousId": "a", "previousId": "p"}, "missing_field"),
    ({"type": "alias", "userId": "u", "previousId": " "}, "missing_field"),
    ({"type": "merge", "userId": "u"}, "invalid_type"),
    ({"userId": "u"}, "invalid_type"),
    ({"type": "identify", "userId": {"id": 1}}, "invalid_field"),
    ({"type": "identify", "userId": True}, "invalid_field"),
    ({"type": "identify", "userId": "u", "traits": [1]}, "invalid_field"),
    ({"type": "track", "userId": "u", "event": "x", "properties": "no"}, "invalid_field"),
    ({"type": "track", "userId": "u", "event": "x", "context": 3}, "invalid_field"),
    ({"type": "track", "userId": "u", "event": "x", "messageId": "m" * 101}, "invalid_field"),
    ("not an object", "invalid_message"),
])
def test_a_bad_message_is_dropped_and_the_rest_kept(client, engine, message, code) -> None:
    response = post(client, "/v1/batch", {"batch": [TRACK, message, {**TRACK, "userId": "u2"}]})
    assert response.status_code == 200
    body = response.get_json()
    assert body["success"] is True
    [rejection] = body["rejected"]
    assert rejection["index"] == 1 and rejection["code"] == code and rejection["message"]
    assert [p["userId"] for p in stored_payloads(engine)] == ["u1", "u2"]


def test_a_batch_of_only_bad_messages_is_400(client, engine) -> None:
    response = post(client, "/v1/batch", {"batch": [{"type": "track", "userId": "u"}]})
    assert_error(response, 400, "missing_field")
    assert response.get_json()["rejected"][0]["index"] == 0
    assert stored_events(engine) == []


def test_a_bad_single_call_is_400(client, engine) -> None:
    assert_error(post(client, "/v1/track", {"userId": "u"}), 400, "missing_field")
    assert_error(post(client, "/v1/identify", {"traits": {}}), 400, "no_user_anon_id")
    assert stored_events(engine) == []


def test_strict_mode_rejects_the_whole_request(database_url, engine) -> None:
    from gateway import create_app

    app = create_app(from_mapping(base_config(database_url, limits={"strict_batches": True})))
    response = post(app.test_client(), "/v1/batch", {"batch": [TRACK, {"type": "track"}]})
    assert_error(response, 400, "missing_field")
    assert stored_events(engine) == []
    app.extensions["gateway.engine"].dispose()


# §9 size and count limits ---------------------------------------------------------------------

def test_oversized_message_is_rejected_alone(client, engine) -> None:
    big = {**TRACK, "properties": {"blob": "x" * 140_000}}  # over the 128 KiB default
    response = post(client, "/v1/batch", {"batch": [big, TRACK]})
    assert response.status_code == 200
    assert response.get_json()["rejected"][0]["code"] == "message_too_large"
    assert len(stored_events(engine)) == 1


def test_oversized_single_call_is_400(client, engine) -> None:
    big = {**TRACK, "properties": {"blob": "x" * 140_000}}
    assert_error(post(client, "/v1/track", big), 400, "message_too_large")
    assert stored_events(engine) == []


def test_oversized_request_is_413(client, engine) -> None:
    batch = [{**TRACK, "properties": {"blob": "x" * 20_000}} for _ in range(55)]  # > 1 MiB
    assert_error(post(client, "/v1/batch", {"batch": batch}), 413, "request_too_large")
    assert stored_events(engine) == []


def test_oversized_compressed_request_is_413_before_decompressing(client, engine) -> None:
    body = b"\x1f\x8b" + b"\0" * 1_100_000  # never decompressed: the raw size already fails
    assert_error(post(client, "/v1/batch", body, headers={"Content-Encoding": "gzip"}), 413,
                 "request_too_large")
    assert stored_events(engine) == []


def test_gzip_bomb_is_413(client, engine) -> None:
    bomb = gzip.compress(b'{"batch": [' + b" " * 50_000_000 + b"]}")
    assert len(bomb) < 100_000
    assert_error(post(client, "/v1/batch", bomb, headers={"Content-Encoding": "gzip"}), 413,
                 "request_too_large")
    assert stored_events(engine) == []


def test_batch_over_2500_messages_keeps_the_first_2500(client, engine) -> None:
    batch = [{"type": "track", "event": "e", "userId": f"u{i}"} for i in range(2501)]
    response = post(client, "/v1/batch", {"batch": batch})
    assert response.status_code == 200
    rejected = response.get_json()["rejected"]
    assert [(r["index"], r["code"]) for r in rejected] == [(2500, "batch_too_long")]
    assert len(stored_events(engine)) == 2500


def test_deep_nesting_is_400(client, engine) -> None:
    deep: Any = "leaf"
    for _ in range(70):
        deep = {"d": deep}
    assert_error(post(client, "/v1/batch", {"batch": [{**TRACK, "properties": deep}]}), 400,
                 "too_deep")
    very_deep = b'{"batch": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert_error(post(client, "/v1/batch", very_deep), 400, "too_deep")
    assert stored_events(engine) == []


# §6-§8 normalisation ---------------------------------------------------------------------------

def test_normalisation_of_a_python_sdk_message(client, engine) -> None:
    message = {
        "type": "track", "event": "Order Completed", "userId": 42, "anonymousId": None,
        "messageId": "  m-1  ", "timestamp": "2026-11-22T15:37:31.857+00:00",
        "properties": {"revenue": 9.99}, "category": None, "_metadata": {"nodeVersion": "20"},
        "context": {"library": {"name": "analytics-python", "version": "2.4.0"}},
        "receivedAt": "1999-01-01T00:00:00Z",
    }
    response = post(client, "/v1/batch", {"batch": [message],
                                          "sentAt": "2026-11-22T15:37:32.357+00:00"})
    assert response.status_code == 200
    [row] = stored_events(engine)
    payload = row["payload"]
    assert payload["userId"] == "42" and row["user_id"] == "42"
    assert "anonymousId" not in payload and "category" not in payload
    assert payload["messageId"] == "m-1" == row["message_id"]
    assert payload["_metadata"] == {"nodeVersion": "20"}
    assert payload["receivedAt"] != "1999-01-01T00:00:00Z"
    # skew: the event happened 0.5 s before the request was sent
    received = row["received_at"]
    assert (received - row["timestamp"]).total_seconds() == pytest.approx(0.5, abs=0.002)
    assert payload["originalTimestamp"] == "2026-11-22T15:37:31.857+00:00"
    assert payload["sentAt"] == "2026-11-22T15:37:32.357+00:00"
    assert payload["context"]["ip"] == "127.0.0.1" and payload["request_ip"] == "127.0.0.1"


def test_message_id_is_generated_when_missing(client, engine) -> None:
    post(client, "/v1/batch", {"batch": [TRACK, TRACK]})
    ids = [row["message_id"] for row in stored_events(engine)]
    assert len(set(ids)) == 2 and all(len(i) == 36 for i in ids)


def test_unparseable_timestamp_falls_back_to_received_at(client, engine) -> None:
    post(client, "/v1/track", {**TRACK, "timestamp": "yesterday", "sentAt": 17})
    [row] = stored_events(engine)
    assert row["timestamp"] == row["received_at"]


def test_rudder_node_original_timestamp_and_message_sent_at(client, engine) -> None:
    message = {**TRACK, "originalTimestamp": "2026-01-01T00:00:00.000Z",
               "sentAt": "2026-01-01T00:00:10.000Z"}
    post(client, "/v1/batch", {"batch": [message], "sentAt": "2030-01-01T00:00:00Z"})
    [row] = stored_events(engine)
    assert (row["received_at"] - row["timestamp"]).total_seconds() == pytest.approx(10, abs=0.002)


def test_timestamp_without_sent_at_is_kept(client, engine) -> None:
    post(client, "/v1/track", {**TRACK, "timestamp": "2026-01-01T10:00:00+02:00"})
    [payload] = stored_payloads(engine)
    assert payload["timestamp"] == "2026-01-01T08:00:00.000Z"


def test_batch_level_context_and_integrations_apply_to_each_message(client, engine) -> None:
    body = {"batch": [{**TRACK, "context": {"locale": "fr"}, "integrations": {"Kustomer": True}},
                      TRACK],
            "context": {"locale": "en", "app": {"name": "shop"}},
            "integrations": {"All": False, "Kustomer": False}}
    post(client, "/v1/batch", body)
    first, second = stored_payloads(engine)
    assert first["context"]["locale"] == "fr" and first["context"]["app"] == {"name": "shop"}
    assert first["integrations"] == {"All": False, "Kustomer": True}
    assert second["context"]["locale"] == "en"
    assert second["integrations"] == {"All": False, "Kustomer": False}


def test_forwarded_for_is_trusted_only_from_configured_proxies(database_url, client,
                                                               engine) -> None:
    from gateway import create_app

    post(client, "/v1/track", TRACK, headers={"X-Forwarded-For": "203.0.113.9"})
    assert stored_payloads(engine)[0]["context"]["ip"] == "127.0.0.1"
    proxied = create_app(from_mapping(base_config(
        database_url, server={"trusted_proxies": ["127.0.0.1"]})))
    post(proxied.test_client(), "/v1/track", TRACK,
         headers={"X-Forwarded-For": "203.0.113.9, 10.0.0.1"})
    # the rightmost address the trusted proxy saw; the leftmost is the client's own claim
    assert stored_payloads(engine)[1]["context"]["ip"] == "10.0.0.1"
    proxied.extensions["gateway.engine"].dispose()


# dedup ------------------------------------------------------------------------------------------

def test_a_resent_message_id_is_accepted_and_stored_once(client, engine) -> None:
    message = {**TRACK, "messageId": "dup-1"}
    assert post(client, "/v1/batch", {"batch": [message]}).status_code == 200
    assert post(client, "/v1/batch", {"batch": [message, {**TRACK, "messageId": "m2"}]}
                ).status_code == 200
    assert [r["message_id"] for r in stored_events(engine)] == ["dup-1", "m2"]
    assert len(stored_deliveries(engine)) == 2 * 2  # cio + kustomer-main, once per event


def test_a_message_id_repeated_in_one_request_is_stored_once(client, engine) -> None:
    message = {**TRACK, "messageId": "dup-2"}
    response = post(client, "/v1/batch", {"batch": [message, message]})
    assert response.get_json() == {"success": True}
    assert len(stored_events(engine)) == 1


def test_the_same_message_id_from_two_sources_is_two_events(client, engine) -> None:
    message = {**TRACK, "messageId": "shared"}
    post(client, "/v1/track", message)
    post(client, "/v1/track", message, key=OTHER_KEY)
    assert sorted(r["source"] for r in stored_events(engine)) == ["server", "web"]


# §10 CORS ---------------------------------------------------------------------------------------

def test_cors_preflight(client) -> None:
    response = client.options("/v1/track", headers={
        "Origin": "https://shop.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, anonymousid, content-type"})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert response.headers["Access-Control-Allow-Headers"] == (
        "authorization, anonymousid, content-type")
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert response.headers["Access-Control-Max-Age"] == "900"


@pytest.mark.parametrize("path", ["/v1/t", "/v1/batch", "/beacon/v1/batch"])
def test_cors_preflight_on_every_tracking_path(client, path: str) -> None:
    response = client.options(path, headers={"Origin": "https://a.example"})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "https://a.example"


def test_cors_headers_on_success_and_on_errors(client) -> None:
    origin = {"Origin": "https://shop.example"}
    ok = client.post("/v1/t", data=orjson.dumps({**TRACK, "writeKey": WRITE_KEY}),
                     headers={"Content-Type": "text/plain", **origin})
    assert ok.status_code == 200
    assert ok.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    denied = post(client, "/v1/t", TRACK, key=None, headers=origin)
    assert denied.status_code == 401
    assert denied.headers["Access-Control-Allow-Origin"] == "https://shop.example"


# bad input never yields a 500 -------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    b"null", b"0", b"{\"batch\": null}", b"{\"batch\": [null]}", b"{\"batch\": [[]]}",
    b'{"batch": [{"type": null, "userId": "u"}]}', b'{"batch": [{"type": ["track"]}]}',
    b'{"batch": [{"type": "track", "userId": "u", "event": "e", "integrations": 5}]}',
    b'{"batch": [{"type": "identify", "userId": "u", "context": {"traits": 5}}]}',
    b'{"batch": [{"type": "track", "userId": 1e400, "event": "e"}]}',
    b'{"batch": [], "sentAt": {"x": 1}}', b'{"sentAt": [], "batch": [{}]}',
    rb'{"batch": [{"type": "track", "userId": "\u00e9\u2603", "event": "\ud83d\ude00"}]}',
    rb'{"batch": [{"type": "track", "userId": "u", "event": "\ud800"}]}',
])
def test_odd_bodies_never_cause_a_500(client, body: bytes) -> None:
    response = post(client, "/v1/batch", body)
    assert response.status_code in (200, 400), response.get_data(as_text=True)
    if response.status_code != 200:
        assert set(response.get_json()) >= {"code", "message"}


def test_storage_failure_is_a_retryable_503_not_a_500(tmp_path) -> None:
    from gateway import create_app

    unmigrated = f"sqlite:///{tmp_path / 'empty.db'}"  # no tables: every insert fails
    app = create_app(from_mapping(base_config(unmigrated)))
    response = post(app.test_client(), "/v1/batch", {"batch": [TRACK]})
    assert_error(response, 503, "storage_unavailable")
    assert response.headers["Retry-After"] == "1"
    app.extensions["gateway.engine"].dispose()


def test_a_request_the_database_refuses_is_a_500_and_health_stays_up(
        migrated_sqlite, tmp_path, caplog) -> None:
    """A unique key or value the database refuses for one request is that request's failure
    (logged once a minute per kind, escaped), not an outage: /health stays 200 and other
    requests go on, so a request repeated with the public write key cannot take a node out of
    its pool."""
    import shutil

    from sqlalchemy import create_engine

    from gateway import create_app

    shutil.copy2(migrated_sqlite, tmp_path / "gateway.db")
    sqlite_url = f"sqlite:///{tmp_path / 'gateway.db'}"
    setup = create_engine(sqlite_url)
    with setup.begin() as connection:  # SQLite reports RAISE(ABORT) as a constraint failure
        connection.exec_driver_sql(
            "CREATE TRIGGER poison BEFORE INSERT ON events WHEN NEW.event = 'Poison' "
            "BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END")
    setup.dispose()
    app = create_app(from_mapping(base_config(sqlite_url)))
    client = app.test_client()
    try:
        for _ in range(3):
            response = post(client, "/v1/batch", {"batch": [{**TRACK, "event": "Poison"}]})
            assert_error(response, 500, "not_stored")
            assert response.headers["Retry-After"] == "1"
        assert client.get("/health").status_code == 200
        assert post(client, "/v1/batch", {"batch": [TRACK]}).status_code == 200
        lines = [r.getMessage() for r in caplog.records if "not stored" in r.getMessage()]
        assert len(lines) == 1 and "refused by a test trigger" in lines[0], lines
    finally:
        app.extensions["gateway.engine"].dispose()


@pytest.mark.slow
def test_oversized_chunked_body_is_413_through_the_real_server(live_gateway) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", live_gateway.port, timeout=10)
    connection.putrequest("POST", "/v1/batch")
    for name, value in {**basic(WRITE_KEY), "Transfer-Encoding": "chunked"}.items():
        connection.putheader(name, value)
    connection.endheaders()
    piece = b" " * 65_536
    for _ in range(20):  # 1.25 MiB, no Content-Length to check up front
        connection.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
    connection.send(b"0\r\n\r\n")
    response = connection.getresponse()
    assert response.status == 413
    assert orjson.loads(response.read())["code"] == "request_too_large"
