"""The console over HTTP, on SQLite and PostgreSQL: the cookie guard, CSRF, every page, the live
stream, retry-all-matching with its count, the replay dry run. (The same flows in a real browser:
test_console_browser.py.)"""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select, update

from gateway.console import data
from gateway.models import deliveries
from tests.conftest import ADMIN_TOKEN, WRITE_KEY
from tests.helpers import basic

HTML = {"Accept": "text/html"}
PAGES = ("/console/", "/console/events/1", "/console/deliveries", "/console/destinations",
         "/console/sources", "/console/explain?message_id=m1", "/console/stream")


def csrf_of(response: Any) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', response.get_data(as_text=True)).group(1)


def sign_in(client: FlaskClient) -> str:
    token = csrf_of(client.get("/console/login"))
    answer = client.post("/console/login", data={"csrf": token, "token": ADMIN_TOKEN})
    assert answer.status_code == 302
    return csrf_of(client.get("/console/deliveries"))


def track(client: FlaskClient, message_id: str, **extra: Any) -> None:
    body = {"userId": "u1", "event": "Bought", "messageId": message_id, **extra}
    assert client.post("/v1/track", json=body, headers=basic(WRITE_KEY)).status_code == 200


def test_nothing_without_the_cookie(client: FlaskClient) -> None:
    track(client, "m1")
    for path in PAGES:
        answer = client.get(path)
        assert answer.status_code == 401, path
        if path != "/console/stream":
            browser = client.get(path, headers=HTML)
            assert browser.status_code == 302 and "/console/login?next=" in browser.location
    assert client.get("/console/static/console.js").status_code == 200


def test_sign_in_out_and_a_forged_cookie(client: FlaskClient) -> None:
    login = client.get("/console/login")
    cookie = login.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    token = csrf_of(login)
    assert client.post("/console/login", data={"token": ADMIN_TOKEN}).status_code == 403
    assert client.post("/console/login", data={"csrf": token, "token": "nope"}).status_code == 401
    assert client.post("/console/login", data={"csrf": token, "token": ADMIN_TOKEN,
                                               "next": "https://evil.example/"}
                       ).location == "/console/"
    assert client.get("/console/sources").status_code == 200
    csrf = csrf_of(client.get("/console/sources"))
    assert client.post("/console/logout", data={"csrf": csrf}).status_code == 302
    assert client.get("/console/sources").status_code == 401
    client.set_cookie("gw_console", "eyJjc3JmIjoieCIsImluIjp0cnVlfQ.forged.sig",
                      path="/console")
    assert client.get("/console/sources").status_code == 401


def test_posts_need_the_token_and_the_same_origin(client: FlaskClient) -> None:
    csrf = sign_in(client)
    for path in ("/console/deliveries/retry-matching", "/console/replay",
                 "/console/sources/web/key", "/console/logout"):
        assert client.post(path, data={}).status_code == 403, path
        assert client.post(path, data={"csrf": "forged"}).status_code == 403, path
    assert client.post("/console/sources/web/key", data={"csrf": csrf},
                       headers={"Origin": "https://evil.example"}).status_code == 403
    revealed = client.post("/console/sources/web/key", data={"csrf": csrf})
    assert revealed.get_json() == {"write_key": WRITE_KEY}
    assert WRITE_KEY not in client.get("/console/sources").get_data(as_text=True)


def test_every_page_renders(client: FlaskClient) -> None:
    track(client, "m1", properties={"nested": {"deep": [1, "two", None, True]}})
    sign_in(client)
    for path in PAGES[:-1]:
        answer = client.get(path)
        assert answer.status_code == 200, path
        assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
    page = client.get("/console/events/1").get_data(as_text=True)
    assert "Bought" in page and "deep" in page and "queued: first attempt due" in page
    assert client.get("/console/events/999").status_code == 404
    assert "Bought" in client.get("/console/?event=Bought").get_data(as_text=True)
    assert "Bought" not in client.get("/console/?user=someone").get_data(as_text=True)


def test_the_stream_sends_events_committed_after_it_opened(client: FlaskClient) -> None:
    track(client, "before")
    sign_in(client)
    answer = client.get("/console/stream?type=track", buffered=False)
    chunks = iter(answer.response)
    assert next(chunks).decode().startswith("retry: 1000\nid: 1")
    track(client, "after")
    sent = next(chunks).decode()
    assert sent.startswith("id: 2\nevent: events\n") and '"after"' in sent
    assert '"before"' not in sent
    answer.close()
    resumed = client.get("/console/stream", headers={"Last-Event-ID": "1"}, buffered=False)
    chunks = iter(resumed.response)
    next(chunks)
    assert '"after"' in next(chunks).decode()
    resumed.close()


def test_retry_all_matching_counts_first(client: FlaskClient, engine) -> None:
    for n in range(3):
        track(client, f"d{n}")
    with engine.begin() as connection:
        connection.execute(update(deliveries).where(deliveries.c.destination == "cio")
                           .values(state="dead", last_error="HTTP 400: no"))
    csrf = sign_in(client)
    desk = client.get("/console/deliveries").get_data(as_text=True)
    assert desk.count("HTTP 400: no") == 3
    ask = client.post("/console/deliveries/retry-matching",
                      data={"csrf": csrf, "destination": "cio"}).get_data(as_text=True)
    assert "retry 3 dead deliveries" in ask
    with engine.connect() as connection:
        assert connection.execute(select(deliveries.c.state).where(
            deliveries.c.destination == "cio")).scalars().all() == ["dead"] * 3
    done = client.post("/console/deliveries/retry-matching",
                       data={"csrf": csrf, "destination": "cio", "confirm": "3"})
    assert "3 dead deliveries are pending again" in done.get_data(as_text=True)
    with engine.connect() as connection:
        assert set(connection.execute(select(deliveries.c.state).where(
            deliveries.c.destination == "cio")).scalars()) == {"pending"}
    assert "retry 0 dead" in client.post("/console/deliveries/retry-matching", data={
        "csrf": csrf, "destination": "cio"}).get_data(as_text=True)
    assert client.post("/console/deliveries/retry-matching", data={
        "csrf": csrf, "since": "yesterday"}).status_code == 400


def test_replay_dry_run_then_real(client: FlaskClient, engine) -> None:
    track(client, "r1")
    csrf = sign_in(client)
    form = {"csrf": csrf, "destination": "kustomer-main", "event": "Bought"}
    dry = client.post("/console/replay", data=form).get_data(as_text=True)
    assert "Dry run: 1 stored event match" in dry
    with engine.connect() as connection:
        assert len(connection.execute(select(deliveries.c.id)).all()) == 2  # cio + kustomer
    done = client.post("/console/replay", data={**form, "confirm": "1"}).get_data(as_text=True)
    assert "queued 1 deliveries to kustomer-main" in done
    refused = client.post("/console/replay", data={**form, "destination": "paused"})
    assert refused.status_code == 400 and "disabled" in refused.get_data(as_text=True)


def test_counts_are_capped(client: FlaskClient, engine, monkeypatch: pytest.MonkeyPatch) -> None:
    for n in range(4):
        track(client, f"c{n}")
    with engine.connect() as connection:
        count = data.capped_count(connection, select(deliveries.c.id), 2)
        assert (count.value, count.capped, str(count)) == (2, True, "2+")
        exact = data.state_counts(connection, ["cio", "kustomer-main", "paused"])
        assert {n: str(c["pending"]) for n, c in exact.items()} == {
            "cio": "4", "kustomer-main": "4", "paused": "0"}
        monkeypatch.setattr(data, "COUNT_CAP", 5)  # 8 pending rows: only lower bounds
        capped = data.state_counts(connection, ["cio", "kustomer-main", "paused"])
    assert all(capped[n]["pending"].capped for n in ("cio", "kustomer-main"))
    assert sum(capped[n]["pending"].value for n in ("cio", "kustomer-main")) == 6
    assert str(capped["paused"]["pending"]) == "0"


def test_destinations_show_the_workers_circuit_state(client: FlaskClient) -> None:
    """Issue 13: the destinations overview shows the circuit / rate-limit state where there is
    one — the delivery worker publishes it per destination (metrics.publish_lane)."""
    from gateway import metrics

    sign_in(client)
    metrics.publish_lane("cio", {"circuit": "open", "in_flight": 0, "tokens": 3})
    try:
        page = client.get("/console/destinations").get_data(as_text=True)
        row = re.search(r'<tr data-destination="cio">(.*?)</tr>', page, re.S).group(1)
        assert "circuit" in page and "open" in row
    finally:
        metrics.publish_lane("cio", {"circuit": "closed", "in_flight": 0, "tokens": 3})


def test_the_stream_sends_an_event_whose_commit_came_after_a_newer_ones(
        client: FlaskClient, engine) -> None:
    """Several processes on PostgreSQL: an event's id is taken at insert and its transaction
    may commit after a later id's. The live feed must still show it (not skip past its id)."""
    from datetime import UTC, datetime

    from gateway.models import events

    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite's single writer commits ids in order")
    track(client, "first")
    sign_in(client)
    answer = client.get("/console/stream", buffered=False)
    chunks = iter(answer.response)
    next(chunks)  # retry/id preamble: the stream starts after "first"
    now = datetime.now(UTC)
    slow = engine.connect()  # another process's group commit, still writing
    transaction = slow.begin()
    slow.execute(events.insert().values(
        source="web", message_id="slow", type="track", event="Bought", user_id="u1",
        timestamp=now, received_at=now, payload={"type": "track", "messageId": "slow"}))
    track(client, "fast")  # a newer id, committed first
    assert '"fast"' in next(chunks).decode()
    transaction.commit()
    slow.close()
    later = ""
    while '"slow"' not in later:
        chunk = next(chunks, None)
        assert chunk is not None, "the stream ended without the late-committed event"
        later += chunk.decode()
    answer.close()


def test_the_desk_lists_a_regulations_deletion_deliveries(client: FlaskClient) -> None:
    """A deletion request to a destination is a delivery without an event (issue 14): the
    deliveries desk lists it (no link to an event page) instead of failing."""
    track(client, "m1")
    answer = client.post("/admin/v1/regulations", json={
        "type": "delete", "subject": {"user_id": "u1"}},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert answer.status_code == 202
    sign_in(client)
    page = client.get("/console/deliveries?state=pending")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "regulation" in text and "/console/events/None" not in text
