"""Consent per destination end to end, on SQLite and PostgreSQL: the real app ingests, the real
worker delivers to a stand-in. A refused event keeps its delivery row, `skipped` with the rule's
reason, shown by the deliveries list, `explain` and the console; a replay obeys consent too
(it goes through the same send path)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from gateway import create_app
from gateway.config import from_mapping
from gateway.delivery.worker import Worker
from gateway.store.models import events
from tests.conftest import ADMIN_TOKEN, WRITE_KEY
from tests.helpers import ADMIN_AUTH, basic, drain, explain, stored_deliveries
from tests.standin import StandIn

ONE_TRUST = {"oneTrustCookieCategories": [{"oneTrustCookieCategory": "C0004"},
                                          {"oneTrustCookieCategory": ""}]}
CUSTOM = {"consentManagement": [{"provider": "custom", "resolutionStrategy": "or",
                                 "consents": [{"consent": "marketing"}, {"consent": "ads"}]}]}
DENIED_C0004 = "Consent: denied C0004 (oneTrust)"
NOT_ADVERTISING = "Consent: not granted Advertising (Segment categoryPreferences)"


@pytest.fixture
def env(database_url: str) -> Iterator[Any]:
    standin = StandIn()
    raw = {
        "database_url": database_url, "admin_token": ADMIN_TOKEN,
        "sources": [{"name": "web", "write_key": WRITE_KEY}],
        "destinations": [
            # RudderStack's keys, copied into settings
            {"name": "hook", "type": "webhook", "endpoint": standin.url,
             "settings": {"webhookUrl": "https://h.example/hook", **ONE_TRUST, **CUSTOM}},
            # a batching destination (router mode): consent is decided per item
            {"name": "cio", "type": "customerio", "endpoint": standin.url,
             "settings": {"siteID": "s", "apiKey": "k", "v2Batching": True, **ONE_TRUST}},
            # Segment's shape
            {"name": "ads", "type": "webhook", "endpoint": standin.url,
             "settings": {"webhookUrl": "https://h.example/ads"},
             "consent": {"categories": ["Advertising"]}},
            # linked to no source: only replays reach it
            {"name": "spare", "type": "webhook", "endpoint": standin.url, "sources": [],
             "settings": {"webhookUrl": "https://h.example/spare", **ONE_TRUST}},
        ],
        "retry": {"base_delay_seconds": 0},
    }
    app = create_app(from_mapping(raw))
    worker = Worker(app.extensions["gateway.engine"], app.extensions["gateway.config"])

    class Env:
        client = app.test_client()
        engine = app.extensions["gateway.engine"]

        def states(self) -> dict[tuple[str, str], list[tuple[str, str | None]]]:
            """(destination, messageId) → [(state, last_error)] in delivery order."""
            ids = {e.id: e.message_id for e in self.events()}
            found: dict[tuple[str, str], list[tuple[str, str | None]]] = {}
            for d in stored_deliveries(self.engine):
                found.setdefault((d["destination"], ids[d["event_id"]]), []).append(
                    (d["state"], d["last_error"]))
            return found

        def events(self) -> list[Any]:
            with self.engine.connect() as connection:
                return connection.execute(select(events.c.id, events.c.message_id)).all()

    e = Env()
    e.app, e.standin, e.worker = app, standin, worker
    yield e
    worker.close()
    standin.close()
    app.extensions["gateway.engine"].dispose()


def message(mid: str, context: dict[str, Any]) -> dict[str, Any]:
    return {"type": "track", "userId": f"user-{mid}", "event": "Bought", "messageId": mid,
            "context": context}


MESSAGES = [
    message("plain", {}),
    message("rs-denied", {"consentManagement": {"provider": "oneTrust",
                                                "deniedConsentIds": ["C0004", "C0002"]}}),
    message("rs-other", {"consentManagement": {"deniedConsentIds": ["C0002", ""]}}),
    message("custom-one", {"consentManagement": {"provider": "custom",
                                                 "deniedConsentIds": ["marketing"]}}),
    message("custom-all", {"consentManagement": {"provider": "custom", "resolutionStrategy": "or",
                                                 "deniedConsentIds": ["ads", "marketing"]}}),
    message("seg-no", {"consent": {"categoryPreferences": {"Advertising": False}}}),
    message("seg-yes", {"consent": {"categoryPreferences": {"Advertising": True}}}),
]

SKIPPED = {
    ("hook", "rs-denied"): DENIED_C0004,
    ("cio", "rs-denied"): DENIED_C0004,
    ("hook", "custom-all"): "Consent: denied every one of marketing, ads "
                            "(consentManagement custom, or)",
    ("ads", "seg-no"): NOT_ADVERTISING,
}


def test_refused_deliveries_are_skipped_with_the_rule_and_shown(env) -> None:
    response = env.client.post("/v1/batch", json={"batch": MESSAGES}, headers=basic(WRITE_KEY))
    assert response.status_code == 200
    drain(env.worker)

    states = env.states()
    mids = [m["messageId"] for m in MESSAGES]
    # every routed destination kept its row: consent skips at send, it does not un-route
    assert set(states) == {(d, m) for d in ("hook", "cio", "ads") for m in mids}
    for key, rows in states.items():
        expected = ("skipped", SKIPPED[key]) if key in SKIPPED else ("delivered", None)
        assert rows == [expected], key

    # the destinations received exactly what consent let through
    sent = [(r.path, r.json) for r in env.standin.requests]
    hook = [body["messageId"] for path, body in sent if path == "/hook"]
    ads = [body["messageId"] for path, body in sent if path == "/ads"]
    assert sorted(hook) == sorted(set(mids) - {"rs-denied", "custom-all"})
    assert sorted(ads) == sorted(set(mids) - {"seg-no"})
    cio_text = " ".join(str(body) for path, body in sent if path not in ("/hook", "/ads"))
    assert "user-rs-denied" not in cio_text
    assert all(f"user-{m}" in cio_text for m in mids if m != "rs-denied")

    # the deliveries list (admin API) shows the reason
    listed = env.client.get("/admin/v1/deliveries", query_string={"state": "skipped"},
                            headers=ADMIN_AUTH).get_json()["data"]
    assert sorted(r["last_error"] for r in listed) == sorted(SKIPPED.values())

    # explain says it was consent, naming the rule
    found = {d["destination"]: d for d in explain(env.app, "rs-denied")["events"][0][
        "destinations"]}
    assert found["hook"]["verdict"] == "skipped"
    assert found["hook"]["words"] == "skipped for consent: denied C0004 (oneTrust)"
    assert found["ads"]["verdict"] == "delivered"

    # the console: the deliveries desk and the event page
    console = env.app.test_client()
    login = console.get("/console/login").get_data(as_text=True)
    csrf = login.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    assert console.post("/console/login", data={"csrf": csrf, "token": ADMIN_TOKEN}
                        ).status_code == 302
    desk = console.get("/console/deliveries?state=skipped").get_data(as_text=True)
    assert DENIED_C0004 in desk and NOT_ADVERTISING in desk
    event_id = next(e.id for e in env.events() if e.message_id == "seg-no")
    page = console.get(f"/console/events/{event_id}").get_data(as_text=True)
    assert "skipped for consent: not granted Advertising" in page
    overview = console.get("/console/destinations").get_data(as_text=True)
    assert "consentManagement custom (or): marketing, ads; oneTrustCookieCategories: C0004" \
        in overview and "Segment categories: Advertising" in overview


def test_replay_respects_consent(env) -> None:
    env.client.post("/v1/batch", json={"batch": MESSAGES[:3]}, headers=basic(WRITE_KEY))
    drain(env.worker)
    before = len(env.standin.requests)
    for destination in ("spare", "hook"):
        done = env.client.post("/admin/v1/replay", json={"destination": destination,
                                                         "dry_run": False},
                               headers=ADMIN_AUTH).get_json()
        assert done["queued"] == 3
    drain(env.worker)

    states = env.states()
    assert states[("spare", "rs-denied")] == [("skipped", DENIED_C0004)]
    assert states[("spare", "plain")] == states[("spare", "rs-other")] == [("delivered", None)]
    assert states[("hook", "rs-denied")] == [("skipped", DENIED_C0004)] * 2  # first, replay
    replayed = [(r.path, r.json["messageId"]) for r in env.standin.requests[before:]]
    assert sorted(replayed) == sorted([("/spare", "plain"), ("/spare", "rs-other"),
                                       ("/hook", "plain"), ("/hook", "rs-other")])
