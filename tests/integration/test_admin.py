"""The admin API (docs/design.md §6) over real data: ingested by the app, delivered by the worker to
a stand-in destination."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from gateway import create_app
from gateway.config import from_mapping
from gateway.delivery.worker import Worker
from tests.conftest import WRITE_KEY
from tests.helpers import basic, drain
from tests.standin import Answer, StandIn

TOKEN = "admin-token-for-tests-k3v9q2x7m4w8p6z1"
SECRET = "hook-secret-abc123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def env(database_url: str) -> Iterator[Any]:
    standin = StandIn()
    raw = {
        "database_url": database_url, "admin_token": TOKEN,
        "sources": [{"name": "web", "write_key": WRITE_KEY}],
        "destinations": [
            {"name": "hook", "type": "webhook", "endpoint": standin.url,
             "settings": {"webhookUrl": "https://hooks.example/in", "apiKey": SECRET}},
            {"name": "spare", "type": "webhook", "endpoint": standin.url, "sources": [],
             "settings": {"webhookUrl": "https://spare.example/in", "apiKey": SECRET}},
        ],
        "retry": {"base_delay_seconds": 0},
    }
    app = create_app(from_mapping(raw))
    worker = Worker(app.extensions["gateway.engine"], app.extensions["gateway.config"])

    class Env:
        client = app.test_client()

        def send(self, *messages: dict[str, Any]) -> None:
            response = self.client.post("/v1/batch", json={"batch": list(messages)},
                                        headers=basic(WRITE_KEY))
            assert response.status_code == 200

        def get(self, path: str, **params: Any) -> Any:
            response = self.client.get(path, query_string=params, headers=AUTH)
            assert response.status_code == 200, response.get_data(as_text=True)
            assert SECRET not in response.get_data(as_text=True)
            return response.get_json()

    e = Env()
    e.standin, e.worker, e.raw = standin, worker, raw
    yield e
    worker.close()
    standin.close()
    app.extensions["gateway.engine"].dispose()


def track(user: str, n: int, **extra: Any) -> dict[str, Any]:
    return {"type": "track", "userId": user, "event": f"e{n}", "messageId": f"{user}-{n}",
            **extra}


ROUTES = [("GET", "/admin/v1/events"), ("GET", "/admin/v1/events/1"),
          ("GET", "/admin/v1/deliveries"), ("POST", "/admin/v1/deliveries/1/retry"),
          ("GET", "/admin/v1/identities?user_id=u"), ("POST", "/admin/v1/replay")]


@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {TOKEN}", "Bearer "])
def test_every_admin_route_needs_the_token(env, header) -> None:
    headers = {"Authorization": header} if header else {}
    for method, path in ROUTES:
        response = env.client.open(path, method=method, headers=headers)
        assert response.status_code == 401, path
        assert response.get_json()["code"] == "unauthorized"


def test_events_filters_and_cursor_paging(env) -> None:
    env.send(*(track("u1", n) for n in range(5)), track("u2", 0),
             {"type": "identify", "userId": "u3", "anonymousId": "a3", "messageId": "i3",
              "traits": {"email": "Three@Example.com"}},
             {"type": "page", "anonymousId": "a3", "messageId": "p3"})
    first = env.get("/admin/v1/events", user_id="u1", limit=2)
    assert [e["message_id"] for e in first["data"]] == ["u1-4", "u1-3"]
    second = env.get("/admin/v1/events", user_id="u1", limit=2, cursor=first["next_cursor"])
    third = env.get("/admin/v1/events", user_id="u1", limit=2, cursor=second["next_cursor"])
    assert [e["message_id"] for e in second["data"] + third["data"]] == ["u1-2", "u1-1", "u1-0"]
    assert third["next_cursor"] is None
    assert [e["message_id"] for e in env.get("/admin/v1/events", type="identify")["data"]] == [
        "i3"]
    by_email = env.get("/admin/v1/events", email="three@example.com")["data"]
    assert {e["message_id"] for e in by_email} == {"i3", "p3"}
    assert env.get("/admin/v1/events", event="e0", source="web")["data"][-1]["user_id"] == "u1"
    assert env.get("/admin/v1/events", since="2999-01-01T00:00:00Z")["data"] == []
    for bad in ({"limit": "0"}, {"cursor": "nonsense"}, {"colour": "red"}, {"since": "soon"}):
        response = env.client.get("/admin/v1/events", query_string=bad, headers=AUTH)
        assert response.status_code == 400 and response.get_json()["code"] == "invalid_query"


def test_one_event_with_its_deliveries_and_attempts(env) -> None:
    env.standin.script = [Answer(503, {"echo": SECRET}), Answer(200)]
    env.send(track("u1", 0))
    drain(env.worker)
    [summary] = env.get("/admin/v1/events")["data"]
    event = env.get(f"/admin/v1/events/{summary['id']}")
    assert event["payload"]["event"] == "e0"
    [delivery] = event["deliveries"]
    assert delivery["destination"] == "hook" and delivery["state"] == "delivered"
    assert [a["status"] for a in delivery["attempts"]] == [503, 200]
    assert "***" in delivery["attempts"][0]["excerpt"]
    missing = env.client.get("/admin/v1/events/999999", headers=AUTH)
    assert missing.status_code == 404


def test_dead_delivery_is_listed_and_revived_by_retry(env) -> None:
    env.standin.answer_for = lambda r: Answer(400, {"error": "rejected"}) \
        if len(env.standin.requests) == 1 else None
    env.send(track("u1", 0))
    drain(env.worker)
    [dead] = env.get("/admin/v1/deliveries", state="dead", destination="hook")["data"]
    assert dead["last_status"] == 400 and "rejected" in dead["last_error"]
    revived = env.client.post(f"/admin/v1/deliveries/{dead['id']}/retry", headers=AUTH)
    assert revived.status_code == 200 and revived.get_json()["state"] == "pending"
    again = env.client.post(f"/admin/v1/deliveries/{dead['id']}/retry", headers=AUTH)
    assert again.status_code == 409
    drain(env.worker)
    assert env.get("/admin/v1/deliveries", state="delivered")["data"][0]["id"] == dead["id"]
    assert len(env.standin.requests) == 2
    assert env.client.post("/admin/v1/deliveries/424242/retry", headers=AUTH).status_code == 404


def test_identities_by_any_key(env) -> None:
    env.send({"type": "identify", "userId": "u1", "anonymousId": "a1", "messageId": "i1",
              "traits": {"email": "ann@example.com", "plan": "pro"}})
    by_user = env.get("/admin/v1/identities", user_id="u1")
    assert by_user == env.get("/admin/v1/identities", anonymous_id="a1")
    assert by_user == env.get("/admin/v1/identities", email="ANN@example.com")
    assert by_user["traits"] == {"email": "ann@example.com", "plan": "pro"}
    assert {k["kind"] for k in by_user["keys"]} == {"userId", "anonymousId", "email"}
    assert env.client.get("/admin/v1/identities?user_id=nobody",
                          headers=AUTH).status_code == 404
    for bad in ("", "?user_id=u1&email=x"):
        assert env.client.get(f"/admin/v1/identities{bad}", headers=AUTH).status_code == 400


def test_replay_to_one_destination(env) -> None:
    env.send(*(track("u1", n) for n in range(3)), track("u2", 0))
    drain(env.worker)
    assert len(env.standin.requests) == 4
    body = {"destination": "spare", "filter": {"user_id": "u1"}, "dry_run": True}
    dry = env.client.post("/admin/v1/replay", json=body, headers=AUTH).get_json()
    assert dry == {"replay_id": None, "matched": 3, "queued": 0}
    done = env.client.post("/admin/v1/replay", json={**body, "dry_run": False},
                           headers=AUTH).get_json()
    assert done["matched"] == 3 and done["queued"] == 3 and done["replay_id"]
    drain(env.worker)
    replayed = [r for r in env.standin.requests[4:]]
    assert [r.json["messageId"] for r in replayed] == ["u1-0", "u1-1", "u1-2"]
    assert {r.path for r in replayed} == {"/in"}
    rows = env.get("/admin/v1/deliveries", destination="spare")["data"]
    assert {r["replay_id"] for r in rows} == {done["replay_id"]}
    unknown = env.client.post("/admin/v1/replay", json={"destination": "nope"}, headers=AUTH)
    assert unknown.status_code == 400
    invalid = env.client.post("/admin/v1/replay", json=["x"], headers=AUTH)
    assert invalid.status_code == 400


def test_metrics(env) -> None:
    env.send(track("u1", 0), {"type": "track", "userId": "u1"})
    text = env.client.get("/metrics").get_data(as_text=True)
    assert 'gateway_events_accepted_total{source="web",type="track"}' in text
    assert 'gateway_events_rejected_total{source="web",type="track"}' in text
    assert 'gateway_delivery_queue_depth{destination="hook"} 1.0' in text
    assert "gateway_delivery_oldest_pending_seconds" in text
    drain(env.worker)
    text = env.client.get("/metrics").get_data(as_text=True)
    assert 'gateway_deliveries_total{destination="hook",outcome="delivered"}' in text
    assert "gateway_delivery_attempt_seconds_bucket" in text
    assert SECRET not in text and WRITE_KEY not in text


def test_metrics_behind_the_token_when_configured(env) -> None:
    raw = {**env.raw, "admin": {"metrics_require_token": True}}
    app = create_app(from_mapping(raw))
    client = app.test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=AUTH).status_code == 200
    app.extensions["gateway.engine"].dispose()
