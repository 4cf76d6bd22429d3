"""The browser SDKs' settings routes (gateway/http/browser.py) and CORS on every answer of the
routes browsers call (gateway/http/cors.py), in-process on the Flask test client.

The settings routes read only the config, so one SQLite database is enough here; the real
browsers run in test_browsers.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from gateway import create_app
from gateway.config import from_mapping
from gateway.http import browser
from gateway.store.db import migrate
from tests.conftest import ADMIN_TOKEN, WRITE_KEY, base_config
from tests.helpers import basic

ORIGIN = "http://shop.example:3000"
SEGMENT = f"/v1/projects/{WRITE_KEY}/settings"
RUDDER = "/sourceConfig/"
# what RudderStack JS v3 puts on the query string (plus the Basic auth header)
RUDDER_QUERY = {"p": "npm", "v": "3.34.1", "build": "modern", "writeKey": WRITE_KEY,
                "lockIntegrationsVersion": "true", "lockPluginsVersion": "true"}


def make_app(tmp_path: Path, **server: Any) -> Flask:
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    migrate(url)
    raw = base_config(url, **({"server": server} if server else {}))
    return create_app(from_mapping(raw))


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    application = make_app(tmp_path)
    yield application
    application.extensions["gateway.engine"].dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def get(client: FlaskClient, path: str, **kwargs: Any):
    headers = {"Origin": ORIGIN, **kwargs.pop("headers", {})}
    return client.get(path, headers=headers, **kwargs)


def assert_cors(response) -> None:
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert "Origin" in response.headers.get_all("Vary") or "Origin" in response.headers["Vary"]


def assert_no_cors(response) -> None:
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Access-Control-Allow-Credentials" not in response.headers


def assert_json_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["code"] == code and isinstance(body["message"], str) and body["message"]


# analytics.js: /v1/projects/<writeKey>/settings ----------------------------------------------

def test_segment_settings_hold_only_the_gateway_as_segment_io(client: FlaskClient) -> None:
    response = get(client, SEGMENT)
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.get_json() == {
        "integrations": {"Segment.io": {"apiKey": WRITE_KEY, "apiHost": "localhost/v1",
                                        "protocol": "http"}},
        "remotePlugins": [], "enabledMiddleware": {}, "middlewareSettings": {}, "plan": {},
        "metrics": {"sampleRate": 0},
    }
    assert_cors(response)


def test_without_public_url_the_request_host_and_scheme_are_used(client: FlaskClient) -> None:
    response = get(client, SEGMENT, base_url="https://gw.example:8443")
    assert response.get_json()["integrations"]["Segment.io"] == {
        "apiKey": WRITE_KEY, "apiHost": "gw.example:8443/v1", "protocol": "https"}


def test_public_url_with_a_path_prefix_is_what_the_sdk_is_told(tmp_path: Path) -> None:
    client = make_app(tmp_path, public_url="https://t.shop.example/collect/").test_client()
    settings = get(client, SEGMENT, base_url="http://10.0.0.5:8080").get_json()
    assert settings["integrations"]["Segment.io"] == {
        "apiKey": WRITE_KEY, "apiHost": "t.shop.example/collect/v1", "protocol": "https"}


def test_public_url_keeps_its_port(tmp_path: Path) -> None:
    client = make_app(tmp_path, public_url="http://127.0.0.1:9999").test_client()
    segment_io = get(client, SEGMENT).get_json()["integrations"]["Segment.io"]
    assert (segment_io["apiHost"], segment_io["protocol"]) == ("127.0.0.1:9999/v1", "http")


# RudderStack JS v3: /sourceConfig -------------------------------------------------------------

# what the 1.x SDKs read (`enabled` gates all sending) and what rudder-sdk-kotlin and -swift
# decode (`writeKey`, `updatedAt`, Swift: `config.statsCollection`), byte for byte
RUDDER_SOURCE_BYTES = (
    b'{"source":{"id":"web","name":"web","writeKey":"' + WRITE_KEY.encode() + b'",'
    b'"enabled":true,"workspaceId":"event-gateway","updatedAt":"2026-01-01T00:00:00.000Z",'
    b'"config":{"statsCollection":{"errors":{"enabled":false},"metrics":{"enabled":false}}},'
    b'"destinations":[]}}')
RUDDER_SOURCE = {"source": {
    "id": "web", "name": "web", "writeKey": WRITE_KEY, "enabled": True,
    "workspaceId": browser.WORKSPACE_ID, "updatedAt": "2026-01-01T00:00:00.000Z",
    "config": {"statsCollection": {"errors": {"enabled": False},
                                   "metrics": {"enabled": False}}},
    "destinations": []}}


@pytest.mark.parametrize("path", ["/sourceConfig/", "/sourceConfig"])
def test_source_config_with_the_key_in_the_query(client: FlaskClient, path: str) -> None:
    response = get(client, path, query_string=RUDDER_QUERY)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json() == RUDDER_SOURCE
    assert_cors(response)


def test_source_config_decodes_in_the_new_rudderstack_mobile_sdks(client: FlaskClient) -> None:
    # rudder-sdk-kotlin / rudder-sdk-swift fetch it with the key as the Basic username
    response = get(client, RUDDER, headers=basic(WRITE_KEY))
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.get_data() == RUDDER_SOURCE_BYTES
    source = response.get_json()["source"]
    assert isinstance(source["updatedAt"], str) and source["writeKey"] == WRITE_KEY
    stats = source["config"]["statsCollection"]
    assert stats["errors"]["enabled"] is False and stats["metrics"]["enabled"] is False
    assert source["enabled"] is True  # the 1.x SDKs' gate


def test_source_config_with_the_key_as_the_basic_username(client: FlaskClient) -> None:
    query = {k: v for k, v in RUDDER_QUERY.items() if k != "writeKey"}
    response = get(client, RUDDER, query_string=query, headers=basic(WRITE_KEY))
    assert response.status_code == 200
    assert response.get_json() == RUDDER_SOURCE


def test_source_config_the_basic_username_wins_over_the_query(client: FlaskClient) -> None:
    response = get(client, RUDDER, query_string={"writeKey": "wk_unknown"},
                   headers=basic(WRITE_KEY))
    assert response.status_code == 200


def test_source_config_bad_basic_credentials_are_a_401(client: FlaskClient) -> None:
    response = get(client, RUDDER, headers={"Authorization": "Basic ???"})
    assert_json_error(response, 401, "invalid_authorization")
    assert_cors(response)


def test_source_config_preflight_allows_the_sdk_headers(client: FlaskClient) -> None:
    response = client.options(RUDDER, query_string=RUDDER_QUERY, headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization"})
    assert response.status_code == 200
    assert_cors(response)
    assert response.headers["Access-Control-Allow-Headers"] == "authorization"
    assert "GET" in response.headers["Access-Control-Allow-Methods"]


# unknown and disabled keys --------------------------------------------------------------------

@pytest.mark.parametrize("path,query,headers,status,code", [
    ("/v1/projects/wk_unknown/settings", {}, {}, 401, "invalid_write_key"),
    ("/v1/projects/wk_disabled/settings", {}, {}, 404, "source_disabled"),
    (RUDDER, {"writeKey": "wk_unknown"}, {}, 401, "invalid_write_key"),
    (RUDDER, {}, basic("wk_unknown"), 401, "invalid_write_key"),
    (RUDDER, {"writeKey": "wk_disabled"}, {}, 404, "source_disabled"),
    (RUDDER, {}, {}, 401, "missing_write_key"),
], ids=["segment-unknown", "segment-disabled", "rudder-unknown", "rudder-unknown-basic",
        "rudder-disabled", "rudder-no-key"])
def test_unknown_and_disabled_keys_get_their_codes_with_cors(
        client: FlaskClient, path: str, query: dict[str, str], headers: dict[str, str],
        status: int, code: str) -> None:
    response = get(client, path, query_string=query, headers=headers)
    assert_json_error(response, status, code)
    assert_cors(response)
    assert "ETag" not in response.headers and "max-age" not in response.headers.get(
        "Cache-Control", "")


# caching ------------------------------------------------------------------------------------

@pytest.mark.parametrize("path,query", [(SEGMENT, {}), (RUDDER, RUDDER_QUERY)])
def test_settings_are_cached_briefly_and_revalidated_with_their_etag(
        client: FlaskClient, path: str, query: dict[str, str]) -> None:
    first = get(client, path, query_string=query)
    cache = first.headers["Cache-Control"]
    max_age = int(cache.partition("max-age=")[2].split(",")[0])
    assert 60 <= max_age <= 300, cache
    etag = first.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"') and len(etag) > 10
    again = get(client, path, query_string=query, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b""
    assert again.headers["ETag"] == etag
    assert_cors(again)
    weak = get(client, path, query_string=query, headers={"If-None-Match": f"W/{etag}, \"x\""})
    assert weak.status_code == 304
    stale = get(client, path, query_string=query, headers={"If-None-Match": '"other"'})
    assert stale.status_code == 200 and stale.get_json() == first.get_json()


def test_the_etag_changes_with_what_the_sdk_is_told(client: FlaskClient) -> None:
    here = get(client, SEGMENT).headers["ETag"]
    elsewhere = get(client, SEGMENT, base_url="https://gw.example").headers["ETag"]
    other_key = get(client, "/v1/projects/wk_test_server/settings").headers["ETag"]
    assert len({here, elsewhere, other_key}) == 3


# CORS on every answer of the public routes, and never on the admin API ---------------------------

def test_cors_on_an_unknown_path(client: FlaskClient) -> None:
    response = get(client, "/v2/nothing-here")
    assert_json_error(response, 404, "not_found")
    assert_cors(response)


def test_cors_on_a_wrong_method(client: FlaskClient) -> None:
    response = get(client, "/v1/track")
    assert_json_error(response, 405, "method_not_allowed")
    assert_cors(response)
    response = client.post(SEGMENT, headers={"Origin": ORIGIN})
    assert response.status_code == 405
    assert_cors(response)


def test_cors_on_a_body_too_large(client: FlaskClient) -> None:
    response = client.post("/v1/batch", data=b"x" * 1_100_000,
                           headers={"Origin": ORIGIN, **basic(WRITE_KEY)})
    assert_json_error(response, 413, "request_too_large")
    assert_cors(response)


def test_cors_on_an_internal_error(client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: Any) -> dict[str, Any]:
        raise RuntimeError("boom")

    monkeypatch.setattr(browser, "rudder_source_config_body", broken)
    response = get(client, RUDDER, query_string=RUDDER_QUERY)
    assert_json_error(response, 500, "internal_server_error")
    assert_cors(response)


def test_cors_on_a_preflight_to_an_unknown_path(client: FlaskClient) -> None:
    response = client.options("/v1/projects/k/nothing", headers={"Origin": ORIGIN})
    assert response.status_code == 200
    assert_cors(response)


@pytest.mark.parametrize("path", ["/admin/v1/events", "/admin/v1/nothing", "/admin", "/metrics",
                                  "/console"])
def test_the_admin_api_gets_no_cors(client: FlaskClient, path: str) -> None:
    for response in (
        get(client, path),
        get(client, path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}),
        client.options(path, headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET",
                                      "Access-Control-Request-Headers": "authorization"}),
    ):
        assert_no_cors(response)
        assert "Access-Control-Allow-Headers" not in response.headers


def test_without_an_origin_no_cors_headers_are_invented(client: FlaskClient) -> None:
    response = client.get(SEGMENT)
    assert response.status_code == 200
    assert_no_cors(response)

