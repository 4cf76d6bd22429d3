"""`gateway worker` as real processes: killed mid-batch and restarted, and two at once."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from gateway import create_app
from gateway.config import from_mapping
from tests.conftest import ADMIN_TOKEN, WRITE_KEY, write_toml
from tests.helpers import basic, wait_until_delivered
from tests.standin import Answer, StandIn

pytestmark = pytest.mark.slow  # `gateway worker` processes, one of them killed

USERS = ("u1", "u2", "u3", "u4")


def raw_config(database_url: str, endpoint: str, lease: int) -> dict[str, Any]:
    return {
        "database_url": database_url, "admin_token": ADMIN_TOKEN,
        "sources": [{"name": "web", "write_key": WRITE_KEY}],
        "destinations": [{"name": "hook", "type": "webhook", "endpoint": endpoint,
                          "settings": {"webhookUrl": "https://hooks.example/in"}}],
        "retry": {"base_delay_seconds": 0},
        "worker": {"concurrency": 4, "lease_seconds": lease, "batch_size": 50,
                   "poll_interval_ms": 50},
    }


def ingest(raw: dict[str, Any], per_user: int) -> None:
    app = create_app(from_mapping(raw))
    batch = [{"type": "track", "userId": u, "event": "e", "messageId": f"{u}-{n:03d}"}
             for n in range(per_user) for u in USERS]
    response = app.test_client().post("/v1/batch", json={"batch": batch},
                                      headers=basic(WRITE_KEY))
    assert response.status_code == 200
    app.extensions["gateway.engine"].dispose()


def start_worker(config_path: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gateway.cli", "--config", str(config_path),
                             "worker"], stdout=log.open("ab"), stderr=subprocess.STDOUT)


def assert_per_user_order(standin: StandIn) -> None:
    """At least once, and each user's events first arrive in the order they were sent."""
    seen = [r.json["messageId"] for r in standin.requests]
    for user in USERS:
        mine = [m for m in seen if m.startswith(user)]
        first_arrivals = list(dict.fromkeys(mine))
        assert first_arrivals == sorted(first_arrivals), (user, mine)


def test_worker_killed_mid_batch_loses_nothing(database_url: str, tmp_path: Path) -> None:
    standin = StandIn()
    standin.answer_for = lambda r: Answer(delay=0.15)
    raw = raw_config(database_url, standin.url, lease=2)
    config_path = tmp_path / "gateway.toml"
    write_toml(config_path, raw)
    ingest(raw, per_user=5)
    worker = start_worker(config_path, tmp_path / "worker.log")
    try:
        deadline = time.monotonic() + 30
        while len(standin.requests) < 6 and time.monotonic() < deadline:
            time.sleep(0.02)
        worker.send_signal(signal.SIGKILL)  # mid-batch: sends in flight, leases held
        worker.wait(timeout=10)
        assert len(standin.requests) < 20
        worker = start_worker(config_path, tmp_path / "worker.log")
        wait_until_delivered(raw, 20)
        assert {r.json["messageId"] for r in standin.requests} == {
            f"{u}-{n:03d}" for u in USERS for n in range(5)}
        assert_per_user_order(standin)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        standin.close()


def test_two_worker_processes_share_the_work(database_url: str, tmp_path: Path) -> None:
    standin = StandIn()
    standin.answer_for = lambda r: Answer(delay=0.01)
    raw = raw_config(database_url, standin.url, lease=30)
    config_path = tmp_path / "gateway.toml"
    write_toml(config_path, raw)
    ingest(raw, per_user=25)
    workers = [start_worker(config_path, tmp_path / f"worker{i}.log") for i in range(2)]
    try:
        wait_until_delivered(raw, 100)
        messages = [r.json["messageId"] for r in standin.requests]
        assert sorted(messages) == sorted(f"{u}-{n:03d}" for u in USERS for n in range(25))
        assert_per_user_order(standin)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            assert worker.wait(timeout=30) == 0  # SIGTERM drains and exits cleanly
        standin.close()

