"""Storage outages, told once: one log line when writes start failing, one when they work again.

A database outage makes every request fail the same way; a traceback per request buries the one
fact an operator needs (15 MB of log for a 20-second outage, measured). This per-process state
logs the first failure with its cause, counts the rest, and logs the recovery with the count.
It also drops the engine's pooled connections on a failure, so connections opened while the
database was unusable (a SQLite file opened read-only, a PostgreSQL server that restarted) are
not reused once it is back.
"""

from __future__ import annotations

import errno
import logging
import threading
import time

from sqlalchemy import Engine
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)

from gateway import metrics

log = logging.getLogger("gateway.storage")
RESET_POOL_EVERY = 1.0  # seconds: at most one pool reset per second during an outage
SETTLE = 2.0  # seconds without a failure before storage is declared back


# What a file system says when the database's files cannot be written: read-only (remounted so
# after an error, or files whose mode forbids it), full, or failing. Raised by the files the
# gateway opens beside SQLite's own (`<db>-writer`), they are the same outage SQLite reports as
# "attempt to write a readonly database".
STORAGE_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT,
                            errno.EIO})


def is_storage_error(exc: BaseException) -> bool:
    """The event store cannot take writes now (a retryable 503, not a bug's 500)."""
    return isinstance(exc, SQLAlchemyError) or (
        isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS)


def is_outage(exc: BaseException) -> bool:
    """The database itself failed (unreachable, disk full, read-only), as opposed to refusing
    one row's values: every write would fail alone too. Ingest fails a whole group commit at
    once on it; the worker stops recording and holds its results until storage is back."""
    return isinstance(exc, OperationalError | InterfaceError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated) or (
        isinstance(exc, OSError) and is_storage_error(exc))  # the files beside SQLite's


def refuses_values(exc: BaseException) -> bool:
    """The database refused one transaction's values (a unique key or a value out of range):
    a bug or a conflict that outlived its retries, not an outage. Marking storage down for it
    would let one request, repeated with the public write key, fail every node's /health."""
    return isinstance(exc, IntegrityError | DataError)


class RefusedWrites:
    """Requests whose rows the database refused, logged at most once a minute per kind of
    refusal (the driver's error code: a bounded set, whatever the requests hold), with how
    many there were since: visible, never a flood. The driver's first line may quote a value
    from the request, so it is escaped for the log line and cut short."""

    def __init__(self, every: float = 60.0) -> None:
        self.every = every
        self._lock = threading.Lock()
        self._last: dict[str, tuple[float, int]] = {}  # kind → (logged at, failures since)

    def failed(self, exc: BaseException) -> None:
        cause = getattr(exc, "orig", None)
        code = getattr(cause, "sqlstate", None) or getattr(cause, "sqlite_errorname", None)
        kind = f"{type(exc).__name__}:{code}"
        metrics.REQUESTS_NOT_STORED.labels(kind).inc()
        now = time.monotonic()
        with self._lock:
            logged, since = self._last.get(kind, (float("-inf"), 0))
            if now - logged < self.every:
                self._last[kind] = (logged, since + 1)
                return
            self._last[kind] = (now, 0)
        reason = short_reason(exc).encode("unicode_escape").decode("ascii")
        log.error("a request was not stored: %s (%d more like it since the last line; a bug: "
                  "please report it)", reason, since)


def short_reason(exc: BaseException) -> str:
    """`OperationalError: attempt to write a readonly database`, first line of the driver's
    text only (never the SQL or its parameters)."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    return f"{exc.__class__.__name__}: {text[:200]}" if text else exc.__class__.__name__


class StorageState:
    """Thread-safe: gunicorn threads of one process share it."""

    def __init__(self, what: str = "storage", logger: logging.Logger = log,
                 settle: float = SETTLE) -> None:
        self.what = what
        self.log = logger
        self.settle = settle
        self._lock = threading.Lock()
        self.down_since: float | None = None
        self.failures = 0
        self.last_reason = ""
        self._last_reset = float("-inf")
        self._last_failure = float("-inf")
        self._engine: Engine | None = None

    @property
    def healthy(self) -> bool:
        return self.down_since is None

    def failed(self, exc: BaseException, engine: Engine | None = None) -> None:
        reason = short_reason(exc)
        with self._lock:
            self.failures += 1
            self.last_reason = reason
            self._last_failure = time.monotonic()
            first = self.down_since is None
            if first:
                self.down_since = time.monotonic()
            reset = engine is not None and time.monotonic() - self._last_reset >= RESET_POOL_EVERY
            if reset:
                self._last_reset = time.monotonic()
            if engine is not None:
                self._engine = engine
        if first:
            self.log.error("%s failing: %s (further failures are counted, not logged)",
                           self.what, reason)
        if reset and engine is not None:
            engine.dispose()  # checked-out connections are dropped when they come back

    def succeeded(self) -> None:
        if self.down_since is None:  # the common case: no lock, no work
            return
        with self._lock:
            if self.down_since is None or time.monotonic() - self._last_failure < self.settle:
                return  # flapping is still the same outage: one line each way, not a pair
            seconds = time.monotonic() - self.down_since
            failures, self.failures, self.down_since = self.failures, 0, None
            engine, self._engine = self._engine, None
        self.log.warning("%s works again after %.1f s (%d failed meanwhile)", self.what,
                         seconds, failures)
        if engine is not None:  # a connection opened during the outage may be read-only for
            engine.dispose()  # good (SQLite falls back to read-only when it cannot write)
