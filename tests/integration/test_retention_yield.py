"""SQLite pruning yields to every other writer (gateway/retention.py `_sqlite_round`,
gateway/store/writer_lock.py `foreground_waiting`): a round starts only when no writer waits
for the lock or holds it, stops after the step during which one arrived, and still makes
progress, at the floor, under writers that never pause."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, insert, select

from gateway import retention
from gateway.config import RetentionSettings
from gateway.retention import Pruner
from gateway.store.db import make_engine, sqlite_writer_lock, write_transaction
from gateway.store.models import events, heartbeats
from tests.helpers import Rows


@pytest.fixture
def engine(migrated_sqlite: Path, tmp_path: Path) -> Iterator[Engine]:
    path = tmp_path / "gateway.db"
    shutil.copy2(migrated_sqlite, path)
    engine = make_engine(f"sqlite:///{path}")
    yield engine
    engine.dispose()


def expired(engine: Engine, n: int) -> None:
    rows = Rows(engine)
    for _ in range(n):
        rows.delivery(rows.event(40), "delivered", 40)


def count(engine: Engine) -> int:
    with engine.connect() as c:
        return c.scalar(select(func.count()).select_from(events)) or 0


class Scripted:
    """Stands in for the writer lock's probe: says a writer waits on the calls listed."""

    def __init__(self, engine: Engine, waiting_on: set[int]) -> None:
        self.real = sqlite_writer_lock(engine)
        self.calls = 0
        self.waiting_on = waiting_on

    def foreground_waiting(self) -> bool:
        self.calls += 1
        return self.calls in self.waiting_on


def test_a_round_does_not_start_while_a_writer_waits(engine: Engine, monkeypatch) -> None:
    expired(engine, 3)
    probe = Scripted(engine, waiting_on={1, 2, 3, 4, 5})
    monkeypatch.setattr(retention, "sqlite_writer_lock", lambda _engine: probe)
    began: list[int] = []
    real = retention.write_transaction

    def spy(engine_: Engine, background: bool = False) -> Any:
        began.append(probe.calls)
        return real(engine_, background=background)

    monkeypatch.setattr(retention, "write_transaction", spy)
    started = time.monotonic()
    pruned = Pruner(engine, RetentionSettings()).prune_once()
    assert began == [6], "the round began before the writers were gone"
    assert time.monotonic() - started >= 5 * retention.POLL * 0.9
    assert pruned.counts["events"] == 3 and not pruned.yielded


def test_a_round_stops_after_the_step_a_writer_arrived_in(engine: Engine, monkeypatch) -> None:
    expired(engine, 60)
    monkeypatch.setattr(retention, "STEP", 10)
    settings = RetentionSettings(batch_size=40)
    probe = Scripted(engine, waiting_on={3})  # 1: before the round; 2: after step 1 …
    monkeypatch.setattr(retention, "sqlite_writer_lock", lambda _engine: probe)
    pruned = Pruner(engine, settings).prune_once()
    assert pruned.yielded
    assert pruned.counts["events"] == 20  # two steps of 10, not the batch of 40
    probe.waiting_on = set()
    assert Pruner(engine, settings).prune_once().counts["events"] == 40


def test_a_round_cut_short_is_not_the_end_of_the_backlog(engine: Engine, monkeypatch) -> None:
    """prune_all goes on after a round that yielded, even one that deleted nothing."""
    expired(engine, 30)
    monkeypatch.setattr(retention, "STEP", 10)
    probe = Scripted(engine, waiting_on=set(range(2, 200, 2)))
    monkeypatch.setattr(retention, "sqlite_writer_lock", lambda _engine: probe)
    assert Pruner(engine, RetentionSettings()).prune_all().counts["events"] == 30
    assert count(engine) == 0


def test_writers_are_seen_waiting_across_threads_and_processes(engine: Engine) -> None:
    lock = sqlite_writer_lock(engine)
    assert lock is not None and not lock.foreground_waiting()
    with lock.background():  # retention's own turn does not count
        assert not lock.foreground_waiting()
        blocked = threading.Event()

        def write() -> None:
            blocked.set()
            with write_transaction(engine):
                pass

        waiter = threading.Thread(target=write)
        waiter.start()
        blocked.wait(5)
        time.sleep(0.05)
        assert lock.foreground_waiting()  # this process's writer, waiting for the lock
    waiter.join(5)
    assert not lock.foreground_waiting()
    path = str(engine.url.database)
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys, time; from pathlib import Path\n"
            "from gateway.store.writer_lock import writer_lock\n"
            f"with writer_lock(Path({path!r})):\n"
            "    print('held', flush=True); sys.stdin.readline()\n")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert lock.foreground_waiting()  # another process's writer, holding it
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(10)
        assert not lock.foreground_waiting()
    finally:
        holder.kill()
        holder.wait(10)


def test_the_backlog_drains_under_writers_that_never_pause(engine: Engine,
                                                          monkeypatch) -> None:
    """The floor: no quiet moment ever comes, and rounds still start (after YIELD_WAIT) and
    delete at least a step each."""
    expired(engine, 40)
    monkeypatch.setattr(retention, "STEP", 10)
    monkeypatch.setattr(retention, "YIELD_WAIT", 0.1)
    stop = threading.Event()

    def ingest() -> None:  # two writers, so one is always waiting or writing
        n = 0
        while not stop.is_set():
            n += 1
            with write_transaction(engine) as c:
                c.execute(insert(heartbeats).values(
                    id=f"{threading.get_ident()}-{n}", role="t", host="h", pid=n,
                    started_at=func.current_timestamp(), beat_at=func.current_timestamp()))
                time.sleep(0.002)

    writers = [threading.Thread(target=ingest) for _ in range(2)]
    for writer in writers:
        writer.start()
    try:
        lock = sqlite_writer_lock(engine)
        assert lock is not None
        quiet_seen = retention.wait_for_quiet(lock.foreground_waiting, None, limit=0.3)
        pruner = Pruner(engine, RetentionSettings(batch_size=40))
        started = time.monotonic()
        rounds = [pruner.prune_once() for _ in range(4)]
        took = time.monotonic() - started
    finally:
        stop.set()
        for writer in writers:
            writer.join(5)
    assert not quiet_seen, "the writers left a quiet moment: the floor was not exercised"
    assert all(r.counts.get("events", 0) >= 10 for r in rounds), rounds
    assert count(engine) < 40
    assert took >= 4 * 0.1 * 0.9  # each round waited for the floor


def test_the_wal_shrinks_back_after_a_large_transaction(engine: Engine, tmp_path: Path) -> None:
    """A bulk write (here 24 MB in one transaction) grows the WAL to its size; once the WAL
    restarts it is cut back to SQLITE_WAL_KEEP_BYTES instead of holding that disk for ever."""
    from gateway.store.db import SQLITE_WAL_KEEP_BYTES

    big = "x" * 4000
    with write_transaction(engine) as connection:
        connection.execute(insert(heartbeats), [
            {"id": f"bulk-{n}", "role": "test", "pid": n, "host": big,
             "started_at": datetime.now(UTC), "beat_at": datetime.now(UTC)}
            for n in range(6000)])
    wal = tmp_path / "gateway.db-wal"
    assert wal.stat().st_size > SQLITE_WAL_KEEP_BYTES
    Pruner(engine, RetentionSettings()).checkpoint()
    with write_transaction(engine) as connection:  # the next write restarts the WAL
        connection.execute(insert(heartbeats).values(
            id="after", role="test", pid=1, host="h", started_at=datetime.now(UTC),
            beat_at=datetime.now(UTC)))
    assert wal.stat().st_size <= SQLITE_WAL_KEEP_BYTES
