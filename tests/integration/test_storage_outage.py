"""Storage trouble, told truthfully and quietly: a full disk under the SQLite file makes writes
503 and /health 503 (a real write probe), logs one line when it starts and one when it ends,
and everything recovers by itself once there is room again — no restart.

The full disk is real: a 4 MiB tmpfs mounted for the test (root only; CI runs as root)."""

from __future__ import annotations

import contextlib
import logging
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import create_app
from gateway.config import from_mapping
from gateway.store.db import migrate
from gateway.store.storage_state import SETTLE
from tests.conftest import WRITE_KEY, base_config
from tests.helpers import basic, stored_events

pytestmark = pytest.mark.slow  # `gateway serve` on a disk that fills up


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as out:
        for size in (65536, 4096, 1):  # down to the last byte: not a page left for a WAL frame
            with contextlib.suppress(OSError):
                while True:
                    out.write(b"\0" * size)
    return filler


def send(client, user: str) -> int:
    return client.post("/v1/track", json={"userId": user, "event": "e"},
                       headers=basic(WRITE_KEY)).status_code


def test_a_full_disk_is_503_once_logged_and_recovers_without_a_restart(
        small_disk: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = f"sqlite:///{small_disk / 'gateway.db'}"
    migrate(url)
    app = create_app(from_mapping(base_config(url)))
    client = app.test_client()
    try:
        assert send(client, "before") == 200
        filler = fill(small_disk)
        caplog.clear()
        with caplog.at_level(logging.INFO):
            answers = [send(client, f"during-{n}") for n in range(20)]
            health = client.get("/health")
        # SQLite may still fit a write into WAL space it reuses: such a write is stored and
        # answered 200 (the invariant); the rest are a retryable 503, never a 500
        assert set(answers) <= {200, 503} and answers.count(503) >= 15
        stored = {e["user_id"] for e in stored_events(app.extensions["gateway.engine"])}
        assert {f"during-{n}" for n, a in enumerate(answers) if a == 200} <= stored
        assert health.status_code == 503
        assert "full" in health.get_json()["database"]
        down = [r for r in caplog.records if "storage failing" in r.getMessage()]
        assert len(down) == 1 and down[0].exc_info is None
        assert "full" in down[0].getMessage()

        filler.unlink()
        caplog.clear()
        time.sleep(SETTLE)  # an outage ends once writes have stopped failing for a moment
        with caplog.at_level(logging.INFO):
            assert send(client, "after") == 200
            assert client.get("/health").status_code == 200
        back = [r for r in caplog.records if "storage works again" in r.getMessage()]
        assert len(back) == 1
        failed = int(back[0].getMessage().split("(")[1].split()[0])
        assert failed in (answers.count(503), answers.count(503) + 1)  # + the health probe
    finally:
        app.extensions["gateway.engine"].dispose()
