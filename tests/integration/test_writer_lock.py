"""SQLite writers queue on one lock per file across threads and processes (gateway/store/db.py
WriterLock), so the next writer starts the moment the lock is free instead of when SQLite's
busy handler next wakes up."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import insert

from gateway.store.db import make_engine, migrate, write_transaction
from gateway.store.models import heartbeats
from gateway.store.writer_lock import writer_lock

pytestmark = pytest.mark.slow  # a writer in another process, and a forked child

HOLD = 1.0  # seconds the other side holds the lock


def _database(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    migrate(url)
    return url


def _beat(n: int) -> dict:
    from datetime import UTC, datetime
    now = datetime.now(UTC)
    return {"id": f"t{n}", "role": "test", "host": "h", "pid": n, "started_at": now,
            "beat_at": now}


def test_every_engine_of_a_file_shares_the_process_lock(tmp_path: Path, monkeypatch) -> None:
    url = _database(tmp_path)
    monkeypatch.chdir(tmp_path)
    one, two = make_engine(url), make_engine("sqlite:///gateway.db")  # the same file
    assert writer_lock(tmp_path / "gateway.db") is writer_lock(Path("gateway.db"))
    with write_transaction(one) as connection:
        connection.execute(insert(heartbeats).values(_beat(1)))
    with write_transaction(two) as connection:
        connection.execute(insert(heartbeats).values(_beat(2)))
    assert (tmp_path / "gateway.db-writer").exists()
    one.dispose()
    two.dispose()


def test_a_writer_in_another_process_holds_back_this_ones(tmp_path: Path) -> None:
    url = _database(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys, time; from pathlib import Path\n"
            "from gateway.store.writer_lock import writer_lock\n"
            f"with writer_lock(Path({str(tmp_path / 'gateway.db')!r})):\n"
            "    print('held', flush=True); time.sleep(" + str(HOLD) + ")\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        engine = make_engine(url)
        started = time.monotonic()
        with write_transaction(engine) as connection:  # no SQLite lock is held: only ours
            waited = time.monotonic() - started
            connection.execute(insert(heartbeats).values(_beat(1)))
        engine.dispose()
        assert waited >= HOLD * 0.6, f"wrote after {waited:.2f} s, beside a held lock"
    finally:
        holder.wait(10)


def _child_writes(path: str, result: multiprocessing.Queue) -> None:
    started = time.monotonic()
    with writer_lock(Path(path)):
        result.put(time.monotonic() - started)


def test_a_forked_child_starts_unlocked_and_still_queues(tmp_path: Path) -> None:
    """A child forked while a thread of the parent holds the lock neither inherits that
    thread's hold (it would wait forever) nor slips past it (flock is per open file)."""
    path = tmp_path / "gateway.db"
    _database(tmp_path)
    lock = writer_lock(path)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            held.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(5)
    context = multiprocessing.get_context("fork")
    result = context.Queue()
    child = context.Process(target=_child_writes, args=(str(path), result))
    child.start()
    time.sleep(HOLD)
    release.set()
    thread.join(5)
    waited = result.get(timeout=10)
    child.join(10)
    assert child.exitcode == 0
    assert waited >= HOLD * 0.6  # it waited for the parent's hold, then got the lock
