"""One writer at a time per SQLite file, across the threads of a process and across processes:
`write_transaction` (db.py) holds it around every writing transaction on SQLite."""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path


def writer_lock(path: Path | None) -> WriterLock:
    """The process's one writer lock for a SQLite file (every engine on the file shares it, so
    a thread that nests two engines' write transactions never waits on itself)."""
    if path is None:
        return WriterLock(None)
    key = str(path.resolve())
    with _WRITER_LOCKS_GUARD:
        lock = _WRITER_LOCKS.get(key)
        if lock is None:
            lock = _WRITER_LOCKS[key] = WriterLock(path)
        return lock


class WriterLock:
    """One writer at a time per SQLite file. Threads of a process queue on a Python lock, and
    processes on an `flock` of a file beside the database (`<db>-writer`): both wake the next
    writer the moment the lock is free, where SQLite's busy handler sleeps and polls (1, 2,
    5 … 25 ms at a time) — unfair, p99 spikes, and cores idle while a writer sleeps beside a
    free lock. Re-entrant within a thread; the file is opened once per process. A process
    that dies holding it releases it (the kernel closes its files); a live one that hangs
    holds it, as it would hold SQLite's own lock."""

    def __init__(self, path: Path | None) -> None:
        self.path = None if path is None else Path(f"{path.resolve()}-writer")
        self._lock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    def after_fork(self) -> None:
        """A forked child starts unlocked, with a file of its own (flock is per open file)."""
        self._lock = threading.RLock()
        self._depth = 0
        self._fd = None

    def __enter__(self) -> WriterLock:
        self._lock.acquire()
        if self._depth == 0 and self.path is not None:
            try:
                fcntl.flock(self._file(), fcntl.LOCK_EX)
            except BaseException:
                self._lock.release()
                raise
        self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        try:
            if self._depth == 0 and self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._lock.release()

    def _file(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return self._fd


_WRITER_LOCKS: dict[str, WriterLock] = {}
_WRITER_LOCKS_GUARD = threading.Lock()


def _writer_locks_after_fork() -> None:
    global _WRITER_LOCKS_GUARD
    _WRITER_LOCKS_GUARD = threading.Lock()
    for lock in _WRITER_LOCKS.values():
        lock.after_fork()


os.register_at_fork(after_in_child=_writer_locks_after_fork)
