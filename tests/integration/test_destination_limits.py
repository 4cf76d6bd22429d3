"""Per-destination limits against local stand-ins: the concurrency budget, the token-bucket
rate limit, a destination's own `x-ratelimit-*` headers, the circuit breaker (open, no
hammering, a single half-open probe, closed again once it answers), the status the console and
/metrics read, and lease renewal (a send longer than the lease is not sent twice). The real app
ingests, the real worker loop delivers over HTTP."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from prometheus_client import REGISTRY, generate_latest
from sqlalchemy import func, select

from gateway import create_app
from gateway.config import Config, ConfigFileError, from_mapping
from gateway.delivery.client import HttpClient
from gateway.delivery.worker import Worker
from gateway.heartbeat import WORKER, Heartbeat
from gateway.metrics import destination_status
from gateway.store.models import delivery_attempts
from tests.conftest import ADMIN_TOKEN
from tests.helpers import Running, send, stored_deliveries, tracks, wait_for
from tests.standin import Answer, Hanging, StandIn

KEY_B = "wk_isolation_b"
HOOK = {"webhookUrl": "https://hooks.example/in"}


def config_for(database_url: str, url: str, limits: dict[str, Any] | None = None,
               **worker: Any) -> Config:
    return from_mapping({
        "database_url": database_url, "admin_token": ADMIN_TOKEN,
        "sources": [{"name": "b", "write_key": KEY_B}],
        "destinations": [{"name": "hook", "type": "webhook", "endpoint": url,
                          "settings": HOOK, "limits": limits or {}}],
        "retry": {"base_delay_seconds": 0},
        "worker": {"concurrency": 4, "poll_interval_ms": 20, "lease_seconds": 60, **worker},
    })


class Timed:
    """Answers from the stand-in, with when each request arrived."""

    def __init__(self, standin: StandIn, answer: Answer | None = None) -> None:
        self.times: list[float] = []
        self.answer = answer
        standin.answer_for = self._answer

    def _answer(self, received: Any) -> Answer | None:
        self.times.append(time.monotonic())
        return self.answer


def attempts(engine) -> int:
    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(
            delivery_attempts)).scalar_one()


def delivered(engine) -> int:
    return sum(r["state"] == "delivered" for r in stored_deliveries(engine))


# -- configuration ------------------------------------------------------------------------------

def send_and_deliver(config: Config, messages: list[dict[str, Any]]) -> None:
    """Send `messages` through the tracking API, then run a worker until all are delivered."""
    app = create_app(config)
    engine = app.extensions["gateway.engine"]
    worker = Worker(engine, config)
    send(app, KEY_B, messages)
    try:
        with Running(worker):
            wait_for(lambda: delivered(engine) == len(messages), 20, "all delivered")
    finally:
        worker.close()
        engine.dispose()


def test_limits_load_beside_settings_with_type_defaults(database_url: str) -> None:
    config = from_mapping({
        "database_url": database_url, "admin_token": ADMIN_TOKEN,
        "sources": [{"name": "b", "write_key": KEY_B}],
        "destinations": [
            {"name": "cio", "type": "customerio",
             "settings": {"siteID": "s", "apiKey": "k"}},
            {"name": "kus", "type": "kustomer", "settings": {"apiKey": "k"}},
            {"name": "hook", "type": "webhook", "settings": HOOK,
             "limits": {"concurrency": 2, "rate_per_second": 7.5, "burst": 3, "claim_size": 50,
                        "circuit_failures": 0, "circuit_open_seconds": 2}},
        ]})
    cio, kus, hook = config.destinations
    assert cio.limits.rate_per_second == 100 and cio.limits.bucket_size == 100
    assert kus.limits.rate_per_second == 4
    assert (hook.limits.concurrency, hook.limits.rate_per_second, hook.limits.bucket_size,
            hook.limits.claim_size, hook.limits.circuit_failures) == (2, 7.5, 3, 50, 0)


@pytest.mark.parametrize("limits,message", [
    ({"concurency": 2}, "limits: unknown field 'concurency' (did you mean 'concurrency'?)"),
    ({"zzz": 2}, "limits: unknown field 'zzz' (known: concurrency,"),
    ({"concurrency": 0},
     "limits: field 'concurrency': must be a whole number from 1 to 256, not 0"),
    ({"concurrency": 2.5}, "field 'concurrency': must be a whole number from 1 to 256, not 2.5"),
    ({"rate_per_second": -1}, "field 'rate_per_second': must be a number from 0 to 100000"),
    ({"rate_per_second": True}, "field 'rate_per_second': must be a number"),
    ({"circuit_open_seconds": "30"}, "field 'circuit_open_seconds': must be a number"),
    ("fast", "limits: must be a table"),
])
def test_bad_limits_are_refused_precisely(limits: Any, message: str) -> None:
    with pytest.raises(ConfigFileError) as caught:
        from_mapping({"database_url": "sqlite:///x.db", "admin_token": ADMIN_TOKEN,
                      "sources": [{"name": "b", "write_key": KEY_B}],
                      "destinations": [{"name": "hook", "type": "webhook", "settings": HOOK,
                                        "limits": limits}]})
    text = str(caught.value)
    assert "[[destinations]] #1 ('hook').limits: " in text and message in text, text


def test_limits_inside_settings_are_refused() -> None:
    with pytest.raises(ConfigFileError, match=r"\.settings: unknown setting 'limits'"):
        from_mapping({"database_url": "sqlite:///x.db", "admin_token": ADMIN_TOKEN,
                      "sources": [{"name": "b", "write_key": KEY_B}],
                      "destinations": [{"name": "hook", "type": "webhook",
                                        "settings": {**HOOK, "limits": {"concurrency": 1}}}]})


# -- isolation: a concurrency budget of its own ---------------------------------------------------

def test_a_destination_holds_at_most_its_concurrency_budget(database_url: str) -> None:
    stuck = Hanging()
    config = config_for(database_url, stuck.url, {"concurrency": 2, "circuit_failures": 0})
    app = create_app(config)
    engine = app.extensions["gateway.engine"]
    worker = Worker(engine, config)
    send(app, KEY_B, tracks("u", 10))
    try:
        with Running(worker):
            wait_for(lambda: stuck.holding() == 2, 10, "two requests held")
            time.sleep(0.5)
            assert stuck.holding() == 2 and stuck.accepted == 2
            assert worker.status()["hook"]["threads"] == 2
            stuck.release()
            stuck.hang = False
    finally:
        stuck.close()
        worker.close()
        engine.dispose()


# -- throttling -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_the_rate_limit_spaces_requests(database_url: str, standin: StandIn) -> None:
    timed = Timed(standin)
    config = config_for(database_url, standin.url, {"rate_per_second": 20, "burst": 1})
    send_and_deliver(config, tracks("u", 21))
    span = timed.times[-1] - timed.times[0]
    assert len(timed.times) == 21
    assert span >= 20 / 20 * 0.9, f"21 requests at 20/s took only {span:.2f} s"
    assert span < 5, f"throttled far below the rate: {span:.2f} s"


@pytest.mark.slow
def test_x_ratelimit_headers_pause_the_destination(database_url: str,
                                                   standin: StandIn) -> None:
    """Kustomer's headers: no requests left until the window resets in 1 s."""
    timed = Timed(standin)
    first = threading.Event()

    def answer(received: Any) -> Answer | None:
        timed.times.append(time.monotonic())
        if not first.is_set():
            first.set()
            return Answer(200, headers={"x-ratelimit-limit": "300",
                                        "x-ratelimit-remaining": "0",
                                        "x-ratelimit-reset": "1"})
        return None

    standin.answer_for = answer
    config = config_for(database_url, standin.url, {"concurrency": 1})
    send_and_deliver(config, tracks("u", 3))
    gap = timed.times[1] - timed.times[0]
    assert len(timed.times) == 3 and gap >= 0.9, f"second request after {gap:.2f} s"


# -- the circuit breaker --------------------------------------------------------------------------

@pytest.mark.slow
def test_the_circuit_opens_probes_and_closes(database_url: str) -> None:
    probe_port = StandIn()
    port = probe_port.port
    probe_port.close()  # nothing listens: every connection is refused
    config = config_for(database_url, f"http://127.0.0.1:{port}",
                        {"concurrency": 1, "circuit_failures": 3, "circuit_open_seconds": 1.0})
    app = create_app(config)
    engine = app.extensions["gateway.engine"]
    worker = Worker(engine, config)
    send(app, KEY_B, tracks("u", 10))
    recovered = None
    try:
        with Running(worker):
            wait_for(lambda: worker.status()["hook"]["circuit"] == "open", 10, "an open circuit")
            wait_for(lambda: attempts(engine) == 3, 5, "three failed attempts recorded")
            opened = 3
            time.sleep(0.6)  # open: nothing is sent meanwhile
            assert attempts(engine) == opened
            # after the open period exactly one probe goes; it fails and opens it again
            wait_for(lambda: attempts(engine) == opened + 1, 5, "the probe")
            assert worker.status()["hook"]["circuit"] == "open"
            time.sleep(0.3)
            assert attempts(engine) == opened + 1
            # the gauges follow within a second (they are published once a second)
            wait_for(lambda: destination_status().get("hook", {}).get("circuit_open") == 1.0,
                     3, "the circuit gauge")
            text = generate_latest(REGISTRY).decode()
            assert 'gateway_destination_circuit_open{destination="hook"} 1.0' in text
            recovered = StandIn(port)  # the destination is back: the next probe closes it
            wait_for(lambda: delivered(engine) == 10, 15, "everything delivered")
            assert worker.status()["hook"]["circuit"] == "closed"
            # opened at least twice: by the failures, and again by the failed probe
            assert worker.status()["hook"]["circuit_opened"] >= 2
    finally:
        worker.close()
        engine.dispose()
        if recovered:
            recovered.close()
    assert len(recovered.requests) == 10


# -- lease renewal --------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_send_longer_than_the_lease_renews_it_and_is_sent_once(database_url: str,
                                                                 standin: StandIn) -> None:
    standin.answer_for = lambda received: Answer(200, delay=3.5)
    config = config_for(database_url, standin.url, lease_seconds=2)
    app = create_app(config)
    engine = app.extensions["gateway.engine"]
    first, second = Worker(engine, config), Worker(engine, config)
    send(app, KEY_B, tracks("u", 1))
    try:
        with Running(first):
            wait_for(lambda: len(standin.requests) == 1, 5, "the send")
            with Running(second):  # a second worker, claiming all along
                wait_for(lambda: delivered(engine) == 1, 10, "delivered")
                time.sleep(0.3)
    finally:
        first.close()
        second.close()
        engine.dispose()
    [row] = stored_deliveries(engine)
    assert len(standin.requests) == 1, "sent twice: the lease was not renewed"
    assert row["attempts"] == 1 and row["state"] == "delivered"


@pytest.mark.slow
def test_kustomer_lookups_spend_its_default_rate_limit(database_url: str,
                                                       standin: StandIn) -> None:
    """Kustomer's default 4 requests/s (burst 4) covers its customer searches too: 5
    identifies are 5 searches and 5 creates, so 10 requests take at least (10 - 4) / 4 s."""
    times: list[float] = []

    def answer(received: Any) -> Answer:
        times.append(time.monotonic())
        return Answer(404, {}) if received.method == "GET" else Answer(201, {"data": {}})

    standin.answer_for = answer
    config = from_mapping({
        "database_url": database_url, "admin_token": ADMIN_TOKEN,
        "sources": [{"name": "b", "write_key": KEY_B}],
        "destinations": [{"name": "kus", "type": "kustomer", "endpoint": standin.url,
                          "settings": {"apiKey": "kus-key"}}],
        "worker": {"concurrency": 4, "poll_interval_ms": 20, "lease_seconds": 60},
    })
    send_and_deliver(config, [{"type": "identify", "userId": f"k-{n}", "messageId": f"k-{n}"}
                              for n in range(5)])
    assert len(times) == 10 and [r.method for r in standin.requests].count("GET") == 5
    span = times[-1] - times[0]
    assert span >= 1.3, f"10 requests at 4/s (burst 4) took only {span:.2f} s"


# -- lookups and deletions go through the lane ------------------------------------------------

class Counting(HttpClient):
    """The real client, counting every request it sends (lookups and deletions included):
    against a port where nothing listens, the stand-in cannot count refused connections."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0
        self._lock = threading.Lock()

    def send(self, request: Any, endpoint: str | None = None) -> Any:
        with self._lock:
            self.sent += 1
        return super().send(request, endpoint)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["lookups", "deletions"])
def test_failing_lookups_and_deletions_open_the_circuit(database_url: str, kind: str) -> None:
    """Kustomer's customer searches, or a regulation's deletions, to a destination whose
    connections are refused: they open its circuit, nothing goes out while it is open, one
    probe goes after it, and once the destination is back every delivery arrives (retried,
    never dead)."""
    closed = StandIn()
    port = closed.port
    closed.close()  # nothing listens: every connection is refused
    limits = {"concurrency": 1, "rate_per_second": 0, "circuit_failures": 3,
              "circuit_open_seconds": 1.0}
    destination = ({"name": "d", "type": "kustomer", "settings": {"apiKey": "kus-key"}}
                   if kind == "lookups" else
                   {"name": "d", "type": "custify", "settings": {"apiKey": "cus-key"}})
    config = from_mapping({
        "database_url": database_url, "admin_token": ADMIN_TOKEN,
        "sources": [{"name": "b", "write_key": KEY_B}],
        "destinations": [{**destination, "endpoint": f"http://127.0.0.1:{port}",
                          "limits": limits}],
        "retry": {"base_delay_seconds": 0},
        "worker": {"concurrency": 1, "poll_interval_ms": 20, "lease_seconds": 60}})
    app = create_app(config)
    engine = app.extensions["gateway.engine"]
    client = Counting()
    worker = Worker(engine, config, client)
    if kind == "lookups":  # each identify searches for the customer before writing
        send(app, KEY_B, [{"type": "identify", "userId": f"k-{n}", "messageId": f"k-{n}"}
                          for n in range(8)])
    else:
        admin = app.test_client()
        for n in range(8):
            response = admin.post("/admin/v1/regulations",
                                  headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                                  json={"type": "delete", "subject": {"user_id": f"gone-{n}"}})
            assert response.status_code == 202, response.get_data(as_text=True)
    recovered = None
    try:
        with Running(worker):
            wait_for(lambda: worker.status()["d"]["circuit"] == "open", 10, "an open circuit")
            assert client.sent == 3
            time.sleep(0.6)  # open: no lookup or deletion goes out meanwhile
            assert client.sent == 3
            # one probe goes after the open period; it fails and opens the circuit again
            wait_for(lambda: client.sent == 4 and worker.status()["d"]["circuit"] == "open",
                     5, "the probe, and the circuit open again")
            time.sleep(0.3)
            assert client.sent == 4
            recovered = StandIn(port)  # the destination is back: the next probe closes it
            recovered.answer_for = lambda r: Answer(404, {}) if r.method == "GET" else None
            wait_for(lambda: delivered(engine) == 8, 20, "everything delivered")
            assert worker.status()["d"]["circuit"] == "closed"
    finally:
        worker.close()
        engine.dispose()
        if recovered:
            recovered.close()
    assert {row["state"] for row in stored_deliveries(engine)} == {"delivered"}
    methods = [r.method for r in recovered.requests]
    assert methods.count("GET" if kind == "lookups" else "DELETE") == 8, methods


# -- one rate across worker processes -------------------------------------------------------------

@pytest.mark.slow
def test_two_live_workers_together_keep_the_configured_rate(database_url: str,
                                                           standin: StandIn) -> None:
    """Two workers, each beating in the heartbeats table, against one counting stand-in: each
    refills at half the rate, so together they send ~20/s, not 2 × 20/s."""
    timed = Timed(standin)
# a small claim, so both workers always hold some of the queue (as real ones do)
    config = config_for(database_url, standin.url, {"rate_per_second": 20, "burst": 2,
                                                    "concurrency": 2, "claim_size": 2},
                        heartbeat_seconds=1)
    app = create_app(config)
    engine = app.extensions["gateway.engine"]
    clients = [Counting(), Counting()]
    workers = [Worker(engine, config, client) for client in clients]
    beats = [Heartbeat(engine, WORKER, 1) for _ in workers]
    for worker, beat in zip(workers, beats, strict=True):
        beat.beat(force=True)
        worker.on_tick(beat.beat)
    count = 61
    send(app, KEY_B, tracks("u", count))
    try:
        with Running(workers[0]), Running(workers[1]):
            wait_for(lambda: delivered(engine) == count, 30, "all delivered")
            shares = [w.status()["hook"]["workers"] for w in workers]
    finally:
        for worker in workers:
            worker.close()
        for beat in beats:
            beat.remove()
        engine.dispose()
    assert shares == [2, 2]
    assert min(c.sent for c in clients) >= count // 4, [c.sent for c in clients]  # both sent
    assert len(timed.times) == count
    span = timed.times[-1] - timed.times[0]
    # the two buckets start with a burst of one each, then 20/s together
    least = (count - 2) / 20
    assert span >= least * 0.85, f"{count} requests at 20/s took only {span:.2f} s"
    assert span < least * 2.5, f"throttled far below the rate: {span:.2f} s"
