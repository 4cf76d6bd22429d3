"""The console over HTTP, on SQLite and PostgreSQL: the cookie guard, CSRF, every page, the live
stream, retry-all-matching with its count, the replay dry run. (The same flows in a real browser:
test_console_browser.py.)"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, select, update

from gateway import create_app
from gateway.config import Config
from gateway.console import data
from gateway.store.models import console_sessions, deliveries, gateway_secrets
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


def session_cookie(client: FlaskClient) -> str | None:
    found = client.get_cookie("gw_console", path="/console")
    return found.value if found else None


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
    """The destinations overview shows the circuit / rate-limit state where there is
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

    from gateway.store.models import events

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
    """A deletion request to a destination is a delivery without an event: the
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


# sessions: server-side, revocable, ended by a new admin token -------------------------------------

def test_anonymous_visitors_get_no_signed_cookie(client: FlaskClient) -> None:
    """M1: the old cookie was signed with a key derived from the admin token and handed to every
    visitor of the sign-in page: an offline oracle for the token. Now a visitor gets only a
    random nonce for the sign-in form (no signature, nothing derived from anything)."""
    login = client.get("/console/login")
    cookies = login.headers.getlist("Set-Cookie")
    assert [c.split("=")[0] for c in cookies] == ["gw_login"]
    nonce = client.get_cookie("gw_login", path="/console/login").value
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", nonce) and csrf_of(login) == nonce
    assert "HttpOnly" in cookies[0] and "SameSite=Strict" in cookies[0]
    assert client.get("/console/login").headers.getlist("Set-Cookie") == []  # kept, not renewed
    other = client.application.test_client().get("/console/login")
    assert csrf_of(other) != nonce
    # a form token that is not this browser's nonce is refused
    assert client.post("/console/login", data={"csrf": csrf_of(other),
                                               "token": ADMIN_TOKEN}).status_code == 403


def test_the_session_cookie_is_a_random_id_keyed_by_a_random_secret(
        client: FlaskClient, engine: Engine, config: Config, tmp_path) -> None:
    """M1: the session cookie carries no payload and no signature; the database keeps a hash of
    it keyed with a secret generated on first use, never derived from the admin token."""
    sign_in(client)
    cookie = session_cookie(client)
    assert cookie and re.fullmatch(r"[A-Za-z0-9_-]{43}", cookie)
    with engine.connect() as connection:
        [key] = connection.execute(select(gateway_secrets.c.value)).scalars()
        [row] = connection.execute(select(console_sessions)).all()
    assert re.fullmatch(r"[0-9a-f]{64}", key) and cookie not in row.id_hash
    assert row.revoked_at is None and row.created_at == row.last_seen_at
    again = client.application.test_client()
    sign_in(again)
    assert session_cookie(again) != cookie  # a fresh id per sign-in
    # another database with the same admin token gets a key of its own
    from gateway.store.db import migrate

    other_url = f"sqlite:///{tmp_path / 'other.db'}"
    migrate(other_url)
    other = create_app(Config(database_url=other_url, admin_token=config.admin_token))
    sign_in(other.test_client())
    with other.extensions["gateway.engine"].connect() as connection:
        assert connection.execute(select(gateway_secrets.c.value)).scalar_one() != key
    other.extensions["gateway.engine"].dispose()


def test_sign_out_revokes_the_session_on_the_server(client: FlaskClient) -> None:
    """L2: a copy of the cookie taken before sign-out no longer works after it."""
    csrf = sign_in(client)
    copied = session_cookie(client)
    thief = client.application.test_client()
    thief.set_cookie("gw_console", copied, path="/console")
    assert thief.get("/console/sources").status_code == 200
    assert client.post("/console/logout", data={"csrf": csrf}).status_code == 302
    assert session_cookie(client) is None
    assert thief.get("/console/sources").status_code == 401
    assert thief.get("/console/stream").status_code == 401


def test_sign_out_everywhere_ends_every_session(client: FlaskClient, engine: Engine) -> None:
    """L2: the console's "Sign out everywhere" revokes every session, on every process."""
    csrf = sign_in(client)
    other = client.application.test_client()
    sign_in(other)
    page = client.get("/console/deliveries").get_data(as_text=True)
    assert 'id="sign-out-everywhere"' in page
    assert client.post("/console/logout/everywhere", data={}).status_code == 403  # CSRF
    answer = client.post("/console/logout/everywhere", data={"csrf": csrf})
    assert answer.status_code == 302
    assert answer.location == "/console/login?signed_out=everywhere"
    assert "Every console session is signed out" in client.get(
        answer.location).get_data(as_text=True)
    assert client.get("/console/sources").status_code == 401
    assert other.get("/console/sources").status_code == 401
    with engine.connect() as connection:
        assert None not in connection.execute(select(console_sessions.c.revoked_at)).scalars()
    sign_in(client)  # and signing in again works
    assert client.get("/console/sources").status_code == 200


def test_an_idle_session_ends_and_a_busy_one_lasts_its_lifetime(
        client: FlaskClient, engine: Engine) -> None:
    """L2: 30 minutes without a request end a session ([console] idle_timeout_seconds); a
    request within them extends it, up to the absolute lifetime (session_lifetime_seconds)."""
    sign_in(client)

    def age(**columns: timedelta) -> None:
        now = datetime.now(UTC)
        with engine.begin() as connection:
            connection.execute(update(console_sessions).values(
                {name: now - ago for name, ago in columns.items()}))

    age(last_seen_at=timedelta(minutes=29))
    assert client.get("/console/sources").status_code == 200  # within the idle timeout…
    with engine.connect() as connection:
        seen = connection.execute(select(console_sessions.c.last_seen_at)).scalar_one()
    assert datetime.now(UTC) - seen < timedelta(seconds=10)  # …and it counts as activity
    age(last_seen_at=timedelta(minutes=30, seconds=1))
    assert client.get("/console/sources").status_code == 401
    sign_in(client)
    age(created_at=timedelta(hours=12, seconds=1), last_seen_at=timedelta(seconds=1))
    assert client.get("/console/sources").status_code == 401


def test_the_live_streams_reconnects_do_not_keep_a_session_alive(
        client: FlaskClient, engine: Engine) -> None:
    """An open live page reconnects its stream every 25 s; that is not a person using the
    console, so it does not push the idle timeout back."""
    sign_in(client)
    old = datetime.now(UTC) - timedelta(minutes=10)
    with engine.begin() as connection:
        connection.execute(update(console_sessions).values(last_seen_at=old))
    answer = client.get("/console/stream", buffered=False)
    assert answer.status_code == 200
    answer.close()
    with engine.connect() as connection:
        seen = connection.execute(select(console_sessions.c.last_seen_at)).scalar_one()
    assert abs(seen - old) < timedelta(seconds=1)


def test_idle_timeout_and_lifetime_are_configurable(database_url: str) -> None:
    from gateway.config import from_mapping
    from tests.conftest import base_config

    config = from_mapping(base_config(database_url, console={
        "idle_timeout_seconds": 120, "session_lifetime_seconds": 3600}))
    app = create_app(config)
    client = app.test_client()
    sign_in(client)
    assert client.get_cookie("gw_console", path="/console").max_age == 3600
    engine = app.extensions["gateway.engine"]
    with engine.begin() as connection:
        connection.execute(update(console_sessions).values(
            last_seen_at=datetime.now(UTC) - timedelta(seconds=121)))
    assert client.get("/console/sources").status_code == 401
    engine.dispose()


def test_rotating_the_admin_token_signs_everyone_out(client: FlaskClient,
                                                     config: Config) -> None:
    """Sessions live in the database: another process with the same config accepts one; a
    process started with a new admin token accepts none of the old ones."""
    from dataclasses import replace

    sign_in(client)
    cookie = session_cookie(client)
    for token, status in ((config.admin_token, 200), ("a-new-admin-token-r7w2k9x4m8q3z6v1", 401)):
        process = create_app(replace(config, admin_token=token))
        browser = process.test_client()
        browser.set_cookie("gw_console", cookie, path="/console")
        assert browser.get("/console/sources").status_code == status, token
        process.extensions["gateway.engine"].dispose()


@pytest.mark.parametrize("target", [
    "/console/\r\nSet-Cookie: x=1", "/console/\nLocation: https://evil.example/",
    "/console/\x00", "/console/\u2028", "//evil.example/console/",
    "/console/../admin/v1/events", "/consolex", "https://evil.example/console/"])
def test_a_next_that_cannot_be_a_console_location_goes_to_the_console(
        client: FlaskClient, target: str) -> None:
    """L10: a `next` holding CR/LF answered 500 with a traceback (the Location header cannot
    hold it). Whatever `next` holds, signing in lands inside the console."""
    from urllib.parse import quote

    login = client.get("/console/login?next=" + quote(target, safe=""))
    assert login.status_code == 200
    answer = client.post("/console/login", data={"csrf": csrf_of(login), "token": ADMIN_TOKEN,
                                                 "next": target})
    assert answer.status_code == 302 and answer.location == "/console/"
    signed_in = client.get("/console/login?next=" + quote(target, safe=""))
    assert signed_in.status_code == 302 and signed_in.location == "/console/"
    assert client.get("/console/login?next=/console/sources").location == "/console/sources"


def test_migration_0009_adds_the_session_tables_and_takes_them_back(database_url: str) -> None:
    """0009 is the console's: up from 0008 the console signs in; down to 0008 its two tables
    are gone and nothing else is touched; up again it works as before."""
    from alembic import command
    from sqlalchemy import inspect

    from gateway.config import from_mapping
    from gateway.store.db import alembic_config, make_engine
    from tests.conftest import base_config

    def tables() -> set[str]:
        engine = make_engine(database_url)
        try:
            return set(inspect(engine).get_table_names())
        finally:
            engine.dispose()

    config = alembic_config(database_url)
    command.downgrade(config, "0009")  # later revisions' tables are not 0009's business
    everything = tables()
    assert {"console_sessions", "gateway_secrets"} <= everything
    command.downgrade(config, "0008")
    assert tables() == everything - {"console_sessions", "gateway_secrets"}
    command.upgrade(config, "head")
    app = create_app(from_mapping(base_config(database_url)))
    client = app.test_client()
    sign_in(client)
    assert client.get("/console/sources").status_code == 200
    app.extensions["gateway.engine"].dispose()


@pytest.mark.slow
def test_a_graceful_stop_ends_an_open_stream_at_once(tmp_path) -> None:
    """SIGTERM ends the live stream (the browser reconnects elsewhere, from Last-Event-ID)
    instead of holding the stop, and a rolling restart, for the stream's 25 s."""
    import threading
    import time

    import requests

    from tests.conftest import LiveGateway, base_config

    gateway = LiveGateway(tmp_path, base_config(f"sqlite:///{tmp_path / 'gateway.db'}"))
    session = requests.Session()
    try:
        login = session.get(gateway.url + "/console/login", timeout=10)
        token = re.search(r'name="csrf" value="([^"]+)"', login.text).group(1)
        assert session.post(gateway.url + "/console/login", timeout=10, allow_redirects=False,
                            data={"csrf": token, "token": ADMIN_TOKEN}).status_code == 302
        stream = session.get(gateway.url + "/console/stream", stream=True, timeout=30)
        assert stream.status_code == 200
        lines = stream.iter_lines()
        assert next(lines).startswith(b"retry:")
        ended = threading.Event()

        def read_to_the_end() -> None:
            for _ in lines:
                pass
            ended.set()

        threading.Thread(target=read_to_the_end, daemon=True).start()
        started = time.monotonic()
        gateway.process.terminate()
        gateway.process.wait(timeout=15)  # the test's own stop() would kill it after 15 s
        assert time.monotonic() - started < 5
        assert ended.wait(5), "the stream was not ended"
    finally:
        session.close()
        gateway.stop()
