"""Regulations: suppress, unsuppress, delete and suppress_with_delete, over HTTP on
SQLite and PostgreSQL — the admin API of the real app, its tracking API, the real delivery
worker, and stand-ins for Custify and Customer.io."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import Engine, MetaData, select

from gateway import create_app
from gateway.config import from_mapping
from gateway.delivery.worker import Worker
from gateway.regulations import service
from gateway.store.models import delivery_attempts, events
from tests.conftest import ADMIN_TOKEN, WRITE_KEY, LiveGateway, base_config
from tests.helpers import basic
from tests.standin import Answer, StandIn

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ANN = {"userId": "ann-42", "anonymousId": "anon-ann-1", "email": "Ann@Example.com"}
ANN_VALUES = ("ann-42", "anon-ann-1", "ann@example.com", "anon-ann-2")


def raw_config(database_url: str, standin: StandIn | None = None,
               batching: bool = False) -> dict[str, Any]:
    """Custify and Customer.io delete; the webhook cannot. `batching` adds a Customer.io
    destination on the v2 batch API (its events go through router mode, its deletion not)."""
    endpoint = {"endpoint": standin.url} if standin else {}
    extra = [{"name": "cio-v2", "type": "customerio", **endpoint,
              "settings": {"siteID": "site-2", "apiKey": "cio-key-2", "v2Batching": True}}
             ] if batching else []
    return base_config(database_url, destinations=[*extra,
        {"name": "custify", "type": "custify", **endpoint, "settings": {"apiKey": "cus-key"}},
        {"name": "cio", "type": "customerio", **endpoint,
         "settings": {"siteID": "site-1", "apiKey": "cio-key"}},
        {"name": "hook", "type": "webhook", **endpoint,
         "settings": {"webhookUrl": "https://hooks.example/in"}},
    ], retry={"base_delay_seconds": 0})


class Env:
    """The app on one database, a worker, and a stand-in for every destination."""

    def __init__(self, database_url: str, batching: bool = False) -> None:
        self.standin = StandIn()
        self.app = create_app(from_mapping(raw_config(database_url, self.standin, batching)))
        self.client = self.app.test_client()
        self.engine: Engine = self.app.extensions["gateway.engine"]
        self.worker = Worker(self.engine, self.app.extensions["gateway.config"])

    def send(self, *messages: dict[str, Any], client: Any = None) -> None:
        response = (client or self.client).post("/v1/batch", json={"batch": list(messages)},
                                                headers=basic(WRITE_KEY))
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.get_json() == {"success": True}

    def regulate(self, kind: str, **subject: str) -> dict[str, Any]:
        response = self.client.post("/admin/v1/regulations", headers=AUTH,
                                    json={"type": kind, "subject": subject})
        assert response.status_code == 202, response.get_data(as_text=True)
        return response.get_json()

    def regulation(self, regulation_id: int) -> dict[str, Any]:
        response = self.client.get(f"/admin/v1/regulations/{regulation_id}", headers=AUTH)
        assert response.status_code == 200
        return response.get_json()

    def deliver(self, seconds: float = 15) -> None:
        """Run the worker until nothing is due, then close finished regulations (the worker's
        tick does that in `gateway serve`)."""
        deadline = time.monotonic() + seconds
        while self.worker.run_once() and time.monotonic() < deadline:
            pass
        service.finish_due(self.engine)

    def close(self) -> None:
        self.worker.close()
        self.standin.close()
        self.engine.dispose()


@pytest.fixture
def env(database_url: str) -> Iterator[Env]:
    e = Env(database_url)
    yield e
    e.close()


def event_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return len(connection.execute(select(events.c.id)).all())


def everything(engine: Engine) -> str:
    """Every row of every table, as text: what a deletion must leave no trace of."""
    metadata = MetaData()
    metadata.reflect(engine)
    lines = []
    with engine.connect() as connection:
        for table in metadata.sorted_tables:
            for row in connection.execute(select(table)):
                lines.append(f"{table.name}: {tuple(row)}")
    return "\n".join(lines).lower()


def ann_history() -> list[dict[str, Any]]:
    return [
        {"type": "identify", "messageId": "ann-1", "userId": ANN["userId"],
         "anonymousId": ANN["anonymousId"], "traits": {"email": ANN["email"], "plan": "pro"}},
        {"type": "track", "messageId": "ann-2", "userId": ANN["userId"], "event": "Paid"},
        {"type": "page", "messageId": "ann-3", "anonymousId": ANN["anonymousId"]},
    ]


def bob(message_id: str) -> dict[str, Any]:
    return {"type": "track", "messageId": message_id, "userId": "bob-7", "event": "Viewed"}


# --- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "message"), [
    (None, "expected {"),
    ([], "expected {"),
    ({"subject": {"user_id": "u"}}, "type: one of suppress, unsuppress, delete"),
    ({"type": "erase", "subject": {"user_id": "u"}}, "type: one of"),
    ({"type": "delete"}, "subject: an object with exactly one of"),
    ({"type": "delete", "subject": {}}, "exactly one of"),
    ({"type": "delete", "subject": {"user_id": "u", "email": "a@b.c"}}, "exactly one of"),
    ({"type": "delete", "subject": {"phone": "1"}}, "unknown key 'phone'"),
    ({"type": "delete", "subject": {"user_id": ""}}, "subject.user_id: a non-empty string"),
    ({"type": "delete", "subject": {"user_id": 5}}, "subject.user_id: a non-empty string"),
    ({"type": "delete", "subject": {"email": "not-an-email"}}, "not an email address"),
    ({"type": "delete", "subject": {"user_id": "x" * 1001}}, "at most 1000 characters"),
    ({"type": "delete", "subject": {"user_id": "u"}, "force": True}, "unknown field 'force'"),
    ({"type": "delete", "subject": {"user_id": "u"}, "dry_run": "yes"},
     "dry_run: true or false"),
])
def test_bad_requests_get_clear_errors(env: Env, body: Any, message: str) -> None:
    response = env.client.post("/admin/v1/regulations", headers=AUTH, json=body)
    assert response.status_code == 400
    assert response.get_json()["code"] == "invalid_regulation"
    assert message in response.get_json()["message"]


def test_routes_need_the_token_and_known_ids(env: Env) -> None:
    assert env.client.post("/admin/v1/regulations", json={
        "type": "delete", "subject": {"user_id": "u"}}).status_code == 401
    assert env.client.get("/admin/v1/regulations").status_code == 401
    missing = env.client.get("/admin/v1/regulations/999", headers=AUTH)
    assert missing.status_code == 404 and missing.get_json()["code"] == "not_found"
    assert env.client.get("/admin/v1/regulations/0", headers=AUTH).status_code == 400
    bad = env.client.get("/admin/v1/regulations?colour=red", headers=AUTH)
    assert bad.status_code == 400 and "unknown filter 'colour'" in bad.get_json()["message"]
    assert env.client.get("/admin/v1/regulations?cursor=zz", headers=AUTH).status_code == 400
    status = env.client.get("/admin/v1/regulations?status=done", headers=AUTH)
    assert status.status_code == 400 and "running, finished, failed" in status.get_json()[
        "message"]


def test_list_pages_newest_first(env: Env) -> None:
    made = [env.regulate("suppress", user_id=f"user-{i}")["id"] for i in range(5)]
    first = env.client.get("/admin/v1/regulations?limit=2", headers=AUTH).get_json()
    assert [r["id"] for r in first["data"]] == made[:-3:-1]
    second = env.client.get(f"/admin/v1/regulations?limit=2&cursor={first['next_cursor']}",
                            headers=AUTH).get_json()
    assert [r["id"] for r in second["data"]] == [made[2], made[1]]
    only = env.client.get("/admin/v1/regulations?type=unsuppress", headers=AUTH).get_json()
    assert only == {"data": [], "next_cursor": None}


# --- dry run: what a regulation will cover ------------------------------------------------------

def test_a_dry_run_shows_a_widened_profile_and_changes_nothing(env: Env) -> None:
    """Anyone with the write key can link their email to another person's profile; a dry run
    for that email shows whose keys and rows a deletion would reach, and writes nothing."""
    env.send({"type": "identify", "messageId": "v-1", "userId": "victim-123",
              "traits": {"email": "victim@example.com"}},
             {"type": "track", "messageId": "v-2", "userId": "victim-123", "event": "Paid"},
             {"type": "identify", "messageId": "a-1", "userId": "victim-123",
              "traits": {"email": "attacker@evil.example"}},
             bob("bob-1"))
    before = everything(env.engine)

    def dry_run(kind: str) -> dict[str, Any]:
        response = env.client.post("/admin/v1/regulations", headers=AUTH, json={
            "type": kind, "subject": {"email": "Attacker@Evil.example"}, "dry_run": True})
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()

    plan = dry_run("delete")
    assert plan["dry_run"] is True and plan["type"] == "delete"
    assert plan["subject"] == {"email": "attacker@evil.example"}
    assert plan["profile"]["id"] is not None
    assert plan["profile"]["keys"] == {"user_ids": ["victim-123"], "anonymous_ids": [],
                                       "emails": ["attacker@evil.example",
                                                  "victim@example.com"]}
    assert plan["destinations"] == {
        "custify": {"type": "custify", "deletion": "requested"},
        "cio": {"type": "customerio", "deletion": "requested"},
        "hook": {"type": "webhook", "deletion": "unsupported"}}
    assert plan["counts"]["events"] == 3 and plan["counts"]["identities"] == 1
    assert plan["counts"]["identity_keys"] == 3
    assert plan["counts"]["deliveries"] >= 3
    suppress = dry_run("suppress_with_delete")
    assert suppress["counts"]["suppressed_keys"] == 3
    assert suppress["counts"]["events"] == 3
    assert dry_run("suppress")["destinations"] == {}
    # nothing written: no regulation, no suppression, every row as it was
    assert everything(env.engine) == before
    assert env.client.get("/admin/v1/regulations", headers=AUTH).get_json()["data"] == []
    env.send({"type": "track", "messageId": "v-3", "userId": "victim-123", "event": "Again"})
    plan = dry_run("delete")
    assert plan["counts"]["events"] == 4

    # the dry run said exactly what the regulation then did
    done = env.regulate("delete", email="attacker@evil.example")
    assert {k: done["counts"][k] for k in plan["counts"]} == plan["counts"]
    assert set(done["destinations"]) == set(plan["destinations"])
    assert event_count(env.engine) == 1  # Bob's


# --- suppression -----------------------------------------------------------------------------

def test_suppress_drops_the_next_events_of_every_key_and_unsuppress_restores(env: Env) -> None:
    env.send(*ann_history(), bob("bob-1"))
    stored = event_count(env.engine)
    tracks, identifies = suppressed_count(env, "track"), suppressed_count(env, "identify")
    regulation = env.regulate("suppress", email="ANN@example.com")
    assert regulation["type"] == "suppress" and regulation["status"] == "finished"
    assert regulation["subject_kind"] == "email"
    assert regulation["counts"]["suppressed_keys"] == 3  # userId, anonymousId, email

    # every key of the profile is suppressed: answered 200, not stored, not routed
    env.send({"type": "track", "messageId": "s-1", "userId": ANN["userId"], "event": "X"},
             {"type": "page", "messageId": "s-2", "anonymousId": ANN["anonymousId"]},
             {"type": "alias", "messageId": "s-3", "userId": "new-id",
              "previousId": ANN["userId"]},
             bob("bob-2"))
    assert event_count(env.engine) == stored + 1  # only Bob's
    # an identify linking a new key to the suppressed person is suppressed, and so is the key
    env.send({"type": "identify", "messageId": "s-4", "userId": ANN["userId"],
              "anonymousId": "anon-ann-2"})
    env.send({"type": "track", "messageId": "s-5", "anonymousId": "anon-ann-2", "event": "Y"})
    assert event_count(env.engine) == stored + 1
    assert suppressed_count(env, "track") == tracks + 2
    assert suppressed_count(env, "identify") == identifies + 1

    lifted = env.regulate("unsuppress", user_id=ANN["userId"])
    # the 3 keys, and those the suppression spread to: new-id and anonymousId ann-42 (the
    # alias), anon-ann-2 (the identify)
    assert lifted["status"] == "finished" and lifted["counts"]["unsuppressed_keys"] == 6
    env.send({"type": "track", "messageId": "s-6", "anonymousId": "anon-ann-2", "event": "Z"},
             {"type": "track", "messageId": "s-7", "userId": ANN["userId"], "event": "Z"})
    assert event_count(env.engine) == stored + 3


def suppressed_count(env: Env, kind: str) -> float:
    """gateway_events_suppressed_total{source="web",type=kind} as /metrics shows it (counters
    are per process, so tests compare before and after)."""
    name = f'gateway_events_suppressed_total{{source="web",type="{kind}"}} '
    for line in env.client.get("/metrics").get_data(as_text=True).splitlines():
        if line.startswith(name):
            return float(line[len(name):])
    return 0.0


def test_suppression_holds_in_every_app_instance(database_url: str) -> None:
    """Two app instances (two engines, two group committers) on one database: a suppression
    made through one holds for the next request of the other."""
    first, second = Env(database_url), Env(database_url)
    try:
        second.send(*ann_history())
        stored = event_count(first.engine)
        first.regulate("suppress", user_id=ANN["userId"])
        second.send({"type": "track", "messageId": "o-1", "userId": ANN["userId"], "event": "X"})
        assert event_count(first.engine) == stored
        first.regulate("unsuppress", anonymous_id=ANN["anonymousId"])
        second.send({"type": "track", "messageId": "o-2", "userId": ANN["userId"], "event": "X"})
        assert event_count(first.engine) == stored + 1
    finally:
        first.close()
        second.close()


@pytest.mark.slow
def test_suppression_holds_in_every_gunicorn_worker(database_url: str, tmp_path: Path) -> None:
    """A real `gateway serve` with two worker processes: after a suppression, every answer is
    200 and nothing of the person is stored, whichever process answers."""
    gateway = LiveGateway(tmp_path, raw_config(database_url), workers=2)
    try:
        track = gateway.url + "/v1/track"
        for i in range(6):
            response = requests.post(track, json={"userId": "ann-42", "event": "Before",
                                                  "messageId": f"b-{i}"},
                                     auth=(WRITE_KEY, ""), timeout=10)
            assert response.status_code == 200
        created = requests.post(gateway.url + "/admin/v1/regulations", headers=AUTH, json={
            "type": "suppress", "subject": {"user_id": "ann-42"}}, timeout=10)
        assert created.status_code == 202 and created.json()["status"] == "finished"
        pids = set()
        for i in range(40):  # new connections: both processes answer some
            response = requests.post(track, json={"userId": "ann-42", "event": "After",
                                                  "messageId": f"a-{i}"},
                                     auth=(WRITE_KEY, ""), timeout=10,
                                     headers={"Connection": "close"})
            assert response.status_code == 200 and response.json() == {"success": True}
        listed = requests.get(gateway.url + "/admin/v1/events?user_id=ann-42&limit=100",
                              headers=AUTH, timeout=10).json()["data"]
        assert sorted(e["message_id"] for e in listed) == [f"b-{i}" for i in range(6)]
        metrics = requests.get(gateway.url + "/metrics", timeout=10).text
        assert 'gateway_events_suppressed_total{source="web",type="track"} 40.0' in metrics
        pids = {line for line in gateway.log_text().splitlines() if "Booting worker" in line}
        assert len(pids) >= 2  # two gunicorn processes served
    finally:
        gateway.stop()


# --- deletion --------------------------------------------------------------------------------

def test_delete_removes_every_row_and_reaches_custify_and_customerio(database_url: str) -> None:
    env = Env(database_url, batching=True)
    try:
        _delete_everything(env)
    finally:
        env.close()


def _delete_everything(env: Env) -> None:
    env.send(*ann_history(), bob("bob-1"))
    env.deliver()  # some attempts exist…
    env.send({"type": "track", "messageId": "ann-4", "userId": ANN["userId"], "event": "Late"})
    # …and some deliveries are still pending: the deletion cancels them
    env.standin.requests.clear()
    regulation = env.regulate("delete", anonymous_id=ANN["anonymousId"])
    assert regulation["status"] == "running"
    counts = regulation["counts"]
    assert counts["events"] == 4 and counts["identities"] == 1 and counts["identity_keys"] == 3
    assert counts["deliveries"] == 16 and counts["deliveries_cancelled"] == 4
    assert counts["delivery_attempts"] >= 12
    assert set(regulation["destinations"]) == {"custify", "cio", "cio-v2", "hook"}
    assert all(d["status"] == "running" for d in regulation["destinations"].values())
    # the gateway holds nothing of the person but the pending deletion requests
    assert env.client.get("/admin/v1/events?user_id=ann-42", headers=AUTH).get_json()[
        "data"] == []
    assert env.client.get("/admin/v1/identities?email=ann@example.com",
                          headers=AUTH).status_code == 404
    replay = env.client.post("/admin/v1/replay", headers=AUTH, json={
        "destination": "hook", "filter": {"user_id": "ann-42"}}).get_json()
    assert replay["matched"] == 0

    env.deliver()
    sent = [(r.method, r.path) for r in env.standin.requests]
    assert ("DELETE", "/people?user_id=ann-42") in sent  # Custify's user deletion
    assert sent.count(("DELETE", "/api/v1/customers/ann-42")) == 2  # both Customer.io's
    assert not any(r.method != "DELETE" for r in env.standin.requests)  # nothing else sent
    custify = next(r for r in env.standin.requests if r.path.startswith("/people"))
    assert custify.headers["Authorization"] == "Bearer cus-key"

    done = env.regulation(regulation["id"])
    assert done["status"] == "finished" and done["finished_at"]
    assert done["counts"] == counts
    assert {n: d["status"] for n, d in done["destinations"].items()} == {
        "custify": "finished", "cio": "finished", "cio-v2": "finished", "hook": "unsupported"}
    assert "no user deletion" in done["destinations"]["hook"]["last_error"]
    # no row of the profile in any table: its keys appear nowhere, Bob's data stays
    dump = everything(env.engine)
    for value in ANN_VALUES:
        assert value not in dump, value
    assert "bob-7" in dump
    # the deletion's own deliveries and attempts are in the normal records
    deliveries = env.client.get("/admin/v1/deliveries?destination=cio",
                                headers=AUTH).get_json()["data"]
    deletion = next(d for d in deliveries if d["event_id"] is None)
    assert deletion["state"] == "delivered" and deletion["user_key"].startswith("regulation:")


def test_deletion_retries_through_the_normal_machinery(env: Env) -> None:
    env.send(*ann_history())
    env.deliver()
    env.standin.requests.clear()
    answers = {"/api/v1/customers/ann-42": [Answer(503), Answer(200)],
               "/people?user_id=ann-42": [Answer(401, {"error": "bad token"})]}
    env.standin.answer_for = lambda r: answers[r.path].pop(0) if answers.get(r.path) else None
    regulation = env.regulate("suppress_with_delete", user_id=ANN["userId"])
    assert regulation["counts"]["suppressed_keys"] == 3 and regulation["counts"]["events"] == 3
    env.deliver()
    done = env.regulation(regulation["id"])
    assert done["status"] == "failed"
    cio, custify = done["destinations"]["cio"], done["destinations"]["custify"]
    assert cio["status"] == "finished" and cio["attempts"] == 2
    assert custify["status"] == "failed" and custify["last_status"] == 401
    assert "ann-42" not in str(done)
    with env.engine.connect() as connection:  # each attempt recorded, as for events
        statuses = connection.execute(select(delivery_attempts.c.status).where(
            delivery_attempts.c.delivery_id == cio["delivery_id"])
            .order_by(delivery_attempts.c.number)).scalars().all()
    assert statuses == [503, 200]
    # suppressed too: the person's next events are dropped
    env.send({"type": "track", "messageId": "after", "userId": ANN["userId"], "event": "X"})
    assert event_count(env.engine) == 0
    dump = everything(env.engine)
    for value in ANN_VALUES:
        assert value not in dump, value


def test_delete_without_a_profile_still_reaches_destinations(env: Env) -> None:
    """A person the gateway never stored (or already deleted) may still be known downstream."""
    regulation = env.regulate("delete", email="Carol@Example.com")
    assert regulation["counts"]["events"] == 0 and regulation["status"] == "running"
    env.deliver()
    sent = [(r.method, r.path) for r in env.standin.requests]
    assert sent == [("DELETE", "/api/v1/customers/carol%40example.com")]
    done = env.regulation(regulation["id"])
    assert {n: d["status"] for n, d in done["destinations"].items()} == {
        "custify": "unsupported", "cio": "finished", "hook": "unsupported"}
    assert "carol" not in everything(env.engine)


def test_plain_delete_keeps_collecting(env: Env) -> None:
    env.send(*ann_history())
    env.regulate("delete", user_id=ANN["userId"])
    assert event_count(env.engine) == 0
    env.send({"type": "track", "messageId": "again", "userId": ANN["userId"], "event": "Back"})
    assert event_count(env.engine) == 1


def test_ids_are_percent_encoded_in_deletion_urls(env: Env) -> None:
    env.regulate("delete", user_id="a&b c/d")
    env.deliver()
    assert sorted(r.path for r in env.standin.requests) == [
        "/api/v1/customers/a%26b%20c%2Fd", "/people?user_id=a%26b%20c%2Fd"]


def test_a_dead_deletion_retried_after_its_regulation_closed_says_why(env: Env) -> None:
    """A closed regulation has erased its keys: retrying its dead delivery cannot send them
    again, and says so (a new delete regulation sends the deletion again)."""
    env.standin.answer_for = lambda r: Answer(400, {"meta": {"error": "nope"}}) \
        if r.path.startswith("/api/") else None
    regulation = env.regulate("delete", user_id="erin-5")
    env.deliver()
    done = env.regulation(regulation["id"])
    assert done["status"] == "failed" and done["destinations"]["cio"]["status"] == "failed"
    delivery_id = done["destinations"]["cio"]["delivery_id"]
    retried = env.client.post(f"/admin/v1/deliveries/{delivery_id}/retry", headers=AUTH)
    assert retried.status_code == 200 and retried.get_json()["regulation_id"] == done["id"]
    env.deliver()
    row = env.client.get("/admin/v1/deliveries?destination=cio", headers=AUTH).get_json()[
        "data"][0]
    assert row["id"] == delivery_id and row["state"] == "skipped"
    assert "erased when its regulation finished" in row["last_error"]
    assert "erin" not in everything(env.engine)


def test_a_destination_that_no_longer_knows_the_person_counts_as_deleted(env: Env) -> None:
    """Custify and Customer.io answer 404 for a person they do not have: the adapters read
    that as "gone", so the deletion is finished there, not a failure."""
    env.standin.answer_for = lambda r: Answer(404, {"error": "not found"}) \
        if r.method == "DELETE" else None
    regulation = env.regulate("delete", user_id="gone-9")
    env.deliver()
    done = env.regulation(regulation["id"])
    assert {n: d["status"] for n, d in done["destinations"].items()} == {
        "custify": "finished", "cio": "finished", "hook": "unsupported"}
    assert done["status"] == "finished"


def test_a_deletion_does_not_overtake_a_send_in_flight(env: Env) -> None:
    """A worker may be sending the person's event when the deletion removes its row: the
    deletion requests must not be claimable until that send is over, or the event would reach
    the destination after the deletion and recreate the person there."""
    env.send(*ann_history())
    in_flight = env.worker.claim(100)  # claimed, not yet sent (a lane's queue, a slow answer)
    assert {c.destination for c in in_flight} >= {"custify", "cio"}
    env.regulate("delete", user_id=ANN["userId"])
    overtaking = [c for c in env.worker.claim(100) if c.regulation_id is not None]
    assert overtaking == []


def test_a_request_being_written_cannot_outlive_a_suppress_with_delete(env: Env) -> None:
    """PostgreSQL, several processes: a group commit that passed the suppression check but has
    not committed yet when a suppress_with_delete runs must not leave the person's event (and a
    new profile) behind once both have committed: the regulation waits for it."""
    import threading
    from datetime import UTC, datetime

    from gateway import ingest
    from gateway.identity import IdentityGraph
    from gateway.messages import RequestInfo, normalise_batch
    from gateway.regulations.suppression import suppressed_messages

    if env.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer: a regulation never runs beside a write")
    env.send(*ann_history())
    config = env.app.extensions["gateway.config"]
    now = datetime.now(UTC)
    messages, _ = normalise_batch([{"type": "track", "messageId": "in-flight",
                                    "userId": ANN["userId"], "event": "Late"}],
                                  RequestInfo(received_at=now), config.limits)
    request = ingest._Request(config, "web", messages, now)
    with env.engine.connect() as writing:  # ingest._store, step by step
        transaction = writing.begin()
        assert suppressed_messages(writing, [request]) == set()
        ingest._insert_new_events(writing, [ingest._event_row("web", messages[0], now)])
        done: list[dict[str, Any]] = []
        regulating = threading.Thread(target=lambda: done.append(
            env.regulate("suppress_with_delete", user_id=ANN["userId"])))
        regulating.start()
        regulating.join(1.0)
        IdentityGraph(writing).apply(messages)
        transaction.commit()
    regulating.join(10)
    assert done and done[0]["status"] == "running"
    assert event_count(env.engine) == 0
    assert "in-flight" not in everything(env.engine)
