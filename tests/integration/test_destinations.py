"""Each real adapter through the real worker to a stand-in of its API (the stand-in rules of
each `<dest>.md` §7): the requests arrive as the conformance cases expect, per-user order
holds, and the destination's own partial failures land on the right deliveries."""

from __future__ import annotations

import base64

from tests.helpers import run, stored_deliveries
from tests.standin import Answer, Received, StandIn

CIO_AUTH = "Basic " + base64.b64encode(b"site-1:cio-key").decode()


def test_customerio_v1_people_and_events(database_url: str, standin: StandIn) -> None:
    standin.answer_for = lambda r: None if r.headers.get("Authorization") == CIO_AUTH \
        else Answer(401, {"meta": {"error": "unauthorized"}})
    worker = run(database_url, standin,
                 {"name": "cio", "type": "customerio",
                  "settings": {"siteID": "site-1", "apiKey": "cio-key"}},
                 {"type": "identify", "userId": "u@x.io", "traits": {"plan": "pro"}},
                 {"type": "track", "userId": "u@x.io", "event": "Paid",
                  "properties": {"total": 3}})
    assert [(r.method, r.path) for r in standin.requests] == [
        ("PUT", "/api/v1/customers/u%40x.io"), ("POST", "/api/v1/customers/u%40x.io/events")]
    assert standin.requests[0].json["plan"] == "pro"
    assert standin.requests[1].json["name"] == "Paid"
    assert {d["state"] for d in stored_deliveries(worker.engine)} == {"delivered"}
    worker.close()


def test_customerio_v2_batches_per_round_and_a_207_fails_only_its_item(
        database_url: str, standin: StandIn) -> None:
    def answer(request: Received) -> Answer | None:
        if len(standin.requests) == 1:  # the first batch: its second item is refused
            return Answer(207, {"errors": [{"batch_index": 1, "reason": "invalid",
                                            "field": "name", "message": "too long"}]})
        return None

    standin.answer_for = answer
    messages = [{"type": "track", "userId": user, "event": f"e{n}", "messageId": f"{user}-{n}"}
                for n in range(2) for user in ("a", "b", "c")]
    worker = run(database_url, standin,
                 {"name": "cio", "type": "customerio",
                  "settings": {"siteID": "site-1", "apiKey": "cio-key", "v2Batching": True}},
                 *messages)
    batches = [[item["identifiers"]["id"] + "/" + item["name"] for item in r.json["batch"]]
               for r in standin.requests]
    assert [r.path for r in standin.requests] == ["/api/v2/batch", "/api/v2/batch"]
    assert batches == [["a/e0", "b/e0", "c/e0"], ["a/e1", "b/e1", "c/e1"]]  # per-user order
    states = {(d["user_key"], d["state"]) for d in stored_deliveries(worker.engine)}
    assert ("b", "dead") in states and ("a", "delivered") in states
    dead = [d for d in stored_deliveries(worker.engine) if d["state"] == "dead"]
    assert len(dead) == 1 and dead[0]["last_error"].endswith(
        "reason: invalid, field: name, message: too long")
    worker.close()


def test_custify_group_upserts_the_company_then_attaches_the_person(
        database_url: str, standin: StandIn) -> None:
    worker = run(database_url, standin,
                 {"name": "custify", "type": "custify", "settings": {"apiKey": "cu-key"}},
                 {"type": "group", "userId": "u1", "groupId": "g1",
                  "traits": {"name": "Acme", "plan": "GOLD", "employees": 12}})
    assert [(r.method, r.path) for r in standin.requests] == [("POST", "/company"),
                                                              ("POST", "/people")]
    company, person = (r.json for r in standin.requests)
    assert company == {"company_id": "g1", "name": "Acme", "plan": "GOLD",
                       "custom_attributes": {"employees": 12}}
    assert person["companies"] == [{"company_id": "g1", "remove": False}]
    assert all(r.headers["Authorization"] == "Bearer cu-key" for r in standin.requests)
    worker.close()


def test_custify_company_upsert_failing_with_500_is_retried(database_url: str,
                                                            standin: StandIn) -> None:
    standin.script = [Answer(500, {"error": "down"})]
    worker = run(database_url, standin,
                 {"name": "custify", "type": "custify", "settings": {"apiKey": "cu-key"}},
                 {"type": "group", "userId": "u1", "groupId": "g1", "traits": {"name": "A"}})
    assert [r.path for r in standin.requests] == ["/company", "/company", "/people"]
    [delivery] = stored_deliveries(worker.engine)
    assert delivery["state"] == "delivered" and delivery["attempts"] == 2
    worker.close()


def test_kustomer_identify_looks_up_then_creates(database_url: str, standin: StandIn) -> None:
    standin.answer_for = lambda r: Answer(404, {"errors": []}) if r.method == "GET" else None
    worker = run(database_url, standin,
                 {"name": "kustomer", "type": "kustomer", "settings": {"apiKey": "ku-key"}},
                 {"type": "identify", "userId": "u1", "traits": {"email": "k@x.io",
                                                                 "name": "Kay"}})
    assert [(r.method, r.path) for r in standin.requests] == [
        ("GET", "/v1/customers/email=k@x.io"), ("GET", "/v1/customers/externalId=u1"),
        ("POST", "/v1/customers")]
    assert standin.requests[-1].json == {"externalId": "u1", "name": "Kay",
                                         "emails": [{"type": "home", "email": "k@x.io"}]}
    worker.close()


def test_customfit_group_is_skipped_not_failed(database_url: str, standin: StandIn) -> None:
    worker = run(database_url, standin,
                 {"name": "cf", "type": "customfit",
                  "settings": {"apiKey": "cf-key", "endpointUrl": "https://cf.example/in"}},
                 {"type": "group", "userId": "u1", "groupId": "g1"},
                 {"type": "track", "userId": "u1", "event": "Paid"})
    assert [r.json["type"] for r in standin.requests] == ["track"]
    first, second = stored_deliveries(worker.engine)
    assert (first["state"], second["state"]) == ("skipped", "delivered")
    assert "unsupported for destination" in first["last_error"]
    worker.close()
