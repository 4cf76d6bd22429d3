"""The delivery worker against a stand-in destination: order, retries, dead letters, leases.
SQLite and PostgreSQL; the real app ingests, the real worker delivers over HTTP."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import select

from gateway import create_app
from gateway.config import Config, from_mapping
from gateway.delivery.worker import Worker
from gateway.store.models import delivery_attempts
from tests.conftest import ADMIN_TOKEN, WRITE_KEY
from tests.helpers import FakeClock, basic, drain, stored_deliveries
from tests.standin import Answer, StandIn

SECRET = "wh-secret-key-123"


def hook_config(database_url: str, endpoint: str, limits: dict[str, Any] | None = None,
                **retry: int) -> Config:
    return from_mapping({
        "database_url": database_url, "admin_token": ADMIN_TOKEN,
        "sources": [{"name": "web", "write_key": WRITE_KEY}],
        "destinations": [{"name": "hook", "type": "webhook", "endpoint": endpoint,
                          "settings": {"webhookUrl": "https://hooks.example/in",
                                       "apiKey": SECRET},
                          "limits": limits or {}}],
        "retry": {"base_delay_seconds": 0, **retry},
        "worker": {"concurrency": 4, "lease_seconds": 30},
    })


@pytest.fixture
def setup(database_url: str, standin: StandIn):
    config = hook_config(database_url, standin.url)
    app = create_app(config)
    worker = Worker(app.extensions["gateway.engine"], config)
    yield app, worker
    worker.close()
    app.extensions["gateway.engine"].dispose()


def send(app, *messages: dict[str, Any]) -> None:
    response = app.test_client().post("/v1/batch", json={"batch": list(messages)},
                                      headers=basic(WRITE_KEY))
    assert response.status_code == 200, response.get_data(as_text=True)


def track(user: str, n: int) -> dict[str, Any]:
    return {"type": "track", "userId": user, "event": f"e{n}", "messageId": f"{user}-{n}"}


def received_events(standin: StandIn) -> list[str]:
    return [r.json["messageId"] for r in standin.requests]


def test_delivers_each_event_once_in_order(setup, standin: StandIn) -> None:
    app, worker = setup
    send(app, *(track("u1", n) for n in range(5)))
    drain(worker)
    assert received_events(standin) == [f"u1-{n}" for n in range(5)]
    first = standin.requests[0]
    assert first.path == "/in" and first.headers["User-Agent"] == "Segment.io/1.0"
    assert {d["state"] for d in stored_deliveries(worker.engine)} == {"delivered"}
    with worker.engine.connect() as connection:
        attempts = connection.execute(select(delivery_attempts)).all()
    assert len(attempts) == 5 and {a.status for a in attempts} == {200}


def test_500_then_200_retries_and_holds_back_only_that_user(setup, standin: StandIn) -> None:
    app, worker = setup
    standin.answer_for = lambda r: (Answer(500, {"error": f"down {SECRET}"})
                                    if r.json["messageId"] == "u1-0"
                                    and sum(q.json["messageId"] == "u1-0"
                                            for q in standin.requests) == 1 else None)
    send(app, track("u1", 0), track("u1", 1), track("u2", 0), track("u2", 1))
    worker.run_once()  # u1-0 fails, u2-0 goes through; nobody's second event yet
    assert sorted(received_events(standin)) == ["u1-0", "u2-0"]
    worker.run_once()
    assert "u2-1" in received_events(standin) and "u1-1" not in received_events(standin)
    drain(worker)
    order = received_events(standin)
    assert [m for m in order if m.startswith("u1")] == ["u1-0", "u1-0", "u1-1"]
    rows = {d["event_id"]: d for d in stored_deliveries(worker.engine)}
    assert {d["state"] for d in rows.values()} == {"delivered"}
    with worker.engine.connect() as connection:
        excerpts = [a.excerpt for a in connection.execute(select(delivery_attempts))]
    assert all(SECRET not in (e or "") for e in excerpts)
    assert any("***" in (e or "") for e in excerpts)


def test_400_is_dead_with_the_reason_and_does_not_block_the_user(setup, standin) -> None:
    app, worker = setup
    standin.answer_for = lambda r: Answer(400, {"error": "bad"}) \
        if r.json["messageId"] == "u1-0" else None
    send(app, track("u1", 0), track("u1", 1))
    drain(worker)
    first, second = stored_deliveries(worker.engine)
    assert (first["state"], first["last_status"], first["attempts"]) == ("dead", 400, 1)
    assert "HTTP 400" in first["last_error"] and "bad" in first["last_error"]
    assert second["state"] == "delivered"


def test_429_retry_after_is_honoured(database_url: str, standin: StandIn) -> None:
    config = hook_config(database_url, standin.url)
    app = create_app(config)
    clock = FakeClock()  # the worker's `now` stands still: the due time is exact
    worker = Worker(app.extensions["gateway.engine"], config, now=clock.now)
    standin.script = [Answer(429, {"error": "slow down"}, {"Retry-After": "30"})]
    send(app, track("u1", 0))
    worker.run_once()
    [row] = stored_deliveries(worker.engine)
    assert row["state"] == "retrying" and row["last_status"] == 429
    assert (row["next_attempt_at"] - clock.now()).total_seconds() == 30
    worker.run_once()  # not due yet: nothing is sent
    assert len(standin.requests) == 1
    worker.close()
    app.extensions["gateway.engine"].dispose()


def test_connection_refused_then_recovery(database_url: str, standin: StandIn) -> None:
    port = standin.port
    standin.close()  # nothing listens on the port for now
    # the refused connections open the circuit; it lets a probe through again after 0.3 s
    config = hook_config(database_url, f"http://127.0.0.1:{port}",
                         limits={"circuit_open_seconds": 0.3})
    app = create_app(config)
    worker = Worker(app.extensions["gateway.engine"], config)
    send(app, track("u1", 0), track("u1", 1), track("u2", 0))
    for _ in range(3):
        worker.run_once()
    states = {d["state"] for d in stored_deliveries(worker.engine)}
    assert states <= {"retrying", "pending"} and "retrying" in states
    recovered = StandIn(port)
    try:
        drain(worker)
        assert sorted(received_events(recovered)) == ["u1-0", "u1-1", "u2-0"]
        assert [m for m in received_events(recovered) if m.startswith("u1")] == ["u1-0", "u1-1"]
    finally:
        recovered.close()
        worker.close()
        app.extensions["gateway.engine"].dispose()


def test_an_expired_lease_is_claimed_again(database_url: str, standin: StandIn) -> None:
    config = hook_config(database_url, standin.url)
    config = from_mapping({**_raw(config), "worker": {"lease_seconds": 0}})
    app = create_app(config)
    crashed, rescuer = (Worker(app.extensions["gateway.engine"], config) for _ in range(2))
    send(app, track("u1", 0))
    assert len(crashed.claim(10)) == 1  # claimed, then the process "dies" before sending
    time.sleep(0.01)
    drain(rescuer)
    assert received_events(standin) == ["u1-0"]
    [row] = stored_deliveries(rescuer.engine)
    assert row["state"] == "delivered" and row["attempts"] == 1
    crashed.close()
    rescuer.close()
    app.extensions["gateway.engine"].dispose()


def _raw(config: Config) -> dict[str, Any]:
    return {"database_url": config.database_url, "admin_token": ADMIN_TOKEN,
            "sources": [{"name": "web", "write_key": WRITE_KEY}],
            "destinations": [{"name": d.name, "type": d.type, "endpoint": d.endpoint,
                              "settings": dict(d.settings)} for d in config.destinations],
            "retry": {"base_delay_seconds": 0}}
