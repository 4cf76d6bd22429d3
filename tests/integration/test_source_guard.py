"""Per-source rate limits and allowed origins on the real app, on both databases: over the
limit is 429 with Retry-After and nothing stored, counted per source and recorded once per
window; two gateways on one database share the limit; a browser from another origin is 403 on
the tracking API and the settings endpoints alike, a server SDK (no Origin) never."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from gateway import create_app, rejections
from gateway.cli.commands import main
from gateway.config import from_mapping
from gateway.http import source_guard
from gateway.store.models import heartbeats
from gateway.store.models import rejections as rejections_table
from tests.conftest import ADMIN_TOKEN, OTHER_KEY, WRITE_KEY, base_config, write_toml
from tests.helpers import basic, stored_events

ORIGINS = ["https://shop.example.com", "https://*.example.com"]


def guarded_config(database_url: str, **web: Any):
    raw = base_config(database_url)
    raw["sources"][0].update(web)
    return from_mapping(raw)


@pytest.fixture
def make_app(database_url: str):
    apps = []

    def make(**web: Any):
        app = create_app(guarded_config(database_url, **web))
        apps.append(app)
        return app

    yield make
    for app in apps:
        source_guard.flush_refusals(app)  # no window may be written after the database goes
        rejections.flush(app.extensions["gateway.engine"])
        app.extensions["gateway.engine"].dispose()


def batch(client, count: int, prefix: str, key: str = WRITE_KEY, **headers: str):
    messages = [{"type": "track", "userId": f"u{n}", "event": "e", "messageId": f"{prefix}-{n}"}
                for n in range(count)]
    return client.post("/v1/batch", json={"batch": messages}, headers={**basic(key), **headers})


def sign_in(client) -> None:
    login = client.get("/console/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf" value="([^"]+)"', login).group(1)
    answer = client.post("/console/login", data={"csrf": csrf, "token": ADMIN_TOKEN})
    assert answer.status_code == 302


def refused_count(source: str) -> float:
    return REGISTRY.get_sample_value("gateway_source_rate_limited_total",
                                     {"source": source}) or 0.0


def test_over_the_limit_is_429_with_retry_after_and_nothing_stored(make_app) -> None:
    app = make_app(rate_limit={"events_per_second": 0.01, "burst": 5})
    client, engine = app.test_client(), app.extensions["gateway.engine"]
    before = refused_count("web")
    assert batch(client, 3, "a").status_code == 200
    assert batch(client, 2, "b").status_code == 200  # the burst: 5 at once
    over = batch(client, 2, "c")
    assert over.status_code == 429
    assert over.get_json()["code"] == "rate_limited"
    assert "nothing of this request was stored" in over.get_json()["message"]
    assert 1 <= int(over.headers["Retry-After"]) <= 200  # 2 events at 0.01/s, with 0 left
    single = client.post("/v1/track", json={"userId": "u", "event": "e", "messageId": "d"},
                         headers=basic(WRITE_KEY))
    assert single.status_code == 429
    assert sorted(e["message_id"] for e in stored_events(engine)) == \
        ["a-0", "a-1", "a-2", "b-0", "b-1"]
    assert refused_count("web") - before == 3  # events, per source
    assert batch(client, 4, "e", key=OTHER_KEY).status_code == 200  # other sources: unbounded
    assert len(stored_events(engine, "server")) == 4


def test_refusals_are_recorded_once_per_source_and_window(make_app) -> None:
    app = make_app(rate_limit={"events_per_second": 0.01, "burst": 1})
    client, engine = app.test_client(), app.extensions["gateway.engine"]
    assert batch(client, 1, "ok").status_code == 200
    for n in range(30):
        assert batch(client, 2, f"flood{n}").status_code == 429
    pixel = client.get(f"/pixel/v1/track?writeKey={WRITE_KEY}&event=e&userId=u")
    assert pixel.status_code == 200 and pixel.mimetype == "image/gif"  # the pixel: a GIF
    source_guard.flush_refusals(app)
    assert rejections.flush(engine)
    with engine.connect() as connection:
        rows = connection.execute(select(rejections_table)).all()
    assert len(rows) == 1
    (row,) = rows
    assert (row.source, row.reason, row.message_id) == ("web", "rate_limited", None)
    assert row.detail.startswith("61 events in 31 requests refused with 429 over the source's "
                                 "rate limit (0.01 events/s, burst 1)")
    assert [e["message_id"] for e in stored_events(engine)] == ["ok-0"]


def test_the_bucket_refills_at_the_rate_and_a_large_batch_waits_for_a_full_bucket(
        make_app) -> None:
    app = make_app(rate_limit={"events_per_second": 2, "burst": 4})
    now = [1000.0]
    rates = app.extensions[source_guard.STATE_KEY].rates
    rates.clock = rates.live.clock = lambda: now[0]
    client, engine = app.test_client(), app.extensions["gateway.engine"]
    assert batch(client, 4, "a").status_code == 200
    refused = batch(client, 1, "b")
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    now[0] += 0.5  # one event's worth
    assert batch(client, 1, "c").status_code == 200
    assert batch(client, 10, "d").status_code == 429  # above the burst: needs a full bucket
    now[0] += 2.0
    assert batch(client, 10, "e").status_code == 200  # …and then is let in whole
    assert batch(client, 1, "f").headers["Retry-After"] == "4"  # paid for: 7 events owed
    assert len(stored_events(engine)) == 15


def test_two_gateways_on_one_database_share_the_limit(make_app, database_url: str) -> None:
    first = make_app(rate_limit={"events_per_second": 0.01, "burst": 10})
    second = make_app(rate_limit={"events_per_second": 0.01, "burst": 10})
    for app in (first, second):  # each process's heartbeat row, as /health writes it
        app.test_client().get("/health")
    engine = first.extensions["gateway.engine"]
    with engine.connect() as connection:
        assert connection.execute(select(heartbeats.c.id).where(
            heartbeats.c.role == "http")).all().__len__() == 2
    accepted = 0
    for n in range(20):
        for index, app in enumerate((first, second)):
            if batch(app.test_client(), 1, f"{index}-{n}").status_code == 200:
                accepted += 1
    assert accepted == 10  # 5 each: the burst is the source's, not each gateway's
    assert len(stored_events(engine)) == 10


def test_a_gateway_alone_takes_the_whole_burst(make_app) -> None:
    app = make_app(rate_limit={"events_per_second": 0.01, "burst": 10})
    client = app.test_client()
    assert [batch(client, 1, f"m{n}").status_code for n in range(11)] == [200] * 10 + [429]
    engine = app.extensions["gateway.engine"]
    with engine.connect() as connection:  # the process beat while serving the limited source
        assert len(connection.execute(select(heartbeats).where(
            heartbeats.c.role == "http")).all()) == 1


# allowed origins ------------------------------------------------------------------------------

@pytest.mark.parametrize(("origin", "status"), [
    ("https://shop.example.com", 200),
    ("https://checkout.eu.example.com", 200),
    ("https://example.com", 403),
    ("http://shop.example.com", 403),
    ("https://shop.example.com:8443", 403),
    ("https://shop.example.com.evil.io", 403),
    ("null", 403),
])
def test_origins_on_the_tracking_api(make_app, origin: str, status: int) -> None:
    app = make_app(allowed_origins=ORIGINS)
    client, engine = app.test_client(), app.extensions["gateway.engine"]
    response = batch(client, 2, "o", Origin=origin)
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.headers["Access-Control-Allow-Origin"] == origin  # the page can read it
    if status == 403:
        body = response.get_json()
        assert body["code"] == "origin_not_allowed"
        assert f'origin "{origin}"' in body["message"]
    assert len(stored_events(engine)) == (2 if status == 200 else 0)


def test_no_origin_is_never_refused_and_other_sources_are_unaffected(make_app) -> None:
    app = make_app(allowed_origins=ORIGINS)
    client, engine = app.test_client(), app.extensions["gateway.engine"]
    assert batch(client, 1, "server-sdk").status_code == 200
    assert batch(client, 1, "other", key=OTHER_KEY, Origin="https://evil.io").status_code == 200
    assert client.post("/v1/track", json={"writeKey": WRITE_KEY, "userId": "u", "event": "e"},
                       headers={"Origin": "https://evil.io"}).status_code == 403
    assert len(stored_events(engine)) == 2


def test_origin_refusals_are_in_the_rejections_record(make_app) -> None:
    app = make_app(allowed_origins=ORIGINS)
    client, engine = app.test_client(), app.extensions["gateway.engine"]
    assert batch(client, 1, "x", Origin="https://evil.io").status_code == 403
    assert rejections.flush(engine)
    with engine.connect() as connection:
        rows = connection.execute(select(rejections_table)).all()
    assert [(r.source, r.reason) for r in rows] == [("web", "origin_not_allowed")]


@pytest.mark.parametrize("path", [f"/v1/projects/{WRITE_KEY}/settings",
                                  f"/sourceConfig/?writeKey={WRITE_KEY}"])
def test_the_settings_endpoints_follow_the_same_rule(make_app, path: str) -> None:
    client = make_app(allowed_origins=ORIGINS).test_client()
    refused = client.get(path, headers={"Origin": "https://evil.io"})
    assert refused.status_code == 403 and refused.get_json()["code"] == "origin_not_allowed"
    assert refused.headers["Access-Control-Allow-Origin"] == "https://evil.io"
    assert client.get(path, headers={"Origin": "https://shop.example.com"}).status_code == 200
    assert client.get(path).status_code == 200
    preflight = client.options(path, headers={"Origin": "https://evil.io",
                                              "Access-Control-Request-Method": "GET"})
    assert preflight.status_code == 200  # the preflight passes: the answer says why


def test_the_pixel_from_another_origin_stores_nothing(make_app) -> None:
    app = make_app(allowed_origins=ORIGINS)
    client, engine = app.test_client(), app.extensions["gateway.engine"]
    url = f"/pixel/v1/track?writeKey={WRITE_KEY}&event=e&userId=u"
    assert client.get(url, headers={"Origin": "https://evil.io"}).mimetype == "image/gif"
    assert stored_events(engine) == []
    assert client.get(url, headers={"Origin": "https://shop.example.com"}).status_code == 200
    assert len(stored_events(engine)) == 1


def test_check_reports_each_guarded_source(database_url: str, tmp_path: Path, capsys) -> None:
    path = tmp_path / "gateway.toml"
    write_toml(path, {"database_url": database_url, "admin_token": ADMIN_TOKEN,
                      "sources": [
                          {"name": "web", "write_key": WRITE_KEY, "allowed_origins": ORIGINS,
                           "rate_limit": {"events_per_second": 100, "burst": 200}},
                          {"name": "shop", "write_key": "wk_shop",
                           "allowed_origins": ["https://shop.example.com"]},
                          {"name": "server", "write_key": OTHER_KEY}]})
    path.chmod(0o600)
    assert main(["--config", str(path), "check"]) == 0
    lines = [" ".join(line.split()) for line in capsys.readouterr().out.splitlines()
             if line.split()[1:2] == ["source"]]
    assert lines == [
        "ok source web rate limit 100 events/s, burst 200; origins https://shop.example.com, "
        "https://*.example.com (shared by the HTTP processes on this database)",
        "ok source shop no rate limit; origins https://shop.example.com"]
    write_toml(path, {"database_url": database_url, "admin_token": ADMIN_TOKEN,
                      "sources": [{"name": "web", "write_key": WRITE_KEY,
                                   "allowed_origins": ["https://shop.example.com/"]}]})
    assert main(["--config", str(path), "check"]) == 1
    assert "field 'allowed_origins': entry 1 'https://shop.example.com/': an origin is " \
        "scheme://host[:port] only" in capsys.readouterr().out


def test_the_console_sources_page_shows_both(make_app) -> None:
    app = make_app(rate_limit={"events_per_second": 100, "burst": 200}, allowed_origins=ORIGINS)
    client = app.test_client()
    sign_in(client)
    page = client.get("/console/sources").get_data(as_text=True)
    assert "rate limit 100 events/s, burst 200" in page
    assert "https://*.example.com" in page
    assert "no rate limit; any origin" in page  # the source without either


def test_the_heartbeat_is_written_once_an_interval_not_per_request(make_app) -> None:
    app = make_app(rate_limit={"events_per_second": 1000, "burst": 1000})
    now = [1000.0]
    rates = app.extensions[source_guard.STATE_KEY].rates
    rates.clock = rates.live.clock = lambda: now[0]
    original, writes = rates.beat.beat, []
    rates.beat.beat = lambda force=False: writes.append(force) or original(force)
    client = app.test_client()
    for n in range(5):
        assert batch(client, 1, f"a{n}").status_code == 200
    assert len(writes) == 1
    now[0] += app.extensions["gateway.config"].worker.heartbeat_seconds
    assert batch(client, 1, "b").status_code == 200
    assert len(writes) == 2


def test_an_sdk_that_resends_all_but_success_gets_the_429_too(make_app) -> None:
    """RudderStack Android 1.x resends anything but a 200: a 429 keeps its events on the
    device (they come again), where a 200 for a refused request would lose them."""
    app = make_app(rate_limit={"events_per_second": 0.01, "burst": 1})
    client = app.test_client()
    library = {"library": {"name": "com.rudderstack.android.sdk.core"}}
    body = {"batch": [{"type": "track", "userId": "u", "event": "e", "messageId": f"r{n}"}
                      for n in range(3)], "context": library}
    assert client.post("/v1/batch", json=body, headers=basic(WRITE_KEY)).status_code == 200
    again = client.post("/v1/batch", json=body, headers=basic(WRITE_KEY))
    assert again.status_code == 429 and "rejected" not in again.get_json()
    assert len(stored_events(app.extensions["gateway.engine"])) == 3
