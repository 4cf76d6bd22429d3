"""Tracking plans end to end over HTTP, on both databases: a source with Segment's exported plan
flags, trims or drops what does not fit, routes what it stores, and counts every violation in
the bounded record the admin API reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from gateway import create_app
from gateway.config import from_mapping
from gateway.plans import record
from gateway.store.models import violations
from tests.conftest import ADMIN_TOKEN, OTHER_KEY, WRITE_KEY, base_config
from tests.helpers import basic, csrf_of, explain, stored_deliveries, stored_payloads

PLANS = Path(__file__).resolve().parents[1] / "fixtures" / "plans"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
LIBRARY = {"library": {"name": "analytics.js", "version": "5.2.0"}}


def plan_app(database_url: str, file: str = "segment_export.json", **source: Any) -> Any:
    raw = base_config(database_url, tracking_plans=[{"name": "web", "file": file}])
    raw["sources"][0].update(tracking_plan="web", **source)
    return create_app(from_mapping(raw, base_dir=PLANS))


def order(message_id: str, **properties: Any) -> dict[str, Any]:
    base = {"order_id": "o-1", "total": 30.5, "currency": "EUR", "payment_method": "card",
            "products": [{"product_id": "sku-1", "price": 30.5, "quantity": 1}]}
    return {"type": "track", "event": "Order Completed", "userId": "u-1",
            "messageId": message_id, "context": dict(LIBRARY),
            "properties": {**base, **properties}}


def post(app: Any, *messages: dict[str, Any], key: str = WRITE_KEY) -> Any:
    response = app.test_client().post("/v1/batch", json={"batch": list(messages)},
                                      headers=basic(key))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response


def listing(app: Any, **args: str) -> dict[str, Any]:
    response = app.test_client().get("/admin/v1/violations", query_string=args, headers=ADMIN)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


@pytest.fixture(params=["segment_export.json", "segment_public_api.json"])
def plan_file(request: pytest.FixtureRequest) -> str:
    return request.param


def test_a_fitting_event_is_stored_unflagged(database_url: str, plan_file: str) -> None:
    app = plan_app(database_url, plan_file)
    post(app, order("fits"))
    [payload] = stored_payloads(app.extensions["gateway.engine"])
    assert "violationErrors" not in payload["context"]
    assert listing(app)["violations"] == []


def test_flag_stores_and_routes_with_violation_errors(database_url: str, plan_file: str) -> None:
    app = plan_app(database_url, plan_file)
    bad = order("flagged", total="30.50", currency="CHF", gift_wrap=True)
    del bad["properties"]["order_id"]
    bad["context"]["violationErrors"] = [{"type": "forged"}]  # only the gateway writes it
    post(app, bad)
    engine = app.extensions["gateway.engine"]
    [payload] = stored_payloads(engine)
    errors = payload["context"]["violationErrors"]
    assert {e["type"] for e in errors} == {
        "Required-Missing", "Datatype-Mismatch", "Additional-Properties", "Unknown-Violation"}
    by_type = {e["type"]: e for e in errors}
    assert by_type["Datatype-Mismatch"] == {
        "type": "Datatype-Mismatch", "message": "must be number",
        "meta": {"instancePath": "/properties/total",
                 "schemaPath": "#/properties/properties/properties/total/type"}}
    assert by_type["Required-Missing"]["message"] == "must have required property 'order_id'"
    assert by_type["Additional-Properties"]["meta"]["additionalProperty"] == "gift_wrap"
    assert by_type["Unknown-Violation"]["meta"]["instancePath"] == "/properties/currency"
    assert payload["properties"]["gift_wrap"] is True  # flag changes nothing else
    assert {d["destination"] for d in stored_deliveries(engine)} == {"cio", "kustomer-main"}
    found = listing(app, source="web")
    assert found["total"] == 4
    rules = {v["rule"]: v for v in found["violations"]}
    assert rules["#/properties/properties/required (order_id)"]["example_message_id"] == \
        "flagged"
    assert all(v["event"] == "Order Completed" for v in found["violations"])


def test_drop_properties_removes_what_failed_and_still_flags(database_url: str) -> None:
    app = plan_app(database_url, violations="drop_properties")
    bad = order("trimmed", total="30.50", gift_wrap=True)
    bad["properties"]["products"].append({"product_id": "sku-2", "price": "free"})
    post(app, bad)
    [payload] = stored_payloads(app.extensions["gateway.engine"])
    properties = payload["properties"]
    assert "total" not in properties and "gift_wrap" not in properties
    assert properties["currency"] == "EUR" and properties["order_id"] == "o-1"
    assert properties["products"][1] == {"product_id": "sku-2"}  # only the bad price went
    assert {e["meta"]["instancePath"] for e in payload["context"]["violationErrors"]} == {
        "/properties/total", "/properties", "/properties/products/1/price"}


def test_drop_event_stores_nothing_and_answers_200(database_url: str) -> None:
    app = plan_app(database_url, violations="drop_event")
    bad = order("dropped", total="x")
    post(app, bad, order("kept"))
    engine = app.extensions["gateway.engine"]
    assert [p["messageId"] for p in stored_payloads(engine)] == ["kept"]
    assert listing(app, event="Order Completed")["total"] == 1
    why = explain(app, "dropped")  # "why didn't it arrive?" names the plan and the failure
    assert why["outcome"] == "rejected"
    [refused] = why["rejections"]
    assert refused["reason"] == "tracking_plan"
    assert refused["detail"] == (
        "accepted and dropped by tracking plan 'web' (violations = drop_event): "
        "Datatype-Mismatch at /properties/total: must be number")


def test_unplanned_events_allowed_or_dropped(database_url: str) -> None:
    unplanned = {"type": "track", "event": "Banner Clicked", "userId": "u-1",
                 "messageId": "unplanned", "context": dict(LIBRARY)}
    allowing = plan_app(database_url)
    post(allowing, unplanned)
    [payload] = stored_payloads(allowing.extensions["gateway.engine"])
    assert "violationErrors" not in payload["context"]
    [seen] = listing(allowing)["violations"]
    assert (seen["violation_type"], seen["event"]) == ("Unplanned-Event", "Banner Clicked")
    allowing.extensions["gateway.engine"].dispose()
    dropping = plan_app(database_url, unplanned_events="drop")
    post(dropping, {**unplanned, "messageId": "unplanned-2"})
    assert [p["messageId"] for p in stored_payloads(dropping.extensions["gateway.engine"])] \
        == ["unplanned"]
    assert listing(dropping)["total"] == 2


def test_identify_group_and_global_rules_apply(database_url: str, plan_file: str) -> None:
    app = plan_app(database_url, plan_file)
    post(app, {"type": "identify", "userId": "u-1", "messageId": "who",
               "traits": {"plan": "gold", "age": None}},
         {"type": "group", "userId": "u-1", "groupId": "g-1", "messageId": "team",
          "context": dict(LIBRARY), "traits": {"name": "Acme", "employees": 12}})
    payloads = {p["messageId"]: p for p in stored_payloads(app.extensions["gateway.engine"])}
    who = {(e["type"], e["meta"]["instancePath"])
           for e in payloads["who"]["context"]["violationErrors"]}
    assert who == {("Required-Missing", "/context"), ("Required-Missing", "/traits"),
                   ("Unknown-Violation", "/traits/plan")}
    assert "violationErrors" not in payloads["team"]["context"]


def test_event_version_picks_the_rule(database_url: str) -> None:
    """Segment's context.protocols.event_version pins a version; otherwise the newest."""
    app = plan_app(database_url)
    newest = order("v2")  # v2 requires payment_method and refuses revenue
    del newest["properties"]["payment_method"]
    pinned = order("v1", revenue=30.5)
    del pinned["properties"]["payment_method"]  # v1 does not know it
    pinned["context"]["protocols"] = {"event_version": 1}
    post(app, newest, pinned)
    payloads = {p["messageId"]: p for p in stored_payloads(app.extensions["gateway.engine"])}
    assert [e["message"] for e in payloads["v2"]["context"]["violationErrors"]] == [
        "must have required property 'payment_method'"]
    assert "violationErrors" not in payloads["v1"]["context"]


def test_a_source_without_a_plan_is_untouched(database_url: str) -> None:
    app = plan_app(database_url)
    post(app, {"type": "track", "event": "Anything", "userId": "u", "messageId": "free",
               "context": {"violationErrors": "theirs"}}, key=OTHER_KEY)
    [payload] = stored_payloads(app.extensions["gateway.engine"])
    assert payload["context"]["violationErrors"] == "theirs"
    assert listing(app)["violations"] == []


def test_a_flood_adds_to_counts_not_rows(database_url: str) -> None:
    app = plan_app(database_url)
    post(app, *[order(f"flood-{n}", total="x") for n in range(300)])
    record.flush(app.extensions["gateway.engine"])
    post(app, *[order(f"flood-more-{n}", total="x") for n in range(200)])
    found = listing(app)
    [row] = found["violations"]
    assert row["count"] == 500
    with app.extensions["gateway.engine"].connect() as connection:
        assert connection.execute(select(func.count()).select_from(violations)).scalar() == 1


def test_invented_event_names_stay_bounded(database_url: str, monkeypatch) -> None:
    monkeypatch.setattr(record, "MAX_ROWS", 50)
    app = plan_app(database_url)
    for start in range(0, 120, 40):
        post(app, *[{"type": "track", "event": f"made-up-{n}", "userId": "u",
                     "messageId": f"m-{n}", "context": dict(LIBRARY)}
                    for n in range(start, start + 40)])
        record.flush(app.extensions["gateway.engine"])
    with app.extensions["gateway.engine"].connect() as connection:
        assert connection.execute(select(func.count()).select_from(violations)).scalar() == 50


def test_the_listing_checks_its_filters(database_url: str) -> None:
    app = plan_app(database_url)
    client = app.test_client()
    for args in ({"since": "yesterday"}, {"hours": "0"}, {"limit": "x"}, {"colour": "red"}):
        response = client.get("/admin/v1/violations", query_string=args, headers=ADMIN)
        assert response.status_code == 400, args
        assert response.get_json()["code"] == "invalid_query"
    assert client.get("/admin/v1/violations").status_code == 401


def test_the_console_counts_per_event_and_rule(database_url: str) -> None:
    app = plan_app(database_url)
    post(app, *[order(f"c-{n}", total="x") for n in range(3)],
         {"type": "track", "event": "<script>alert(1)</script>", "userId": "u",
          "messageId": "xss", "context": dict(LIBRARY)})
    client = app.test_client()
    assert client.get("/console/violations").status_code in (302, 401)
    token = csrf_of(client.get("/console/login").get_data(as_text=True))
    assert client.post("/console/login", data={"csrf": token, "token": ADMIN_TOKEN}) \
        .status_code == 302
    page = client.get("/console/violations?hours=6").get_data(as_text=True)
    assert "<code>web</code> follows plan <code>web</code>" in page
    assert '<td class="num">3</td>' in page and "#/properties/properties/properties/total/type" \
        in page and "4 violations" in page
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page
    other = client.get("/console/violations?source=server&hours=999").get_data(as_text=True)
    assert "No violations in this window." in other  # an unknown window falls back to 24 h
    assert "Tracking plan:" in client.get("/console/sources").get_data(as_text=True)


def test_a_long_event_name_is_found_by_its_full_name(database_url: str) -> None:
    """The record keeps 200 characters of a name; the filter clips it the same way."""
    app = plan_app(database_url)
    name = "Made Up " + "x" * 300
    post(app, {"type": "track", "event": name, "userId": "u", "messageId": "long",
               "context": dict(LIBRARY)})
    [row] = listing(app, event=name)["violations"]
    assert len(row["event"]) == 200 and row["event"].endswith("…")
    assert listing(app, event=name[:200])["violations"] == []
