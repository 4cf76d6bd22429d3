"""`gateway serve` left unattended: its delivery worker is restarted when killed, its children
never outlive it, a busy port is refused before anything starts, and /health tells the truth
about the delivery worker (a heartbeat in the database) — all with real processes and SIGKILL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from gateway import create_app
from gateway.config import from_mapping
from tests.conftest import ADMIN_TOKEN, WRITE_KEY, LiveGateway, free_port, write_toml
from tests.helpers import basic, stored_deliveries, stored_events, wait_for
from tests.standin import StandIn

pytestmark = pytest.mark.slow  # every test starts `gateway serve` and kills its children


def children_of(pid: int) -> set[int]:
    """Every live descendant of `pid`, read from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def delivery_workers(serve_pid: int) -> set[int]:
    return {p for p in children_of(serve_pid) if cmdline(p).rstrip().endswith(" worker")}


@pytest.fixture
def hook() -> Iterator[StandIn]:
    stand_in = StandIn()
    yield stand_in
    stand_in.close()


def config_with_hook(database_url: str, hook: StandIn, **extra: Any) -> dict[str, Any]:
    return {
        "database_url": database_url, "admin_token": ADMIN_TOKEN,
        "sources": [{"name": "web", "write_key": WRITE_KEY}],
        "destinations": [{"name": "hook", "type": "webhook", "endpoint": hook.url,
                          "settings": {"webhookUrl": "https://hooks.example/in"}}],
        "worker": {"poll_interval_ms": 50, "heartbeat_seconds": 1},
        **extra,
    }


def track(gateway: LiveGateway, user: str) -> None:
    response = requests.post(gateway.url + "/v1/track", headers=basic(WRITE_KEY), timeout=10,
                             json={"userId": user, "event": "Signed Up"})
    assert response.status_code == 200, response.text


def delivered(database_url: str) -> int:
    app = create_app(from_mapping({"database_url": database_url, "admin_token": ADMIN_TOKEN}))
    try:
        return sum(r["state"] == "delivered" for r in stored_deliveries(
            app.extensions["gateway.engine"]))
    finally:
        app.extensions["gateway.engine"].dispose()


def test_a_killed_delivery_worker_is_restarted_and_delivery_resumes(
        database_url: str, tmp_path: Path, hook: StandIn) -> None:
    gateway = LiveGateway(tmp_path, config_with_hook(database_url, hook), delivery_worker=True)
    try:
        first = wait_for(lambda: delivery_workers(gateway.process.pid), 20, "a delivery worker")
        track(gateway, "before")
        wait_for(lambda: delivered(database_url) == 1, 20, "the first delivery")
        os.kill(next(iter(first)), signal.SIGKILL)
        second = wait_for(lambda: delivery_workers(gateway.process.pid) - first, 20,
                          "a restarted delivery worker")
        assert len(second) == 1
        track(gateway, "after")
        wait_for(lambda: delivered(database_url) == 2, 30, "delivery after the restart")
        log = gateway.log_text()
        assert "delivery worker" in log and "killed by SIGKILL" in log and "restarting" in log
        assert wait_for(lambda: requests.get(gateway.url + "/health", timeout=5).ok, 20,
                        "health back to 200")
    finally:
        gateway.stop()


def test_children_never_outlive_a_killed_serve_and_it_starts_again(
        database_url: str, tmp_path: Path, hook: StandIn) -> None:
    raw = config_with_hook(database_url, hook)
    gateway = LiveGateway(tmp_path, raw, workers=2, delivery_worker=True)
    port = gateway.port
    try:
        wait_for(lambda: delivery_workers(gateway.process.pid), 20, "a delivery worker")
        descendants = children_of(gateway.process.pid)
        assert len(descendants) >= 4  # gunicorn arbiter, 2 gunicorn workers, delivery worker
        acknowledged: list[str] = []
        sending = threading.Thread(target=_send_until_refused, args=(gateway, acknowledged))
        sending.start()
        wait_for(lambda: len(acknowledged) >= 20, 20, "traffic before the kill")
        gateway.process.kill()
        gateway.process.wait()
        wait_for(lambda: not any(alive(p) for p in descendants), 15,
                 "every child of the killed serve to exit")
        sending.join(timeout=30)
    finally:
        gateway.stop()
    stored = _stored_message_ids(database_url)
    assert set(acknowledged) <= stored  # 200 meant stored, even for the last answers
    # the port is free again and a new serve comes up with one delivery worker, not two
    again = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "--config", str(gateway.config_path), "serve",
         "--bind", f"127.0.0.1:{port}", "--workers", "1"], cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _health(f"http://127.0.0.1:{port}") == 200, 30, "the new serve")
        assert len(delivery_workers(again.pid)) == 1
    finally:
        again.terminate()
        again.wait(timeout=60)


def _send_until_refused(gateway: LiveGateway, acknowledged: list[str]) -> None:
    session = requests.Session()
    for n in range(100_000):
        message_id = f"kill-{n}"
        try:
            response = session.post(gateway.url + "/v1/track", headers=basic(WRITE_KEY),
                                    timeout=10, json={"userId": "u", "event": "e",
                                                      "messageId": message_id})
        except requests.RequestException:
            return
        if response.status_code == 200:
            acknowledged.append(message_id)


def _stored_message_ids(database_url: str) -> set[str]:
    app = create_app(from_mapping({"database_url": database_url, "admin_token": ADMIN_TOKEN}))
    try:
        return {e["message_id"] for e in stored_events(app.extensions["gateway.engine"])}
    finally:
        app.extensions["gateway.engine"].dispose()


def _health(url: str) -> int | None:
    try:
        return requests.get(url + "/health", timeout=2).status_code
    except requests.RequestException:
        return None


def test_a_busy_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    write_toml(tmp_path / "gateway.toml", {
        "database_url": f"sqlite:///{tmp_path / 'g.db'}", "admin_token": ADMIN_TOKEN,
        "sources": [{"name": "web", "write_key": WRITE_KEY}]})
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "--config", str(tmp_path / "gateway.toml"),
             "serve", "--bind", f"127.0.0.1:{port}"], cwd=tmp_path, capture_output=True,
            text=True, timeout=60)
    assert result.returncode == 2
    assert "already in use" in result.stderr
    assert "Serving on" not in result.stdout
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 20


def test_health_reports_a_dead_delivery_worker_and_recovers(
        database_url: str, tmp_path: Path, hook: StandIn) -> None:
    """serve --no-worker beside a worker elsewhere: /health follows that worker's heartbeat."""
    raw = config_with_hook(database_url, hook)
    gateway = LiveGateway(tmp_path, raw)  # --no-worker, no worker has ever run: 200
    assert requests.get(gateway.url + "/health", timeout=5).json() == {"status": "ok",
                                                                       "database": "ok"}
    worker_log = (tmp_path / "worker.log").open("wb")
    start = [sys.executable, "-m", "gateway.cli", "--config", str(gateway.config_path), "worker"]
    worker = subprocess.Popen(start, stdout=worker_log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: (_health_body(gateway, 200) or {}).get("delivery_worker") == "ok", 20,
                 "the worker's heartbeat")
        worker.kill()
        worker.wait()
        body = wait_for(lambda: _health_body(gateway, 503), 20, "a 503 for the dead worker")
        assert body["status"] == "unavailable"
        assert body["delivery_worker"].startswith("no delivery worker heartbeat for")
        worker = subprocess.Popen(start, stdout=worker_log, stderr=subprocess.STDOUT)
        wait_for(lambda: _health_body(gateway, 200), 20, "health back to 200")
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        worker_log.close()
        gateway.stop()


def _health_body(gateway: LiveGateway, status: int) -> dict[str, Any] | None:
    response = requests.get(gateway.url + "/health", timeout=5)
    return response.json() if response.status_code == status else None


def test_serve_removes_its_metrics_folder_and_sweeps_stale_ones(tmp_path: Path) -> None:
    import tempfile

    stale = Path(tempfile.mkdtemp(prefix="gateway-metrics-pid999999999-"))
    foreign = Path(tempfile.mkdtemp(prefix="gateway-metrics-"))  # not ours to judge
    raw = {"database_url": f"sqlite:///{tmp_path / 'g.db'}", "admin_token": ADMIN_TOKEN,
           "sources": [{"name": "web", "write_key": WRITE_KEY}]}
    gateway = LiveGateway(tmp_path, raw)
    pid = gateway.process.pid
    mine = list(Path(tempfile.gettempdir()).glob(f"gateway-metrics-pid{pid}-*"))
    assert len(mine) == 1
    assert not stale.exists()
    assert foreign.exists()
    foreign.rmdir()
    gateway.stop()
    assert not mine[0].exists()


def test_an_address_not_on_this_host_is_refused_without_a_traceback(tmp_path: Path) -> None:
    write_toml(tmp_path / "gateway.toml", {
        "database_url": f"sqlite:///{tmp_path / 'g.db'}", "admin_token": ADMIN_TOKEN})
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "--config", str(tmp_path / "gateway.toml"),
         "serve", "--bind", f"203.0.113.7:{port}"], cwd=tmp_path, capture_output=True,
        text=True, timeout=60)
    assert result.returncode == 2
    assert "cannot listen on 203.0.113.7" in result.stderr
    assert "Traceback" not in result.stderr
