"""Regulations as a service: apply one, read them, close finished deletions, wait for one.

See the package docstring for the whole picture."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update

from gateway import queries
from gateway.config import Config
from gateway.delivery.client import redact
from gateway.messages import iso_text
from gateway.regulations import deletion, suppression
from gateway.regulations.keys import (
    TYPES,
    InvalidRequest,
    Subject,
    links,
    make_subject,
    parse_request,
)
from gateway.regulations.keys import resolve as resolve_profile
from gateway.store import outbox
from gateway.store.db import write_transaction
from gateway.store.models import deliveries, delivery_attempts, regulation_subjects, regulations

__all__ = [
    "TYPES",
    "InvalidRequest",
    "Subject",
    "create",
    "finish_due",
    "finisher",
    "get",
    "list_page",
    "make_subject",
    "parse_request",
    "preview",
    "wait",
]

log = logging.getLogger(__name__)

RUNNING, FINISHED, FAILED = "running", "finished", "failed"
SUPPRESSING = ("suppress", "suppress_with_delete")
DELETING = ("delete", "suppress_with_delete")
LIST_FILTERS = ("type", "status")
# a deletion delivery's state → the regulation's word for it at that destination
DESTINATION_STATUS = {outbox.PENDING: RUNNING, outbox.DELIVERING: RUNNING,
                      outbox.RETRYING: RUNNING, outbox.DELIVERED: FINISHED,
                      outbox.SKIPPED: "unsupported", outbox.DEAD: FAILED}
FINISH_BATCH = 50  # regulations closed per tick


def create(engine: Engine, config: Config, kind: str, subject: Subject) -> dict[str, Any]:
    """Apply a regulation; returns it as the API shows it (status `running` while deletion
    requests are on their way to destinations)."""
    if kind not in TYPES:
        raise InvalidRequest(f"type: one of {', '.join(TYPES)}")
    now = datetime.now(UTC)
    with write_transaction(engine) as connection:
        if kind != "unsuppress":  # wait for writes past their suppression check (PostgreSQL)
            suppression.hold_back_ingest(connection)
        profile = resolve_profile(connection, subject, lock=True, config=config)
        regulation_id = connection.execute(insert(regulations).values(
            type=kind, status=RUNNING, subject_kind=subject.kind, counts={}, created_at=now)
            .returning(regulations.c.id)).scalar_one()
        counts: dict[str, int] = {"profile_keys": len(profile.keys)}
        if kind in SUPPRESSING:
            counts["suppressed_keys"] = suppression.suppress(connection, regulation_id,
                                                             profile.keys)
        if kind == "unsuppress":
            counts["unsuppressed_keys"] = suppression.unsuppress(connection, profile.keys)
        queued: list[str] = []
        if kind in DELETING:
            in_flight = deletion.in_flight_until(connection, profile)
            counts.update(deletion.delete_profile(connection, profile))
            queued = deletion.queue_requests(connection, config, regulation_id, profile,
                                             in_flight)
        done = not queued
        connection.execute(update(regulations).where(regulations.c.id == regulation_id).values(
            counts=counts, status=FINISHED if done else RUNNING,
            finished_at=now if done else None, destinations={} if done else None))
    log.info("regulation %d: %s (%s), %s", regulation_id, kind, subject.kind,
             ", ".join(f"{k} {v}" for k, v in counts.items()))
    found = get(engine, regulation_id)
    assert found is not None
    return found


def preview(engine: Engine, config: Config, kind: str, subject: Subject) -> dict[str, Any]:
    """What `create` would do, without doing it (`dry_run`): the profile the subject resolves
    to with every key it will cover — a key linked by anyone who had the write key widens it —
    the rows that would be erased or keys suppressed, and the destinations that would be asked
    to delete. Reads only: no regulation row, nothing suppressed or deleted."""
    if kind not in TYPES:
        raise InvalidRequest(f"type: one of {', '.join(TYPES)}")
    with engine.connect() as connection:
        profile = resolve_profile(connection, subject, config=config)
        counts: dict[str, int] = {"profile_keys": len(profile.keys)}
        if kind in SUPPRESSING:
            counts["suppressed_keys"] = suppression.would_suppress(connection, profile.keys)
        if kind == "unsuppress":
            counts["unsuppressed_keys"] = suppression.would_unsuppress(connection, profile.keys)
        if kind in DELETING:
            counts.update(deletion.count_profile(connection, profile))
        linked = links(connection, profile)
    return {"dry_run": True, "type": kind,
            "subject": {_KIND_NAMES[subject.kind]: subject.value},
            "profile": {"id": profile.id, "keys": {
                "user_ids": profile.values("userId"),
                "anonymous_ids": profile.values("anonymousId"),
                "emails": profile.values("email")},
                "ids": list(profile.ids), "links": linked},
            "counts": counts,
            "destinations": deletion.destinations_asked(config) if kind in DELETING else {}}


def get(engine: Engine, regulation_id: int) -> dict[str, Any] | None:
    with engine.connect() as connection:
        row = connection.execute(select(regulations).where(
            regulations.c.id == regulation_id)).first()
        if row is None:
            return None
        return _render(connection, row)


def list_page(connection: Connection, filters: Mapping[str, str], limit: Any = None,
              cursor: str | None = None) -> queries.Page:
    unknown = sorted(set(filters) - set(LIST_FILTERS))
    if unknown:
        raise queries.QueryError(f"unknown filter {unknown[0]!r} (allowed: type, status)")
    query = select(regulations)
    if filters.get("type"):
        if filters["type"] not in TYPES:
            raise queries.QueryError(f"type: one of {', '.join(TYPES)}")
        query = query.where(regulations.c.type == filters["type"])
    if filters.get("status"):
        if filters["status"] not in (RUNNING, FINISHED, FAILED):
            raise queries.QueryError("status: one of running, finished, failed")
        query = query.where(regulations.c.status == filters["status"])
    return queries.paginate(connection, query, regulations.c.id, limit, cursor,
                            lambda row: _render(connection, row))


def finish_due(engine: Engine) -> int:
    """Close running regulations whose every deletion delivery has ended: keep the result per
    destination, erase the keys (the subject row, the deliveries' user key, any key echoed in
    their errors or attempt excerpts). Returns how many were closed."""
    with engine.connect() as connection:
        running = connection.execute(select(regulations.c.id).where(
            regulations.c.status == RUNNING).order_by(regulations.c.id)
            .limit(FINISH_BATCH)).scalars().all()
        if not running:
            return 0
        busy = set(connection.execute(select(deliveries.c.regulation_id).where(
            deliveries.c.regulation_id.in_(running),
            deliveries.c.state.in_(outbox.UNFINISHED))).scalars())
    closed = 0
    for regulation_id in (r for r in running if r not in busy):
        with write_transaction(engine) as connection:
            closed += _finish(connection, regulation_id)
    return closed


def _finish(connection: Connection, regulation_id: int) -> int:
    rows = connection.execute(select(deliveries).where(
        deliveries.c.regulation_id == regulation_id).with_for_update()).all()
    if any(row.state in outbox.UNFINISHED for row in rows):
        return 0  # a retry or a replay moved one meanwhile
    subject = connection.execute(select(regulation_subjects.c.payload).where(
        regulation_subjects.c.regulation_id == regulation_id)).scalar_one_or_none() or {}
    secrets = sorted({v for values in subject.values() for v in values}, key=len, reverse=True)
    results = {row.destination: _destination(row, secrets) for row in rows}
    now = datetime.now(UTC)
    for row in rows:
        outbox.annotate(connection, row.id, user_key=f"regulation:{regulation_id}",
                        last_error=_redact(row.last_error, secrets), updated_at=now)
        for attempt in connection.execute(select(delivery_attempts.c.id,
                                                 delivery_attempts.c.excerpt).where(
                delivery_attempts.c.delivery_id == row.id)).all():
            cleaned = _redact(attempt.excerpt, secrets)
            if cleaned != attempt.excerpt:
                connection.execute(update(delivery_attempts).where(
                    delivery_attempts.c.id == attempt.id).values(excerpt=cleaned))
    connection.execute(regulation_subjects.delete().where(
        regulation_subjects.c.regulation_id == regulation_id))
    failed = any(r["status"] == FAILED for r in results.values())
    connection.execute(update(regulations).where(regulations.c.id == regulation_id).values(
        status=FAILED if failed else FINISHED, destinations=results, finished_at=now))
    return 1


def finisher(engine: Engine, every: float = 1.0) -> Callable[[], None]:
    """A worker tick (`Worker.on_tick`) that runs `finish_due` at most every `every` seconds
    and never lets a database problem stop the worker."""
    due = [0.0]

    def tick() -> None:
        if time.monotonic() < due[0]:
            return
        due[0] = time.monotonic() + every
        try:
            finish_due(engine)
        except Exception as exc:  # the worker's own outage handling reports the database
            log.debug("closing regulations failed: %s", exc)
    return tick


def wait(engine: Engine, regulation_id: int, timeout: float,
         poll: float = 0.5) -> dict[str, Any] | None:
    """Poll until the regulation is no longer running (or `timeout` seconds passed)."""
    deadline = time.monotonic() + timeout
    while True:
        finish_due(engine)  # at once, not at the worker's next tick
        found = get(engine, regulation_id)
        if found is None or found["status"] != RUNNING or time.monotonic() >= deadline:
            return found
        time.sleep(poll)


def _render(connection: Connection, row: Any) -> dict[str, Any]:
    destinations = row.destinations
    status = row.status
    if status == RUNNING:  # live: from the deletion deliveries
        live = connection.execute(select(deliveries).where(
            deliveries.c.regulation_id == row.id).order_by(deliveries.c.id)).all()
        destinations = {d.destination: _destination(d, []) for d in live}
    return {"id": row.id, "type": row.type, "status": status, "subject_kind": _KIND_NAMES.get(
                row.subject_kind, row.subject_kind),
            "created_at": iso_text(row.created_at), "finished_at": iso_text(row.finished_at),
            "counts": row.counts, "destinations": destinations or {}}


def _destination(row: Any, secrets: list[str]) -> dict[str, Any]:
    return {"status": DESTINATION_STATUS.get(row.state, row.state), "delivery_id": row.id,
            "attempts": row.attempts, "last_status": row.last_status,
            "last_error": _redact(row.last_error, secrets)}


def _redact(text: str | None, secrets: list[str]) -> str | None:
    """The subject's keys hidden in every form (gateway/delivery/client.py's one `redact`);
    keys of any length, since they are what the regulation erases."""
    return redact(text, secrets, shortest=1) if text else text


_KIND_NAMES = {"userId": "user_id", "anonymousId": "anonymous_id", "email": "email"}

