"""Transformations end to end on SQLite and PostgreSQL: the real app ingests through a source's
chain, the real worker delivers through a destination's chain to a stand-in. The functions are
a real module (tests/transforms_module.py) named in the config as an operator would."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from gateway import create_app, rejections
from gateway.config import from_mapping
from gateway.delivery.worker import Worker
from tests import transforms_module
from tests.conftest import ADMIN_TOKEN, WRITE_KEY
from tests.helpers import (
    ADMIN_AUTH,
    basic,
    csrf_of,
    drain,
    explain,
    stored_deliveries,
    stored_events,
    stored_payloads,
)
from tests.standin import StandIn

MODULE = "tests.transforms_module"
OTHER_KEY = "wk_test_other_source"


def declared(name: str, function: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "function": f"{MODULE}:{function}", **extra}


@pytest.fixture
def env(database_url: str) -> Iterator[Any]:
    standin = StandIn()
    raw = {
        "database_url": database_url, "admin_token": ADMIN_TOKEN,
        "transformations": [
            declared("mask-email", "mask_email"), declared("drop-tests", "drop_tests"),
            declared("explode", "explode"), declared("split", "split_items"),
            declared("explode-store", "explode", on_error="store"),
            declared("remember", "remember_context"),
        ],
        "sources": [
            {"name": "web", "write_key": WRITE_KEY,
             "transformations": ["drop-tests", "explode", "mask-email", "split"]},
            {"name": "lenient", "write_key": OTHER_KEY,
             "transformations": ["explode-store", "mask-email"]},
        ],
        "destinations": [
            {"name": "hook", "type": "webhook", "endpoint": standin.url, "sources": ["lenient"],
             "settings": {"webhookUrl": "https://h.example/hook", "apiKey": "hook-secret-1"},
             "transformations": ["remember", "drop-tests", "explode", "split"]},
            {"name": "cio", "type": "customerio", "endpoint": standin.url,
             "sources": ["lenient"],
             "settings": {"siteID": "s", "apiKey": "cio-secret-22", "v2Batching": True},
             "transformations": ["drop-tests", "explode", "split"]},
        ],
        "retry": {"base_delay_seconds": 0},
    }
    app = create_app(from_mapping(raw))
    worker = Worker(app.extensions["gateway.engine"], app.extensions["gateway.config"])

    class Env:
        client = app.test_client()
        engine = app.extensions["gateway.engine"]

    e = Env()
    e.app, e.standin, e.worker = app, standin, worker
    yield e
    worker.close()
    standin.close()
    rejections.flush_all()
    app.extensions["gateway.engine"].dispose()


def track(mid: str, event: str = "Bought", **properties: Any) -> dict[str, Any]:
    return {"type": "track", "userId": "u1", "event": event, "messageId": mid,
            "properties": {"email": "a@b.example", **properties}}


def test_source_chain_masks_drops_splits_and_refuses(env) -> None:
    batch = [track("kept"), track("dropped", "Test Event"), track("failing", boom=True),
             track("order", "Order Completed", items=[{"sku": "A"}, {"sku": "B"}])]
    answer = env.client.post("/v1/batch", json={"batch": batch}, headers=basic(WRITE_KEY))
    # a refused message is answered as an invalid message of a batch: 200 naming it
    assert answer.status_code == 200, answer.get_json()
    (refused,) = answer.get_json()["rejected"]
    assert refused["index"] == 2 and refused["messageId"] == "failing"
    assert refused["code"] == "transformation_failed"
    assert "'explode'" in refused["message"] and "boom requested" in refused["message"]

    stored = {p["messageId"]: p for p in stored_payloads(env.engine, "web")}
    # dropped: not stored; failing: not stored (never unmasked); split: own messageIds
    assert set(stored) == {"kept", "order-1", "order-2"}
    assert stored["kept"]["properties"]["email"] == "***"
    assert [stored[m]["properties"] for m in ("order-1", "order-2")] == [
        {"sku": "A"}, {"sku": "B"}]
    assert stored["order-1"]["event"] == "Item Bought"

    # the refusal is in the rejections record, with the error
    rejections.flush(env.engine)
    with env.engine.connect() as connection:
        found = rejections.for_message(connection, "failing", "web")
    assert found and found[0]["reason"] == "transformation_failed"
    assert "boom requested" in found[0]["detail"]

    # an SDK's resend is deduplicated: the split parts are not stored twice
    again = env.client.post("/v1/batch", json={"batch": batch[3:]}, headers=basic(WRITE_KEY))
    assert again.status_code == 200
    assert len(stored_payloads(env.engine, "web")) == 3


def test_single_call_refused_with_400_and_on_error_store_keeps_the_message(env) -> None:
    answer = env.client.post("/v1/track", json=track("one", boom=True), headers=basic(WRITE_KEY))
    assert answer.status_code == 400
    assert answer.get_json()["code"] == "transformation_failed"
    assert stored_payloads(env.engine, "web") == []

    lenient = env.client.post("/v1/track", json=track("two", boom=True),
                              headers=basic(OTHER_KEY))
    assert lenient.status_code == 200
    (stored,) = stored_payloads(env.engine, "lenient")
    # the failing step was skipped, the next one still ran
    assert stored["messageId"] == "two" and stored["properties"]["email"] == "***"

    dropped = env.client.post("/v1/track", json=track("three", "Test Event"),
                              headers=basic(WRITE_KEY))
    assert dropped.status_code == 200 and dropped.get_json() == {"success": True}
    assert stored_payloads(env.engine, "web") == []


def test_destination_chain_skips_kills_and_splits(env) -> None:
    transforms_module.SEEN_CONTEXTS.clear()
    batch = [track("plain", "Bought"), track("test", "Test Event"),
             track("bad", "Bought", explode_later=True),
             track("order", "Order Completed", items=[{"sku": "A"}, {"sku": "B"}])]
    # the lenient source stores "bad" (its own explode step is on_error=store); the
    # destinations' explode step raises on `boom`, set here after the source chain
    batch[2]["properties"]["boom"] = True
    answer = env.client.post("/v1/batch", json={"batch": batch}, headers=basic(OTHER_KEY))
    assert answer.status_code == 200 and "rejected" not in answer.get_json()
    drain(env.worker)

    ids = {p["messageId"]: p for p in stored_payloads(env.engine, "lenient")}
    assert set(ids) == {"plain", "test", "bad", "order"}
    event_ids = {e["id"]: e["message_id"] for e in stored_events(env.engine, "lenient")}
    states = {(row["destination"], event_ids[row["event_id"]]): (row["state"], row["last_error"])
              for row in stored_deliveries(env.engine)}
    for destination in ("hook", "cio"):
        assert states[(destination, "plain")] == ("delivered", None)
        assert states[(destination, "order")] == ("delivered", None)
        state, reason = states[(destination, "test")]
        assert state == "skipped" and "'drop-tests' dropped the event" in reason
        state, reason = states[(destination, "bad")]
        assert state == "dead", reason
        assert "TransformFailed" in reason and "ValueError: boom requested" in reason
        assert "transforms_module.py:" in reason and "in explode" in reason

    hook = [r.json for r in env.standin.requests if r.path == "/hook"]
    # the split order went out as one request per item, in order, after the plain event
    assert [(b["messageId"], b["event"]) for b in hook] == [
        ("plain", "Bought"), ("order", "Item Bought"), ("order", "Item Bought")]
    assert [b["properties"]["sku"] for b in hook[1:]] == ["A", "B"]
    assert hook[0]["properties"]["seen"] is True  # the first step's change reached the adapter
    cio_text = " ".join(str(r.json) for r in env.standin.requests if r.path != "/hook")
    assert "'sku': 'A'" in cio_text and "'sku': 'B'" in cio_text

    # the context: destination name, settings without the secret ones
    seen = transforms_module.SEEN_CONTEXTS[0]
    assert seen["destination"] == "hook" and seen["transformation"] == "remember"
    assert seen["settings"]["webhookUrl"] == "https://h.example/hook"
    assert "hook-secret-1" not in str(transforms_module.SEEN_CONTEXTS)


def test_explain_preview_and_console_show_each_step(env) -> None:
    batch = [track("order", "Order Completed", items=[{"sku": "A"}, {"sku": "B"}]),
             track("test", "Test Event")]
    assert env.client.post("/v1/batch", json={"batch": batch},
                           headers=basic(OTHER_KEY)).status_code == 200
    drain(env.worker)

    # explain: the delivery's words and each step's effect on the stored event
    found = {d["destination"]: d for d in explain(env.app, "test")["events"][0]["destinations"]}
    assert found["hook"]["verdict"] == "skipped"
    assert found["hook"]["words"] == "skipped: transformation 'drop-tests' dropped the event"
    assert [(s["transformation"], s["effect"]) for s in found["hook"]["transformations"]] == [
        ("remember", "kept"), ("drop-tests", "dropped")]
    from gateway.cli.admin import explain_lines  # `gateway explain`'s table says it too
    assert "  hook transformations: remember: kept; drop-tests: dropped" in explain_lines(
        explain(env.app, "test"))
    order = {d["destination"]: d for d in explain(env.app, "order")["events"][0][
        "destinations"]}
    assert [s["effect"] for s in order["cio"]["transformations"]] == [
        "kept", "kept", "split into 2"]

    # POST /admin/v1/preview: the exact requests, secrets redacted, nothing sent
    sent_before = len(env.standin.requests)
    event = {**track("preview-1", "Order Completed", items=[{"sku": "C"}, {"sku": "D"}]),
             "context": {"leak": "hook-secret-1"}}
    answer = env.client.post("/admin/v1/preview", headers=ADMIN_AUTH,
                             json={"destination": "hook", "event": event})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    result = answer.get_json()
    assert result["outcome"] == "sent"
    assert [s["effect"] for s in result["steps"]] == ["kept", "kept", "kept", "split into 2"]
    assert [r["method"] for r in result["requests"]] == ["POST", "POST"]
    # the webhook signs its body: the exact bytes, as text
    bodies = [json.loads(r["body"]) for r in result["requests"]]
    assert [b["properties"]["sku"] for b in bodies] == ["C", "D"]
    assert result["requests"][0]["url"].startswith(env.standin.url)
    assert result["requests"][0]["headers"]["Authorization"] == "Basic ***"
    assert "hook-secret-1" not in answer.get_data(as_text=True)
    assert len(env.standin.requests) == sent_before

    event_id = next(e["id"] for e in stored_events(env.engine, "lenient")
                    if e["message_id"] == "test")
    stored = env.client.post("/admin/v1/preview", headers=ADMIN_AUTH,
                             json={"destination": "hook", "event_id": event_id}).get_json()
    assert stored["outcome"] == "dropped" and "'drop-tests'" in stored["reason"]
    bad = env.client.post("/admin/v1/preview", headers=ADMIN_AUTH,
                          json={"destination": "nope", "event": event})
    assert bad.status_code == 400 and "no destination named 'nope'" in bad.get_json()["message"]
    assert env.client.post("/admin/v1/preview", json={"destination": "hook", "event": event}
                           ).status_code == 401

    # the console's event page: "what would this destination receive?"
    console = env.app.test_client()
    login = console.get("/console/login").get_data(as_text=True)
    assert console.post("/console/login", data={"csrf": csrf_of(login), "token": ADMIN_TOKEN}
                        ).status_code == 302
    order_id = next(e["id"] for e in stored_events(env.engine, "lenient")
                    if e["message_id"] == "order")
    page = console.get(f"/console/events/{order_id}?preview=cio").get_data(as_text=True)
    assert "What would this destination receive?" in page
    assert "split into 2" in page and "cio-secret-22" not in page
    assert "track.customer.io" in page or env.standin.url in page
    assert len(env.standin.requests) == sent_before
