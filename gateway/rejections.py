"""A bounded record of what the tracking API refused (and which resent messageIds it dropped as
duplicates), so `gateway explain` can answer "why didn't it arrive?" for a message that never
became an event.

Written off the request path: the tracking endpoints only append to an in-memory queue (bounded;
the oldest entries go first when it is full) and one background thread per process writes the
entries in batches, then trims the table to its newest `MAX_ROWS`. Nothing here may fail or slow
an accepted request: every error is logged once and swallowed. Read back with `for_message` and
`recent`.

Refusals before a write key was known (a bad or missing key: `source` is None) are bounded on
their own, in the queue and in the table (`MAX_UNAUTHENTICATED_*`): anyone can send those, and a
flood of them must not push out the refusals of real sources that `explain` is asked about.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, select

from gateway.messages import iso_text
from gateway.store.db import write_transaction
from gateway.store.models import events, rejections

log = logging.getLogger(__name__)

MAX_ROWS = 10_000  # the table keeps about this many newest rows of known sources
MAX_QUEUED = 2_000  # per process, waiting for the writer; beyond that the oldest are dropped
MAX_UNAUTHENTICATED_ROWS = 1_000  # …and this many refusals of requests with no valid write key
MAX_UNAUTHENTICATED_QUEUED = 200  # per process, beside MAX_QUEUED
MAX_BATCH = 500  # rows per write
FLUSH_SECONDS = 0.2  # the writer's pace: a rejection is queryable within about this
IDLE_SECONDS = 30.0  # a writer with nothing to do this long ends (started again when needed)
MAX_DETAIL = 500
MAX_LOOKUP = 500  # messageIds per duplicate lookup statement


@dataclass(frozen=True)
class Entry:
    received_at: datetime
    source: str | None
    message_id: str | None
    message_type: str | None
    reason: str
    detail: str
    duplicate_of: int | None = None


@dataclass(frozen=True)
class _Duplicates:
    """A request some of whose messageIds were already stored: resolved by the writer."""

    source: str
    message_ids: tuple[str, ...]
    received_at: datetime


class _Recorder:
    """One per engine and process: the queue and the thread that drains it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.queue: deque[Entry | _Duplicates] = deque(maxlen=MAX_QUEUED)
        # no valid write key: anyone can fill this one, so it has its own bound
        self.unauthenticated: deque[Entry] = deque(maxlen=MAX_UNAUTHENTICATED_QUEUED)
        self.wake = threading.Condition()
        self.busy = False
        self.failing = False
        self.stopped = False
        self.thread = threading.Thread(target=self._run, name="rejections", daemon=True)
        self.thread.start()

    def add(self, items: Iterable[Entry | _Duplicates]) -> bool:
        """False when this writer has ended (idle): the caller starts a new one."""
        with self.wake:
            if self.stopped:
                return False
            for item in items:
                if isinstance(item, Entry) and item.source is None:
                    self.unauthenticated.append(item)
                else:
                    self.queue.append(item)
            self.wake.notify()
            return True

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued so far is written (tests, explain in-process)."""
        deadline = time.monotonic() + timeout
        with self.wake:
            while (self.queue or self.unauthenticated or self.busy) and not self.stopped:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.wake.notify()
                self.wake.wait(min(left, 0.05))
        return True

    def _run(self) -> None:
        while True:
            with self.wake:
                if not self.queue and not self.unauthenticated:
                    self.wake.wait(IDLE_SECONDS)
                if not self.queue and not self.unauthenticated:
                    self.stopped = True
                    self.wake.notify_all()
                    return
                batch: list[Entry | _Duplicates] = [
                    self.queue.popleft() for _ in range(min(MAX_BATCH, len(self.queue)))]
                batch += [self.unauthenticated.popleft()
                          for _ in range(min(MAX_BATCH, len(self.unauthenticated)))]
                batch.sort(key=lambda item: item.received_at)  # rows in arrival order
                self.busy = True
            try:
                self._write(batch)
                if self.failing:
                    log.warning("rejections are recorded again")
                self.failing = False
            except Exception as exc:  # never let the trace take anything down
                if not self.failing:
                    log.warning("cannot record rejections (%s); dropping them until it works",
                                type(exc).__name__)
                self.failing = True
            finally:
                with self.wake:
                    self.busy = False
                    self.wake.notify_all()
            time.sleep(FLUSH_SECONDS)

    def _write(self, batch: list[Entry | _Duplicates]) -> None:
        rows = [_row(e) for e in batch if isinstance(e, Entry)]
        for job in (e for e in batch if isinstance(e, _Duplicates)):
            rows += _resolve_duplicates(self.engine, job)
        if not rows:
            return
        with write_transaction(self.engine) as connection:
            connection.execute(insert(rejections), rows)
            if any(row["source"] is not None for row in rows):
                _trim(connection, rejections.c.source.is_not(None), MAX_ROWS)
            if any(row["source"] is None for row in rows):
                _trim(connection, rejections.c.source.is_(None), MAX_UNAUTHENTICATED_ROWS)


def _trim(connection: Connection, kind: Any, keep: int) -> None:
    """Keep the newest `keep` rows of one kind (known source, or none)."""
    oldest_kept = connection.execute(select(rejections.c.id).where(kind).order_by(
        rejections.c.id.desc()).offset(keep - 1).limit(1)).scalar()
    if oldest_kept is not None:
        connection.execute(delete(rejections).where(kind, rejections.c.id < oldest_kept))


_RECORDERS: dict[int, _Recorder] = {}
_RECORDERS_LOCK = threading.Lock()


def _queue(engine: Engine, items: list[Entry | _Duplicates]) -> None:
    """Hand items to this engine's writer, starting one when there is none (or it ended)."""
    recorder = _RECORDERS.get(id(engine))
    if recorder is not None and recorder.engine is engine and recorder.add(items):
        return
    with _RECORDERS_LOCK:
        recorder = _RECORDERS.get(id(engine))
        if recorder is None or recorder.engine is not engine or not recorder.add(items):
            recorder = _RECORDERS[id(engine)] = _Recorder(engine)
            recorder.add(items)


def record(engine: Engine, entries: Sequence[Entry]) -> None:
    """Queue refused messages (or a refused request); returns at once and never raises."""
    try:
        if entries:
            _queue(engine, list(entries))
    except Exception:  # pragma: no cover - e.g. no thread can be started
        log.exception("cannot queue rejections")


def record_duplicates(engine: Engine, source: str, message_ids: Sequence[str],
                      received_at: datetime) -> None:
    """Queue the lookup of which of these messageIds were resends of stored events."""
    try:
        if message_ids:
            _queue(engine, [_Duplicates(source, tuple(message_ids), received_at)])
    except Exception:  # pragma: no cover
        log.exception("cannot queue duplicate lookups")


def flush(engine: Engine, timeout: float = 5.0) -> bool:
    """Write what this process has queued for `engine` (nothing to do if it queued nothing)."""
    recorder = _RECORDERS.get(id(engine))
    if recorder is None or recorder.engine is not engine:
        return True
    return recorder.flush(timeout)


def flush_all(timeout: float = 5.0) -> bool:
    """Flush every writer of this process (tests: before a database is dropped under them)."""
    return all([recorder.flush(timeout) for recorder in list(_RECORDERS.values())])


def for_message(connection: Connection, message_id: str, source: str | None = None,
                limit: int = 50) -> list[dict[str, Any]]:
    """The newest rejections of one messageId (any source unless one is given)."""
    query = select(rejections).where(rejections.c.message_id == message_id)
    if source:
        query = query.where(rejections.c.source == source)
    rows = connection.execute(query.order_by(rejections.c.id.desc()).limit(limit))
    return [as_json(r) for r in rows]


def recent(connection: Connection, limit: int = 50, before: int | None = None,
           source: str | None = None) -> list[dict[str, Any]]:
    """The newest rejections first, keyset-paged by id (`before` = the last id seen)."""
    query = select(rejections)
    if before:
        query = query.where(rejections.c.id < before)
    if source:
        query = query.where(rejections.c.source == source)
    rows = connection.execute(query.order_by(rejections.c.id.desc()).limit(limit))
    return [as_json(r) for r in rows]


def as_json(row: Any) -> dict[str, Any]:
    return {"id": row.id, "received_at": iso_text(row.received_at), "source": row.source,
            "message_id": row.message_id, "type": row.message_type, "reason": row.reason,
            "detail": row.detail, "duplicate_of": row.duplicate_of}


def _row(entry: Entry) -> dict[str, Any]:
    return {"received_at": entry.received_at, "source": _clip(entry.source, 200),
            "message_id": _clip(entry.message_id, 255), "message_type": _clip(
                entry.message_type, 20), "reason": _clip(entry.reason, 100) or "unknown",
            "detail": _clip(entry.detail, MAX_DETAIL) or "", "duplicate_of": entry.duplicate_of}


def _resolve_duplicates(engine: Engine, job: _Duplicates) -> list[dict[str, Any]]:
    """The request's messageIds whose stored event came from another (earlier) request."""
    rows: list[dict[str, Any]] = []
    ids = [m for m in dict.fromkeys(job.message_ids) if m]
    with engine.connect() as connection:
        for start in range(0, len(ids), MAX_LOOKUP):
            chunk = ids[start:start + MAX_LOOKUP]
            for found in connection.execute(
                    select(events.c.id, events.c.message_id, events.c.type, events.c.received_at)
                    .where(events.c.source == job.source, events.c.message_id.in_(chunk),
                           events.c.received_at != job.received_at)):
                rows.append(_row(Entry(
                    job.received_at, job.source, found.message_id, found.type, "duplicate",
                    f"a resend of event {found.id} (received {iso_text(found.received_at)}): "
                    "accepted and dropped, the original is not sent again", found.id)))
    return rows


def _clip(value: str | None, size: int) -> str | None:
    if value is None:
        return None
    value = value.replace("\x00", "")
    return value if len(value) <= size else value[:size - 1] + "…"

