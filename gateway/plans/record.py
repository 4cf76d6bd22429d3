"""The violations record: every tracking-plan violation counted per hour, source, event and rule
(with its last message and an example messageId), so a team sees what breaks its plan and where
to look.

Bounded like the rejections record (gateway/rejections.py), and never on the request path's
critical part: ingest adds to an in-memory tally (at most MAX_PENDING distinct keys per process;
beyond that new keys are dropped and counted in the log, existing ones still add up), one
background thread per process and engine writes the tally every FLUSH_SECONDS as upserts that
add to the hour's row, then trims the table to its newest MAX_ROWS. A flood of one bad event adds
to one row's count; a flood of invented event names is capped by both bounds.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite

from gateway.messages import iso_text, parse_time
from gateway.store.db import write_transaction
from gateway.store.models import violations

log = logging.getLogger(__name__)

MAX_ROWS = 20_000  # the table keeps about this many newest (hour, source, event, rule) rows
MAX_PENDING = 2_000  # distinct keys waiting for the writer, per process
FLUSH_SECONDS = 0.5
IDLE_SECONDS = 30.0  # a writer with nothing to do this long ends (started again when needed)
MAX_LIST = 1_000  # rows per answer of `summary`


@dataclass(frozen=True)
class Seen:
    """One violation of one message, as ingest reports it."""

    received_at: datetime
    source: str
    message_type: str
    event: str | None
    rule: str
    violation_type: str
    message: str
    message_id: str | None


class _Tally:
    """The pending counts of one engine, and the thread that writes them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.pending: dict[str, dict[str, Any]] = {}
        self.dropped = 0
        self.lock = threading.Condition()
        self.busy = False
        self.stopped = False
        self.thread = threading.Thread(target=self._run, name="violations", daemon=True)
        self.thread.start()

    def add(self, seen: Sequence[Seen]) -> bool:
        with self.lock:
            if self.stopped:
                return False
            for s in seen:
                row = _row(s)
                held = self.pending.get(row["key"])
                if held is not None:
                    held["count"] += 1
                    held.update(last_seen=row["last_seen"], message=row["message"],
                                example_message_id=row["example_message_id"])
                elif len(self.pending) < MAX_PENDING:
                    self.pending[row["key"]] = row
                else:
                    self.dropped += 1
            self.lock.notify()
            return True

    def flush(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.lock:
            while (self.pending or self.busy) and not self.stopped:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.lock.notify()
                self.lock.wait(min(left, 0.05))
        return True

    def _run(self) -> None:
        while True:
            with self.lock:
                if not self.pending:
                    self.lock.wait(IDLE_SECONDS)
                if not self.pending:
                    self.stopped = True
                    self.lock.notify_all()
                    return
                rows, self.pending = list(self.pending.values()), {}
                dropped, self.dropped = self.dropped, 0
                self.busy = True
            try:
                if dropped:
                    log.warning("%d tracking-plan violations not recorded: more than %d "
                                "distinct (source, event, rule) waited at once", dropped,
                                MAX_PENDING)
                _write(self.engine, rows)
            except Exception as exc:  # the record must never take ingest down
                log.warning("cannot record tracking-plan violations (%s)", type(exc).__name__)
            finally:
                with self.lock:
                    self.busy = False
                    self.lock.notify_all()
            time.sleep(FLUSH_SECONDS)


def _write(engine: Engine, rows: list[dict[str, Any]]) -> None:
    rows.sort(key=lambda r: r["key"])  # one order for every writer: no deadlock between them
    with write_transaction(engine) as connection:
        dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(violations)
        statement = statement.on_conflict_do_update(
            index_elements=["key"],
            set_={"count": violations.c.count + statement.excluded.count,
                  "last_seen": statement.excluded.last_seen,
                  "message": statement.excluded.message,
                  "example_message_id": statement.excluded.example_message_id})
        connection.execute(statement, rows)
        oldest_kept = connection.execute(select(violations.c.id).order_by(
            violations.c.id.desc()).offset(MAX_ROWS - 1).limit(1)).scalar()
        if oldest_kept is not None:
            connection.execute(delete(violations).where(violations.c.id < oldest_kept))


def _row(s: Seen) -> dict[str, Any]:
    hour = s.received_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    source, event = _clip(s.source, 200), _clip(s.event, 200)
    rule, kind = _clip(s.rule, 300) or "#", _clip(s.message_type, 20) or "?"
    key = hashlib.sha256("\x00".join(
        (hour.isoformat(), source or "", kind, event or "\x01", rule)).encode(
        "utf-8", "surrogatepass")).hexdigest()
    return {"key": key, "hour": hour, "source": source, "message_type": kind, "event": event,
            "rule": rule, "violation_type": _clip(s.violation_type, 40),
            "message": _clip(s.message, 300) or "", "example_message_id": _clip(
                s.message_id, 255), "count": 1, "last_seen": s.received_at}


_TALLIES: dict[int, _Tally] = {}
_TALLIES_LOCK = threading.Lock()


def record(engine: Engine, seen: Sequence[Seen]) -> None:
    """Count violations; returns at once and never raises."""
    if not seen:
        return
    try:
        tally = _TALLIES.get(id(engine))
        if tally is not None and tally.engine is engine and tally.add(seen):
            return
        with _TALLIES_LOCK:
            tally = _TALLIES.get(id(engine))
            if tally is None or tally.engine is not engine or not tally.add(seen):
                tally = _TALLIES[id(engine)] = _Tally(engine)
                tally.add(seen)
    except Exception:  # pragma: no cover - e.g. no thread can be started
        log.exception("cannot queue tracking-plan violations")


def flush(engine: Engine, timeout: float = 5.0) -> bool:
    """Write what this process counted for `engine` (the admin API and tests read after it)."""
    tally = _TALLIES.get(id(engine))
    if tally is None or tally.engine is not engine:
        return True
    return tally.flush(timeout)


def flush_all(timeout: float = 5.0) -> bool:
    return all([tally.flush(timeout) for tally in list(_TALLIES.values())])


def summary(connection: Connection, since: datetime, source: str | None = None,
            event: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """Counts per source, event and rule since `since` (whole hours: the hour holding `since`
    counts), the most frequent first."""
    hour = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    c = violations.c
    query = (select(c.source, c.message_type, c.event, c.rule,
                    func.max(c.violation_type).label("violation_type"),
                    func.sum(c.count).label("count"), func.min(c.hour).label("first_hour"),
                    func.max(c.last_seen).label("last_seen"),
                    func.max(c.message).label("message"),
                    func.max(c.example_message_id).label("example_message_id"))
             .where(c.hour >= hour)
             .group_by(c.source, c.message_type, c.event, c.rule)
             .order_by(func.sum(c.count).desc(), c.source, c.event, c.rule)
             .limit(max(1, min(limit, MAX_LIST))))
    if source:
        query = query.where(c.source == source)
    if event:
        query = query.where(c.event == _clip(event, 200))
    return [{"source": r.source, "type": r.message_type, "event": r.event, "rule": r.rule,
             "violation_type": r.violation_type, "count": int(r.count),
             "message": r.message, "example_message_id": r.example_message_id,
             "first_hour": iso_text(_utc(r.first_hour)),
             "last_seen": iso_text(_utc(r.last_seen))} for r in connection.execute(query)]


def default_since(hours: int = 24) -> datetime:
    return datetime.now(UTC) - timedelta(hours=hours)


def _utc(value: Any) -> Any:
    """Aggregates skip the column type: SQLite hands back naive text or datetimes."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def _clip(value: str | None, size: int) -> str | None:
    if value is None:
        return None
    value = str(value).replace("\x00", "")
    return value if len(value) <= size else value[:size - 1] + "…"


FILTERS = ("source", "event", "since", "hours", "limit")


class FilterError(ValueError):
    """A filter of the violations listing is wrong (the admin API answers 400)."""


def from_filters(connection: Connection, given: dict[str, str]) -> dict[str, Any]:
    """The admin API's and the CLI's listing: `since` (ISO-8601) or `hours` (default 24),
    `source`, `event`, `limit`."""
    unknown = sorted(set(given) - set(FILTERS))
    if unknown:
        raise FilterError(f"unknown filter {unknown[0]!r} ({', '.join(FILTERS)})")
    if given.get("since"):
        since = parse_time(given["since"])
        if since is None:
            raise FilterError("since: not an ISO-8601 time")
    else:
        hours = _whole(given.get("hours") or "24", "hours", 1, 24 * 366)
        since = default_since(hours)
    limit = _whole(given.get("limit") or "200", "limit", 1, MAX_LIST)
    rows = summary(connection, since, given.get("source") or None, given.get("event") or None,
                   limit)
    return {"since": iso_text(since), "violations": rows,
            "total": sum(r["count"] for r in rows)}


def _whole(text: str, name: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise FilterError(f"{name}: a whole number from {low} to {high}")
    return value
