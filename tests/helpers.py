"""Helpers the test modules share (no test module imports another): reading back what the
gateway stored, waiting for it, and driving the app and the worker."""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import requests
from sqlalchemy import Engine, insert, select

from gateway import create_app
from gateway.config import from_mapping
from gateway.delivery.worker import Worker
from gateway.store import partitions
from gateway.store.models import deliveries, delivery_attempts, events
from tests.conftest import ADMIN_TOKEN, WRITE_KEY
from tests.standin import StandIn

ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def stored_events(engine: Engine, source: str | None = None) -> list[dict[str, Any]]:
    query = select(events).order_by(events.c.id)
    if source:
        query = query.where(events.c.source == source)
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]


def stored_payloads(engine: Engine, source: str | None = None) -> list[dict[str, Any]]:
    return [row["payload"] for row in stored_events(engine, source)]


def stored_deliveries(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        rows = connection.execute(select(deliveries).order_by(deliveries.c.id))
        return [dict(row._mapping) for row in rows]


# waiting --------------------------------------------------------------------------------------


def wait_for(
    check: Callable[[], Any],
    seconds: float,
    what: str | Callable[[], object] = "a condition",
    interval: float = 0.05,
) -> Any:
    """Poll `check` until it returns something truthy (returned); fail after `seconds` with
    `what` (a text, or a callable giving the detail at the time of failure)."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = what() if callable(what) else what
            raise AssertionError(f"timed out waiting for {detail}")
        time.sleep(interval)


def drain(worker: Worker, seconds: float = 10) -> None:
    """Run rounds until nothing is unfinished (or time runs out)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        worker.run_once()
        with worker.engine.connect() as connection:
            left = connection.execute(
                select(deliveries.c.id).where(
                    deliveries.c.state.in_(("pending", "retrying", "delivering"))
                )
            ).all()
        if not left:
            return
        time.sleep(0.05)
    raise AssertionError("deliveries still unfinished")


def wait_for_rows(db: Engine, source: str, count: int, seconds: float = 10) -> list[dict[str, Any]]:
    """The events of `source` once there are `count` (or what is there after `seconds`)."""
    deadline = time.monotonic() + seconds
    while True:
        rows = stored_events(db, source)
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def wait_until_finished(engine: Engine, expected: int) -> list[dict[str, Any]]:
    """Every delivery (with its event's type and name) once `expected` are all final."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            rows = [
                dict(r._mapping)
                for r in connection.execute(
                    select(
                        deliveries.c.destination,
                        deliveries.c.state,
                        deliveries.c.last_error,
                        events.c.type,
                        events.c.event,
                    )
                    .join(events, events.c.id == deliveries.c.event_id)
                    .order_by(deliveries.c.id)
                )
            ]
        if len(rows) == expected and all(
            r["state"] in ("delivered", "skipped", "dead") for r in rows
        ):
            return rows
        time.sleep(0.1)
    raise AssertionError(f"deliveries did not finish: {rows}")


def wait_until_delivered(raw: dict[str, Any], count: int, seconds: float = 60) -> list[dict]:
    """The deliveries of the database `raw` names, once `count` are all delivered."""
    app = create_app(from_mapping(raw))
    engine = app.extensions["gateway.engine"]
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            rows = stored_deliveries(engine)
            if len(rows) == count and all(r["state"] == "delivered" for r in rows):
                return rows
            time.sleep(0.2)
        raise AssertionError(f"not delivered: {[r['state'] for r in stored_deliveries(engine)]}")
    finally:
        engine.dispose()


# driving the app and the worker ----------------------------------------------------------------


class Running:
    """`Worker.run` in a thread, stopped (in-flight work finished) on exit."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.stop = threading.Event()
        self.thread = threading.Thread(target=worker.run, args=(self.stop,), daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join(40)
        assert not self.thread.is_alive(), "the worker did not stop"


def send(app: Any, key: str, messages: list[dict[str, Any]]) -> None:
    """Post `messages` as one batch with `key`; it must be accepted."""
    response = app.test_client().post("/v1/batch", json={"batch": messages}, headers=basic(key))
    assert response.status_code == 200, response.get_data(as_text=True)


def tracks(prefix: str, count: int) -> list[dict[str, Any]]:
    """One event for each of `count` users (no per-user barrier between them)."""
    return [
        {"type": "track", "userId": f"{prefix}-{n}", "event": "e", "messageId": f"{prefix}-{n}"}
        for n in range(count)
    ]


def run(
    database_url: str, standin: StandIn, destination: dict[str, Any], *messages: dict[str, Any]
) -> Worker:
    """Ingest `messages` from one source and deliver them to `destination`, pointed at
    `standin`, until nothing is unfinished; the worker is the caller's to close."""
    raw = {
        "database_url": database_url,
        "admin_token": ADMIN_TOKEN,
        "sources": [{"name": "web", "write_key": WRITE_KEY}],
        "destinations": [{**destination, "endpoint": standin.url}],
        "retry": {"base_delay_seconds": 0},
    }
    app = create_app(from_mapping(raw))
    response = app.test_client().post(
        "/v1/batch", json={"batch": list(messages)}, headers=basic(WRITE_KEY)
    )
    assert response.status_code == 200
    worker = Worker(app.extensions["gateway.engine"], app.extensions["gateway.config"])
    drain(worker)
    return worker


def explain(app: Any, message_id: str, **extra: str) -> dict[str, Any]:
    """`GET /admin/v1/explain` for `message_id`; it must answer 200."""
    response = app.test_client().get(
        "/admin/v1/explain", headers=ADMIN_AUTH, query_string={"message_id": message_id, **extra}
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def csrf_of(text: str) -> str:
    """The CSRF token of a console form."""
    found = re.search(r'name="csrf" value="([^"]+)"', text)
    assert found, "no CSRF token in the page"
    return found.group(1)


def console_sign_in(session: requests.Session, url: str, token: str) -> requests.Response:
    """Sign in to the console of the gateway at `url` (the login form, with its CSRF token)."""
    csrf = csrf_of(session.get(url + "/console/login").text)
    return session.post(
        url + "/console/login", data={"csrf": csrf, "token": token}, allow_redirects=False
    )


# terminal output ------------------------------------------------------------------------------

RAW = {
    chr(c)
    for c in (
        *range(0x20),
        0x7F,
        *range(0x80, 0xA0),
        *range(0x202A, 0x202F),
        *range(0x2066, 0x206A),
        0x200E,
        0x200F,
        0x061C,
        0x2028,
        0x2029,
    )
}
"""The characters that must never reach an operator's terminal raw."""


class FakeClock:
    """A clock that moves only when told to (`advance`): `monotonic` and `now` for a Worker,
    so back-off, renewal and stop tests step time instead of sleeping."""

    def __init__(self) -> None:
        self.seconds = 1000.0
        self.start = datetime.now(UTC)

    def monotonic(self) -> float:
        return self.seconds

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.seconds - 1000.0)

    def advance(self, seconds: float) -> None:
        self.seconds += seconds


def step(
    worker: Worker,
    clock: FakeClock,
    seconds: float,
    by: float = 0.125,
    stop: threading.Event | None = None,
    pause: float = 0.0,
) -> None:
    """Turn `worker`'s loop once at each step of `by` fake seconds, `seconds` of them (the
    first turn at the current time, the last at `seconds` later)."""
    stop = stop or threading.Event()
    for n in range(round(seconds / by) + 1):
        if n:
            clock.advance(by)
        worker.turn(stop, pause)


NOW = datetime.now(UTC)


def ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


class Rows:
    """Inserts events, deliveries and attempts with chosen times (straight SQL)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.n = 0

    def event(self, received_days: float, payload_bytes: int = 50) -> int:
        self.n += 1
        partitions.ensure(self.engine, ago(received_days), ago(received_days))
        with self.engine.begin() as c:
            return c.execute(insert(events).values(
                source="web", message_id=f"m{self.n}", type="track", event="E",
                user_id=f"u{self.n}", anonymous_id=None, timestamp=ago(received_days),
                received_at=ago(received_days),
                payload=orjson.dumps({"type": "track", "pad": "x" * payload_bytes}))
            ).inserted_primary_key[0]

    def delivery(self, event_id: int, state: str, updated_days: float,
                 attempt_days: float | None = None) -> int:
        with self.engine.begin() as c:
            delivery_id = c.execute(insert(deliveries).values(
                event_id=event_id, destination="cio", user_key="u", state=state, attempts=1,
                next_attempt_at=ago(updated_days), created_at=ago(updated_days),
                updated_at=ago(updated_days))).inserted_primary_key[0]
            c.execute(insert(delivery_attempts).values(
                delivery_id=delivery_id, number=1,
                started_at=ago(updated_days if attempt_days is None else attempt_days),
                duration_ms=3, status=200))
        return delivery_id
