"""Recording: each finished attempt's verdict becomes an attempt row and the next state, in one
transaction for everything that finished meanwhile, only for deliveries whose lease we still
hold (an expired lease means another worker took over). Statements are built once; a result
costs a dict, not a schema.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, bindparam, insert, select

from adapters.status import is_success
from gateway import metrics
from gateway.delivery.client import excerpt, redact, redaction_window
from gateway.delivery.retry import RetryPolicy
from gateway.delivery.send import Finished
from gateway.delivery.verdict import Verdict, classify
from gateway.store import outbox
from gateway.store.db import write_transaction
from gateway.store.models import deliveries, delivery_attempts
from gateway.store.prepared import Prepared
from gateway.store.storage_state import StorageState, is_outage, short_reason

log = logging.getLogger("gateway.delivery.worker")

_ATTEMPT_COLUMNS = ("delivery_id", "number", "started_at", "duration_ms", "status",
                    "error_class", "excerpt")
_INSERT_ATTEMPTS = Prepared(  # inline: no RETURNING id that executemany would discard
    insert(delivery_attempts).values({c: bindparam(c) for c in _ATTEMPT_COLUMNS}).inline())
_HELD = (select(deliveries.c.id)
         .where(deliveries.c.id.in_(bindparam("ids", expanding=True)),
                deliveries.c.state == outbox.DELIVERING,
                deliveries.c.lease_expires_at == bindparam("lease"))
         .with_for_update())


class Recorder:
    def __init__(self, engine: Engine, policy: RetryPolicy,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        """`now`: when results are recorded, the base of each retry's due time."""
        self.now = now
        self.engine = engine
        self.policy = policy
        self.state = StorageState("recording delivery results", log, settle=0)
        self._histograms: dict[str, Any] = {}

    def record_safely(self, finished: Sequence[Finished]) -> list[Finished]:
        """Record all results in one transaction; if that fails, each in its own, so one
        result the database refuses never takes the others down with it (it is recorded as
        a plain retry instead). Returns what could not be recorded because the database is
        out."""
        if not finished:
            return []
        try:
            self.record(finished)
        except Exception as exc:
            if is_outage(exc):
                self.state.failed(exc, self.engine)
                return list(finished)
        else:
            self.state.succeeded()
            return []
        refused: list[tuple[Finished, Exception]] = []
        for index, one in enumerate(finished):
            try:
                self.record([one])
            except Exception as exc:
                if is_outage(exc):
                    self.state.failed(exc, self.engine)
                    return [f for f, _ in refused] + list(finished[index:])
                refused.append((one, exc))
        for one, exc in refused:
            self.not_recorded(one, exc)
        return []

    def record(self, finished: Sequence[Finished]) -> None:
        """Write every attempt and next state in one transaction (lease-guarded)."""
        now = self.now()
        by_lease: dict[datetime, list[int]] = {}  # a round's claims share one or two leases
        for f in finished:
            by_lease.setdefault(f.claimed.lease, []).append(f.claimed.id)
        with write_transaction(self.engine) as connection:
            held: set[int] = set()  # compared in SQL: no datetime is parsed per row
            for lease, ids in by_lease.items():
                held.update(connection.execute(_HELD, {"ids": ids, "lease": lease}).scalars())
            mine: list[tuple[Finished, Verdict]] = []
            for f in finished:
                if f.claimed.id not in held:
                    log.warning("delivery %s: lease lost; its result is dropped", f.claimed.id)
                    continue
                f = _redacted(f)
                first = f.claimed.first_attempt_at or f.started
                mine.append((f, classify(f.outcome, attempt=f.claimed.attempts + 1,
                                         first_attempt_at=first, now=now, policy=self.policy)))
            # one executemany per (next state, counted): each has the same columns
            by_target: dict[tuple[str, bool], list[dict[str, Any]]] = {}
            attempts: list[dict[str, Any]] = []
            for f, verdict in mine:
                by_target.setdefault((verdict.state, verdict.counts), []).append(
                    self._row(f, verdict, now))
                if verdict.counts:
                    attempts.append(self._attempt(f))
            memo: dict[Any, Any] = {}  # each instant converted once for both statements
            for (target, _), rows in by_target.items():
                outbox.transition_each(connection, outbox.DELIVERING, target, rows, memo)
            _INSERT_ATTEMPTS.execute_many(connection, attempts, memo)
        counted: dict[tuple[str, str], int] = {}
        for f, verdict in mine:
            if verdict.counts:
                key = (f.claimed.destination, verdict.state)
                counted[key] = counted.get(key, 0) + 1
                self._seconds(f.claimed.destination).observe(f.outcome.duration_ms / 1000)
        for (destination, state), count in counted.items():  # one labels() per outcome
            metrics.DELIVERIES.labels(destination, state).inc(count)

    def _seconds(self, destination: str) -> Any:
        """The destination's attempt-time histogram, looked up once."""
        child = self._histograms.get(destination)
        if child is None:
            child = self._histograms[destination] = metrics.ATTEMPT_SECONDS.labels(destination)
        return child

    def not_recorded(self, finished: Finished, exc: Exception) -> None:
        """A result whose row the database refuses (or that cannot be built): the delivery
        goes back to `retrying` with the reason, so it is not stuck until its lease expires."""
        reason = short_reason(exc)
        log.error("delivery %s: its result could not be recorded (%s); it will be retried",
                  finished.claimed.id, reason)
        now = self.now()
        claimed = finished.claimed
        delay = self.policy.delay(claimed.attempts + 1)
        with contextlib.suppress(Exception), write_transaction(self.engine) as connection:
            moved = outbox.transition(
                connection, outbox.DELIVERING, outbox.RETRYING, [claimed.id], lease=claimed.lease,
                attempts=claimed.attempts + 1,
                first_attempt_at=claimed.first_attempt_at or finished.started,
                next_attempt_at=now + timedelta(seconds=delay), lease_expires_at=None,
                last_status=None, last_error=f"NotRecorded: {reason}"[:1000], updated_at=now)
            if moved:
                _INSERT_ATTEMPTS.execute_many(connection, [{
                    "delivery_id": claimed.id, "number": claimed.attempts + 1,
                    "started_at": finished.started, "duration_ms": 0, "status": None,
                    "error_class": "NotRecorded", "excerpt": reason[:1000]}])

    def _row(self, f: Finished, verdict: Verdict, now: datetime) -> dict[str, Any]:
        """The delivery row's new values (guarded by the lease we hold)."""
        row: dict[str, Any] = {"b_id": f.claimed.id, "b_lease": f.claimed.lease,
                               "b_next_attempt_at": verdict.at, "b_lease_expires_at": None,
                               "b_updated_at": now}
        if verdict.counts:
            secrets = f.target.secrets if f.target else ()
            row["b_attempts"] = f.claimed.attempts + 1
            row["b_first_attempt_at"] = f.claimed.first_attempt_at or f.started
            row["b_last_status"] = f.outcome.status
            row["b_last_error"] = None if verdict.reason is None else redact(verdict.reason,
                                                                               secrets)
        return row

    @staticmethod
    def _attempt(f: Finished) -> dict[str, Any]:
        secrets = f.target.secrets if f.target else ()
        return {"delivery_id": f.claimed.id, "number": f.claimed.attempts + 1,
                "started_at": f.started, "duration_ms": f.outcome.duration_ms,
                "status": f.outcome.status,
                "error_class": None if _succeeded(f) else f.outcome.label,
                "excerpt": excerpt(f.outcome.text, secrets)}


def _redacted(f: Finished) -> Finished:
    """The outcome with its destination's secrets hidden in every form, before the reason and
    the excerpt are cut from it (a cut must not leave half a secret to show)."""
    secrets = f.target.secrets if f.target else ()
    outcome = f.outcome
    if not secrets or not (outcome.text or outcome.rejected):
        return f
    return dataclasses.replace(f, outcome=dataclasses.replace(
        outcome, text=redact(redaction_window(outcome.text), secrets),
        rejected=None if outcome.rejected is None else redact(
            redaction_window(outcome.rejected), secrets)))


def _succeeded(f: Finished) -> bool:
    o = f.outcome
    if o.accepted:
        return True
    return (is_success(o.status) and not o.error_class and o.error is None
            and o.rejected is None)
