"""One writer at a time per SQLite file, across the threads of a process and across processes:
`write_transaction` (db.py) holds it around every writing transaction on SQLite. Background
work (retention) takes it unannounced and asks `foreground_waiting()` so it can yield."""

from __future__ import annotations

import fcntl
import os
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

# Linux open-file-description record locks: independent of flock, visible across processes,
# and testable (F_OFD_GETLK) without being taken, so a probe never makes a writer wait
_OFD = hasattr(fcntl, "F_OFD_GETLK")
_FLOCK = "hhqqi4x"  # struct flock on Linux: type, whence, start, len, pid (+ padding)


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
        self._writers = 0  # foreground writers of this process waiting for or holding it
        self._writers_guard = threading.Lock()
        self._fd_guard = threading.Lock()

    def after_fork(self) -> None:
        """A forked child starts unlocked, with a file of its own (flock is per open file)."""
        self._lock = threading.RLock()
        self._depth = 0
        self._fd = None
        self._writers = 0
        self._writers_guard = threading.Lock()
        self._fd_guard = threading.Lock()

    def __enter__(self) -> WriterLock:
        """A foreground writer (ingest, deliveries, admin): announced while it waits and
        writes, so background work sees it and steps aside."""
        self._announce()
        try:
            self._acquire()
        except BaseException:
            self._withdraw()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._release()
        finally:
            self._withdraw()

    @contextmanager
    def background(self) -> Iterator[WriterLock]:
        """Held like `with lock:` but unannounced: background work never makes another
        background writer yield, and polls `foreground_waiting()` to yield itself."""
        self._acquire()
        try:
            yield self
        finally:
            self._release()

    def foreground_waiting(self) -> bool:
        """Is a foreground writer, in this process or another, waiting for the lock or
        holding it? A test, not a lock: it never holds anyone up."""
        if self._writers:
            return True
        if self.path is None or not _OFD:
            return False
        probe = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 1, 0)
        found = fcntl.fcntl(self._file(), fcntl.F_OFD_GETLK, probe)
        return struct.unpack(_FLOCK, found)[0] != fcntl.F_UNLCK

    def _acquire(self) -> None:
        self._lock.acquire()
        if self._depth == 0 and self.path is not None:
            try:
                fcntl.flock(self._file(), fcntl.LOCK_EX)
            except BaseException:
                self._lock.release()
                raise
        self._depth += 1

    def _release(self) -> None:
        self._depth -= 1
        try:
            if self._depth == 0 and self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._lock.release()

    def _announce(self) -> None:
        """The first foreground writer of the process takes a shared record lock on byte 0 of
        the lock file (never contended: nobody takes it exclusively), the last one drops it."""
        with self._writers_guard:
            if self._writers == 0:
                self._mark(fcntl.F_RDLCK if _OFD else None)
            self._writers += 1

    def _withdraw(self) -> None:
        with self._writers_guard:
            self._writers -= 1
            if self._writers == 0:
                self._mark(fcntl.F_UNLCK if _OFD else None)

    def _mark(self, kind: int | None) -> None:
        if kind is None or self.path is None:
            return
        fd = self._file()
        with suppress(BlockingIOError):  # flock emulated by record locks (NFS): unannounced
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack(_FLOCK, kind, os.SEEK_SET, 0, 1, 0))

    def _file(self) -> int:
        """The process's one open file of the lock (opened by whichever thread needs it first:
        two would make two flock holders)."""
        with self._fd_guard:
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
