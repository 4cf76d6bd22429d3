"""The admin API reads its JSON bodies as the tracking API does (gateway/http/body.py): bounded,
gzip understood, anything else answered as before (the route's own 400)."""

from __future__ import annotations

import gzip

import orjson
from flask.testing import FlaskClient

from tests.helpers import ADMIN_AUTH

DRY_RUN = {"destination": "cio", "filter": {}, "dry_run": True}


def test_an_admin_body_over_the_request_limit_is_413(client: FlaskClient, app) -> None:
    limit = app.extensions["gateway.config"].limits.max_request_bytes
    body = orjson.dumps({**DRY_RUN, "pad": "x" * limit})
    response = client.post("/admin/v1/replay", data=body, headers=ADMIN_AUTH)
    assert response.status_code == 413 and response.get_json()["code"] == "request_too_large"


def test_a_gzip_admin_body_is_read_and_a_gzip_bomb_is_not(client: FlaskClient, app) -> None:
    response = client.post("/admin/v1/replay", data=gzip.compress(orjson.dumps(DRY_RUN)),
                           headers={**ADMIN_AUTH, "Content-Encoding": "gzip"})
    assert response.status_code == 200, response.get_data(as_text=True)
    limit = app.extensions["gateway.config"].limits.max_request_bytes
    bomb = gzip.compress(b" " * (limit + 1))
    refused = client.post("/admin/v1/replay", data=bomb,
                          headers={**ADMIN_AUTH, "Content-Encoding": "gzip"})
    assert refused.status_code == 413 and refused.get_json()["code"] == "request_too_large"


def test_not_json_stays_each_routes_own_400(client: FlaskClient) -> None:
    for path, code in (("/admin/v1/replay", "invalid_body"),
                       ("/admin/v1/regulations", "invalid_regulation")):
        for body in (b"{not json", b"\xff\xfe", b"[" * 100_000):
            response = client.post(path, data=body, headers=ADMIN_AUTH)
            assert response.status_code == 400, (path, body[:10])
            assert response.get_json()["code"] == code
