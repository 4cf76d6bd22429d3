"""A rolling upgrade on one PostgreSQL: a node of the previous release keeps serving while this
release migrates the schema (`--expand-only`) and starts beside it; both ingest, both deliver,
nothing is lost, and the old node reads what the new one wrote. Once the old node is gone,
`gateway migrate` runs what waited for the rollout (the partitions of migration 0014) under the
live new node, which goes on ingesting, deduplicating and delivering in order.

The previous release's code is taken from git history (PREVIOUS, pinned) and run from an
extracted tree on PYTHONPATH, with this environment's dependencies.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import (
    ADMIN_TOKEN,
    POSTGRES_URL,
    WRITE_KEY,
    free_port,
    pg_schema,
    write_toml,
)
from tests.helpers import basic, wait_for
from tests.standin import StandIn

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

PREVIOUS = "e09d4b7"  # the last release before this one (schema 0009)
REPO = Path(__file__).resolve().parents[2]
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def previous_release(tmp_path: Path) -> Path:
    """The previous release's code, extracted from git history."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    if subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{PREVIOUS}^{{commit}}"],
                      capture_output=True).returncode != 0:
        pytest.skip(f"commit {PREVIOUS} is not in this clone's history (a shallow clone?)")
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", PREVIOUS],
                             capture_output=True, check=True).stdout
    tree = tmp_path / "previous"
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(tree, filter="data")
    return tree


@pytest.fixture
def empty_schema() -> Iterator[str]:
    if not POSTGRES_URL:
        pytest.skip("GATEWAY_TEST_POSTGRES_URL is not set")
    with pg_schema(migrated=False) as url:
        yield url


class Node:
    """`gateway serve` (HTTP and delivery worker) of one release: `code` is the tree on
    PYTHONPATH, or None for this checkout."""

    def __init__(self, folder: Path, config: Path, code: Path | None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / f"node-{self.port}.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "--config", str(config), "serve", "--bind",
             f"127.0.0.1:{self.port}", "--workers", "1"],
            cwd=code or folder, env=release_env(code), stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT)
        wait_for(self.healthy, 30, lambda: self.log.read_text(errors="replace")[-2000:])

    def healthy(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(self.log.read_text(errors="replace")[-2000:])
        try:
            return requests.get(self.url + "/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def track(self, user: str, message_id: str, **extra: Any) -> int:
        body = {"userId": user, "event": "Upgraded", "messageId": message_id, **extra}
        return requests.post(self.url + "/v1/track", json=body, headers=basic(WRITE_KEY),
                             timeout=10).status_code

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def release_env(code: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if code is not None:
        env["PYTHONPATH"] = str(code)  # ahead of the installed (this) checkout
    return env


def gateway(code: Path | None, config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway.cli", "--config", str(config), *args],
                          cwd=code or config.parent, env=release_env(code), capture_output=True,
                          text=True, timeout=120)


def test_the_previous_release_keeps_working_through_a_rolling_upgrade(
        previous_release: Path, empty_schema: str, tmp_path: Path) -> None:
    standin = StandIn()
    config = tmp_path / "gateway.toml"
    write_toml(config, {
        "database_url": empty_schema, "admin_token": ADMIN_TOKEN,
        "sources": [{"name": "web", "write_key": WRITE_KEY}],
        "destinations": [{"name": "hook", "type": "webhook", "endpoint": standin.url,
                          "settings": {"webhookUrl": "https://hooks.example/in"}}],
        "worker": {"poll_interval_ms": 50}})
    assert gateway(previous_release, config, "migrate").returncode == 0
    old = Node(tmp_path, config, previous_release)
    new = None
    try:
        assert [old.track(f"user-{n % 4}", f"before-{n}") for n in range(12)] == [200] * 12
        check = gateway(None, config, "migrate", "--check")
        assert check.returncode in (0, 1), check.stderr
        if check.returncode == 1:  # a revision is pending: it must let the old node live
            assert "nodes of the previous release keep working" in check.stdout, check.stdout
        migrated = gateway(None, config, "migrate", "--expand-only")
        assert migrated.returncode == 0, migrated.stderr
        new = Node(tmp_path, config, None)
        answers = []
        for n in range(24):  # both nodes at once, the same users
            node = (old, new)[n % 2]
            answers.append(node.track(f"user-{n % 4}", f"during-{n}",
                                      context={"traits": {"email": f"u{n % 4}@example.com"}}))
        assert answers == [200] * 24
        assert old.healthy() and new.healthy()
        wait_for(lambda: len({r.json["messageId"] for r in standin.requests}) == 36, 60,
                 lambda: f"{len(standin.requests)} requests")
        # the old node reads what the new one wrote
        listed = requests.get(old.url + "/admin/v1/events", headers=AUTH,
                              params={"user_id": "user-1", "limit": 100}, timeout=10)
        assert listed.status_code == 200
        ids = {e["message_id"] for e in listed.json()["data"]}
        assert {"during-1", "during-5"} <= ids  # one written by each node
        old.stop()
        # the rollout is over: what waited for it runs under the live new node
        assert "after the rollout" in gateway(None, config, "migrate", "--check").stdout
        finished = gateway(None, config, "migrate")
        assert finished.returncode == 0, finished.stderr
        assert gateway(None, config, "migrate", "--check").returncode == 0
        after = [new.track(f"user-{n % 4}", f"after-{n}") for n in range(12)]
        resent = [new.track(f"user-{n % 4}", f"before-{n}") for n in range(4)]
        assert after + resent == [200] * 16
        wait_for(lambda: len({r.json["messageId"] for r in standin.requests}) == 48, 60,
                 lambda: f"{len(standin.requests)} requests")
        assert new.healthy()
    finally:
        old.stop()
        if new is not None:
            new.stop()
        standin.close()
    seen = [r.json["messageId"] for r in standin.requests]
    assert len(seen) == len(set(seen)), "a resend after the conversion was delivered again"
    phases = ("before", "during", "after")
    for user in range(4):  # per-user order held across both nodes' workers and the conversion
        mine = [m for m in dict.fromkeys(seen) if int(m.split("-")[1]) % 4 == user]
        assert mine == sorted(mine, key=lambda m: phases.index(m.split("-")[0])), mine
