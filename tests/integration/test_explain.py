"""`GET /admin/v1/explain` and `gateway explain`: every branch of the decision path, with the
real app ingesting, the real worker delivering to a stand-in, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from sqlalchemy import select

from gateway import rejections
from gateway.cli import main
from gateway.store.models import rejections as rejections_table
from tests.conftest import EXPLAIN_SECRET, WRITE_KEY
from tests.helpers import ADMIN_AUTH, basic, drain, explain, stored_events
from tests.standin import Answer

TOKEN = ADMIN_AUTH
SECRET = EXPLAIN_SECRET


def send(app, *messages: dict[str, Any], key: str = WRITE_KEY, status: int = 200) -> Any:
    response = app.test_client().post("/v1/batch", json={"batch": list(messages)},
                                      headers=basic(key))
    assert response.status_code == status, response.get_data(as_text=True)
    return response


def by_destination(found: dict[str, Any], event: int = 0) -> dict[str, dict[str, Any]]:
    return {d["destination"]: d for d in found["events"][event]["destinations"]}


def track(mid: str, **extra: Any) -> dict[str, Any]:
    return {"type": "track", "userId": f"u-{mid}", "event": "Bought", "messageId": mid, **extra}


def test_rejected_at_ingest_with_the_reason_and_source(explain_setup) -> None:
    app, *_ = explain_setup
    send(app, track("ok-1"), {"type": "track", "userId": "u", "messageId": "bad-1"})
    found = explain(app, "bad-1")
    assert found["outcome"] == "rejected" and found["events"] == []
    [refusal] = found["rejections"]
    assert (refusal["source"], refusal["reason"], refusal["type"]) == ("web", "missing_field",
                                                                       "track")
    assert "refused at ingest (missing_field" in found["summary"]


def test_a_refused_request_is_traced_without_its_key(explain_setup) -> None:
    app, *_ = explain_setup
    send(app, track("x"), key="wk_nobody", status=401)
    response = app.test_client().post("/v1/track", data=b"{not json",
                                      headers=basic(WRITE_KEY))
    assert response.status_code == 400
    engine = app.extensions["gateway.engine"]
    assert rejections.flush(engine)
    with engine.connect() as connection:
        recent = rejections.recent(connection)
    assert [(r["reason"], r["source"]) for r in recent] == [("invalid_json", "web"),
                                                            ("invalid_write_key", None)]
    assert all("wk_nobody" not in orjson.dumps(r).decode() for r in recent)


def test_duplicate_names_the_earlier_event(explain_setup) -> None:
    app, *_ = explain_setup
    send(app, track("dup-1"))
    send(app, track("dup-1", properties={"again": True}))
    found = explain(app, "dup-1")
    event = found["events"][0]
    assert found["outcome"] == "stored" and len(found["events"]) == 1
    [dup] = event["duplicates"]
    assert f"a resend of event {event['id']}" in dup["words"]
    assert "1 resend(s) dropped as duplicates" in found["summary"]


def test_not_routed_by_integrations_sources_list_and_disabled(explain_setup) -> None:
    app, *_ = explain_setup
    send(app, track("nr-1", integrations={"All": False, "Custify": True}))
    found = by_destination(explain(app, "nr-1"))
    assert found["hook"]["verdict"] == "not_routed"
    assert "integrations.All is false" in found["hook"]["words"]
    assert found["cfy"]["verdict"] == "pending"  # its own key wins over All
    assert "sources list (server) does not include source 'web'" in \
        found["server-only"]["words"]
    assert found["off"]["words"] == "not routed: the destination is disabled in the config"
    send(app, track("nr-2", integrations={"Webhook": False}))
    assert "integrations['Webhook'] is false" in by_destination(explain(app, "nr-2"))["hook"][
        "words"]


def test_pending_delivered_and_skipped(explain_setup) -> None:
    app, worker, _, _ = explain_setup
    send(app, track("pd-1"), {"type": "page", "userId": "u", "name": "Home", "messageId": "pg-1"})
    pending = by_destination(explain(app, "pd-1"))["hook"]
    assert pending["verdict"] == "pending" and "queued: first attempt due at" in pending["words"]
    drain(worker)
    delivered = by_destination(explain(app, "pd-1"))["hook"]
    assert delivered["verdict"] == "delivered"
    assert "(HTTP 200, 1 attempt)" in delivered["words"]
    skipped = by_destination(explain(app, "pg-1"))["cfy"]
    assert skipped["verdict"] == "skipped"
    assert "skipped by the destination's adapter" in skipped["words"]
    assert "Message type not supported" in skipped["words"]


def test_retrying_then_dead_with_the_last_error_redacted(explain_setup) -> None:
    app, worker, standin, _ = explain_setup
    standin.answer_for = lambda r: (Answer(503, {"error": f"busy {SECRET}"})
                                    if r.json and r.json.get("messageId") == "rt-1" else
                                    Answer(400, {"error": "bad payload"})
                                    if r.json and r.json.get("messageId") == "dd-1" else None)
    send(app, track("rt-1"), track("dd-1"))
    worker.run_once()
    retrying = by_destination(explain(app, "rt-1"))["hook"]
    assert retrying["verdict"] == "retrying"
    assert "next attempt at" in retrying["words"] and "HTTP 503" in retrying["words"]
    assert SECRET not in orjson.dumps(retrying).decode()
    dead = by_destination(explain(app, "dd-1"))["hook"]
    assert dead["verdict"] == "dead"
    assert dead["words"].startswith("dead after 1 attempt: HTTP 400") and "bad payload" in \
        dead["words"]


def test_unknown_message_id_and_bad_input(explain_setup) -> None:
    app, *_ = explain_setup
    found = explain(app, "never-sent")
    assert found["outcome"] == "unknown" and "no stored event" in found["summary"]
    client = app.test_client()
    assert client.get("/admin/v1/explain", headers=TOKEN).status_code == 400
    assert client.get("/admin/v1/explain?message_id=" + "x" * 300,
                      headers=TOKEN).status_code == 400
    assert client.get("/admin/v1/explain?message_id=a").status_code == 401


def test_source_narrows_the_answer(explain_setup) -> None:
    app, *_ = explain_setup
    send(app, track("both"))
    send(app, track("both"), key="wk_server")
    assert len(explain(app, "both")["events"]) == 2
    only = explain(app, "both", source="server")
    assert [e["source"] for e in only["events"]] == ["server"]
    assert by_destination(only)["server-only"]["verdict"] == "pending"


def test_the_record_stays_bounded(explain_setup, monkeypatch: pytest.MonkeyPatch) -> None:
    app, *_ = explain_setup
    monkeypatch.setattr(rejections, "MAX_ROWS", 5)
    for n in range(4):
        send(app, *[{"type": "track", "messageId": f"b{n}-{i}"} for i in range(3)],
             status=400)
        assert rejections.flush(app.extensions["gateway.engine"])
    with app.extensions["gateway.engine"].connect() as connection:
        ids = [r.message_id for r in connection.execute(select(rejections_table.c.message_id)
                                                         .order_by(rejections_table.c.id))]
    assert len(ids) <= 5 and ids[-1] == "b3-2"


def test_cli_table_and_json(explain_setup, capsys: pytest.CaptureFixture) -> None:
    app, worker, _, path = explain_setup
    send(app, track("cli-1", integrations={"All": False}), {"type": "track", "messageId": "c2"})
    drain(worker)
    assert rejections.flush(app.extensions["gateway.engine"])
    assert main(["--config", str(path), "explain", "cli-1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("message cli-1: stored as event")
    assert "DESTINATION" in out and "not_routed" in out and "integrations.All is false" in out
    assert main(["--config", str(path), "explain", "c2", "--json"]) == 0
    found = orjson.loads(capsys.readouterr().out)
    assert found["outcome"] == "rejected" and found["rejections"][0]["reason"] == "missing_field"


def test_a_broken_record_never_fails_a_request(explain_setup) -> None:
    """With the rejections table gone the trace logs and drops; the SDK's answers are the same."""
    app, *_ = explain_setup
    engine = app.extensions["gateway.engine"]
    with engine.begin() as connection:
        rejections_table.drop(connection)
    bad = send(app, track("ok-2"), {"type": "track", "messageId": "bad-2"})
    assert bad.get_json()["rejected"][0]["code"] == "missing_field"
    send(app, track("ok-2"))  # a duplicate: its lookup is queued too
    assert send(app, track("x"), key="wk_nobody", status=401).get_json()["code"] == \
        "invalid_write_key"
    assert rejections.flush(engine)  # the writer failed, logged, and carried on
    assert [e["message_id"] for e in stored_events(engine)] == ["ok-2"]


def test_a_delivery_removed_by_retention_is_not_explained_as_a_later_destination(
        explain_setup: Any) -> None:
    """Retention prunes delivered deliveries after 7 days and their events after 30: for an
    event in between, explain must not claim the destination was added after it arrived."""
    from datetime import UTC, datetime, timedelta

    from gateway.retention import Pruner

    app, worker, _, _ = explain_setup
    client = app.test_client()
    body = {"userId": "u1", "event": "Old", "messageId": "kept-event"}
    assert client.post("/v1/track", json=body, headers=basic(WRITE_KEY)).status_code == 200
    drain(worker)
    config = app.extensions["gateway.config"]
    in_nine_days = datetime.now(UTC) + timedelta(days=9)
    Pruner(app.extensions["gateway.engine"], config.retention,
           now=lambda: in_nine_days).prune_all()
    found = client.get("/admin/v1/explain?message_id=kept-event", headers=TOKEN).get_json()
    hook = next(d for d in found["events"][0]["destinations"] if d["destination"] == "hook")
    assert hook["delivery"] is None
    assert "retention" in hook["words"]
