"""The delivery worker: claim due deliveries, send them, record the attempt, move the state.

Claiming takes, per (destination, user key), only the oldest unfinished delivery (the barrier
of DESIGN.md §2.3), marks it `delivering` with a lease, and commits; sending happens outside any
transaction; finishing writes the attempt row and the next state only if our lease still holds.
A worker killed mid-send leaves leases that expire, and the rows are claimed again.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Engine, and_, bindparam, exists, insert, literal, or_, select, true, update
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import aliased

from adapters import DESTINATION_TYPES
from adapters.base import (
    Adapter,
    AdapterError,
    BatchItem,
    BatchOutput,
    HttpRequest,
    Retryable,
    Unsupported,
)
from gateway import filters, metrics
from gateway.config import Config, Destination
from gateway.db import write_transaction
from gateway.delivery import states
from gateway.delivery.client import (
    CONNECT_TIMEOUT,
    READ_TIMEOUT,
    HttpClient,
    Sent,
    excerpt,
    redact,
    retry_after_seconds,
)
from gateway.delivery.lanes import Lane
from gateway.delivery.retry import RetryPolicy, Verdict, classify_status
from gateway.models import deliveries, delivery_attempts, events, regulation_subjects
from gateway.regulations.deletion import send_deletion
from gateway.storage_state import StorageState, short_reason

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claimed:
    id: int
    destination: str
    state: str
    attempts: int
    first_attempt_at: datetime | None
    lease: datetime
    event: Mapping[str, Any] | None  # a regulation's deletion: the subject's keys (or None)
    regulation_id: int | None = None  # set: a user deletion, not an event (gateway.regulations)


@dataclass(frozen=True)
class Finished:
    """One attempt done, waiting to be recorded."""

    claimed: Claimed
    destination: Destination | None
    started: datetime
    result: Result


@dataclass(frozen=True)
class Result:
    """How one attempt ended: the next state and what the attempt row records."""

    verdict: Verdict | None  # None: skipped
    status: int | None
    error_class: str | None
    text: str
    duration_ms: int = 0
    retry_after: float | None = None
    retry_after_text: str | None = None  # the header as sent, for the record when capped


# Sent back unsent: its lease would not have outlived the send (see Worker._lease_too_short).
RELEASED = Result(Verdict.RETRY, None, "Released", "not sent: lease too short")
OTHER = ""  # claim key for deliveries of destinations no longer configured
MIN_BACKOFF, MAX_BACKOFF = 0.25, 30.0  # seconds between claims while the database fails
SEND_BUDGET = CONNECT_TIMEOUT + READ_TIMEOUT  # the longest one request may take


def policy_from(config: Config) -> RetryPolicy:
    retry = config.retry
    return RetryPolicy(base_delay=retry.base_delay_seconds, max_delay=retry.max_delay_seconds,
                       min_attempts=retry.min_attempts, retry_window=retry.retry_window_seconds)


class Worker:
    def __init__(self, engine: Engine, config: Config, client: HttpClient | None = None,
                 tick: Callable[[], None] | None = None) -> None:
        self.engine = engine
        self.ticks: list[Callable[[], None]] = [tick] if tick else []  # once per loop turn
        self.config = config
        self.client = client or HttpClient(pool_size=max(8, config.worker.concurrency * 2))
        self.policy = policy_from(config)
        self.destinations = {d.name: d for d in config.destinations}
        self.finished: queue.Queue[tuple[Lane, int, list[Finished]]] = queue.Queue()
        settings = config.worker
        # one lane per enabled destination, and one for rows of destinations no longer
        # configured (they are finished as dead, never left pending forever)
        self.lanes = {name: Lane(name, settings.concurrency, settings.batch_size,
                                 settings.lease_seconds,
                                 DESTINATION_TYPES[d.type].batches(d.settings))
                      for name, d in self.destinations.items() if d.enabled}
        self.other_lane = Lane("other", 1, settings.batch_size, settings.lease_seconds)
        # database outages: one log line each way, and backoff instead of a busy loop
        self.claiming = StorageState("claiming deliveries", log, settle=0)
        self.recording = StorageState("recording delivery results", log, settle=0)
        self.unrecorded: list[Finished] = []  # sent, waiting for the database to come back
        self._claim_backoff = self._record_backoff = 0.0
        self._next_claim = self._next_record = 0.0

    def run(self, stop: threading.Event) -> None:
        """Deliver until `stop` is set, then finish what is in flight.

        Claiming is continuous and per destination: whenever a lane has room, more of its due
        deliveries are claimed, so a slow destination holds only its own lane. Results are
        recorded in batches, one transaction for all that finished meanwhile. Every wait is
        bounded, so `tick` runs at least once per poll interval."""
        pause = self.config.worker.poll_interval_ms / 1000
        while not stop.is_set() or self._in_flight():
            for tick in self.ticks:
                tick()
            claimed = 0 if stop.is_set() or self.unrecorded else self._claim_into_lanes()
            self.unrecorded += self._drain(wait=pause if not claimed else 0.0)
            self._record_pending(stop)

    def on_tick(self, callback: Callable[[], None]) -> None:
        """Call `callback` once per loop turn (the liveness heartbeat); turns come at least
        once per poll interval, whatever a destination does."""
        self.ticks.append(callback)

    def run_once(self) -> int:
        """Claim one round, send it, record it (tests and benchmarks step with this)."""
        claimed = self.claim(self.config.worker.batch_size)
        tasks = self._submit(claimed)
        finished: list[Finished] = []
        for task, lane, items in tasks:
            lane.collected(len(items))
            finished.extend(_outcome(task, items))
        self.unrecorded += finished
        self._record_pending(threading.Event())
        return len(claimed)

    def _in_flight(self) -> int:
        return sum(lane.in_flight for lane in self._all_lanes()) + len(self.unrecorded)

    def _record_pending(self, stop: threading.Event) -> None:
        """Record what finished; while the database is out, keep the results (they were
        sent: recording them late beats sending them again) and try again with backoff.
        Stopping gives up after one try: the leases then hand them to the next worker."""
        if not self.unrecorded or time.monotonic() < self._next_record:
            return
        left = self._record_safely(self.unrecorded)
        if left and stop.is_set() and self._record_backoff >= MAX_BACKOFF:
            log.warning("stopping with %d delivery results unrecorded; their leases will "
                        "expire and they will be sent again", len(left))
            left = []
        self.unrecorded = left
        if left:
            self._record_backoff = min(MAX_BACKOFF, max(MIN_BACKOFF, self._record_backoff * 2))
            self._next_record = time.monotonic() + self._record_backoff
        else:
            self._record_backoff = 0.0

    def _all_lanes(self) -> list[Lane]:
        return [*self.lanes.values(), self.other_lane]

    def _claim_into_lanes(self) -> int:
        """Claim for every lane with room (backing off while the database fails)."""
        if time.monotonic() < self._next_claim:
            return 0
        room = {name: lane.free() for name, lane in self.lanes.items()}
        room[OTHER] = self.other_lane.free()
        if not any(room.values()):
            return 0
        try:
            claimed = self.claim(room)
        except Exception as exc:  # a database outage must not kill the worker
            self.claiming.failed(exc, self.engine)
            self._claim_backoff = min(MAX_BACKOFF, max(MIN_BACKOFF, self._claim_backoff * 2))
            self._next_claim = time.monotonic() + self._claim_backoff
            return 0
        self._claim_backoff = 0.0
        self.claiming.succeeded()
        for task, lane, items in self._submit(claimed):
            task.add_done_callback(lambda done, lane=lane, items=items: self.finished.put(
                (lane, len(items), _outcome(done, items))))
        return len(claimed)

    def _lane_for(self, destination_name: str) -> Lane:
        return self.lanes.get(destination_name, self.other_lane)

    def _submit(self, claimed: list[Claimed]) -> list[tuple[Future, Lane, list[Claimed]]]:
        """One task per delivery, or one per destination whose adapter batches (Customer.io's
        v2 API), each on its destination's lane. A claim holds at most one delivery per
        (destination, user), so batching keeps per-user order."""
        singles: list[Claimed] = []
        batched: dict[str, list[Claimed]] = {}
        for item in claimed:
            destination = self.destinations.get(item.destination)
            # a regulation's deletion (issue 14) is never batched: the adapter sends it alone
            if item.regulation_id is None and destination is not None and destination.enabled \
                    and DESTINATION_TYPES[destination.type].batches(destination.settings):
                batched.setdefault(item.destination, []).append(item)
            else:
                singles.append(item)
        tasks = []
        for item in singles:
            lane = self._lane_for(item.destination)
            tasks.append((lane.submit(self.process, item, 1), lane, [item]))
        for name, items in batched.items():
            lane = self._lane_for(name)
            size = self.config.worker.batch_size
            for start in range(0, len(items), size):
                chunk = items[start:start + size]
                tasks.append((lane.submit(self.process_batch, chunk, len(chunk)), lane, chunk))
        return tasks

    def _drain(self, wait: float) -> list[Finished]:
        """Whatever finished, waiting up to `wait` seconds for the first result."""
        finished: list[Finished] = []
        try:
            first = self.finished.get(timeout=wait) if wait else self.finished.get_nowait()
            while True:
                lane, count, results = first
                lane.collected(count)
                finished.extend(results)
                first = self.finished.get_nowait()
        except queue.Empty:
            pass
        return finished

    def _record_safely(self, finished: list[Finished]) -> list[Finished]:
        """Record all results in one transaction; if that fails, each in its own, so one
        result the database refuses never takes the others down with it (it is recorded as
        a plain retry instead). Returns what could not be recorded because the database is
        out."""
        if not finished:
            return []
        try:
            self._record(finished)
        except Exception as exc:
            if _is_outage(exc):
                self.recording.failed(exc, self.engine)
                return list(finished)
        else:
            self.recording.succeeded()
            return []
        refused: list[tuple[Finished, Exception]] = []
        for index, one in enumerate(finished):
            try:
                self._record([one])
            except Exception as exc:
                if _is_outage(exc):
                    self.recording.failed(exc, self.engine)
                    return [f for f, _ in refused] + list(finished[index:])
                refused.append((one, exc))
        for one, exc in refused:
            self._record_not_recorded(one, exc)
        return []

    def _record_not_recorded(self, finished: Finished, exc: Exception) -> None:
        """A result whose row the database refuses (or that cannot be built): the delivery
        goes back to `retrying` with the reason, so it is not stuck until its lease expires."""
        reason = short_reason(exc)
        log.error("delivery %s: its result could not be recorded (%s); it will be retried",
                  finished.claimed.id, reason)
        now = datetime.now(UTC)
        delay = self.policy.delay(finished.claimed.attempts + 1)
        with contextlib.suppress(Exception), write_transaction(self.engine) as connection:
            connection.execute(update(deliveries).where(
                deliveries.c.id == finished.claimed.id,
                deliveries.c.state == states.DELIVERING,
                deliveries.c.lease_expires_at == finished.claimed.lease).values(
                state=states.check_transition(states.DELIVERING, states.RETRYING),
                attempts=finished.claimed.attempts + 1,
                first_attempt_at=finished.claimed.first_attempt_at or finished.started,
                next_attempt_at=now + timedelta(seconds=delay), lease_expires_at=None,
                last_status=None, last_error=f"NotRecorded: {reason}"[:1000], updated_at=now))
            connection.execute(insert(delivery_attempts).values(
                delivery_id=finished.claimed.id, number=finished.claimed.attempts + 1,
                started_at=finished.started, duration_ms=0, status=None,
                error_class="NotRecorded", excerpt=reason[:1000]))

    def claim(self, room: int | Mapping[str, int]) -> list[Claimed]:
        """Claim due deliveries, at most `room[destination]` per destination (an int: the
        same for each; the key OTHER: destinations no longer configured), in one
        transaction."""
        if isinstance(room, int):
            room = {**{name: room for name in self.lanes}, OTHER: room}
        now = datetime.now(UTC)
        lease = now + timedelta(seconds=self.config.worker.lease_seconds)
        configured = list(self.lanes)
        rows = []
        with write_transaction(self.engine) as connection:
            for name, limit in room.items():
                if limit <= 0:
                    continue
                only = (deliveries.c.destination.notin_(configured) if name == OTHER
                        else _destination_is(name))
                rows += connection.execute(_due_query(now, limit, only)).all()
            if not rows:
                return []
            connection.execute(
                update(deliveries).where(deliveries.c.id.in_([r.id for r in rows]))
                .values(state=states.DELIVERING, lease_expires_at=lease, updated_at=now))
        return [Claimed(r.id, r.destination, r.state, r.attempts, r.first_attempt_at, lease,
                        r.payload if r.regulation_id is None else r.subject, r.regulation_id)
                for r in rows]

    def process(self, claimed: Claimed) -> list[Finished]:
        started = datetime.now(UTC)
        destination = self.destinations.get(claimed.destination)
        if self._lease_too_short(claimed, started):
            return [Finished(claimed, destination, started, RELEASED)]
        try:
            result = self._attempt(claimed, destination)
        except Exception as exc:  # a bug in an adapter must not lose the delivery
            log.exception("delivery %s: unexpected error", claimed.id)
            result = Result(Verdict.RETRY, None, exc.__class__.__name__, "internal error")
        return [Finished(claimed, destination, started, result)]

    def process_batch(self, claimed: list[Claimed]) -> list[Finished]:
        """Router mode: the adapter groups the events into requests; each output's fate is
        the fate of every delivery it covers."""
        started = datetime.now(UTC)
        destination = self.destinations[claimed[0].destination]
        if any(self._lease_too_short(c, started) for c in claimed):
            return [Finished(c, destination, started, RELEASED) for c in claimed]
        by_id = {c.id: c for c in claimed}
        adapter = DESTINATION_TYPES[destination.type]
        items = [BatchItem(c.event, destination.settings, key=c.id) for c in claimed]
        items, skipped = filters.split_batch(destination, items)  # destination filters
        try:
            outputs = skipped + (adapter.transform_batch(
                items, self.client.lookup(destination.endpoint)) if items else [])
        except Exception as exc:
            log.exception("batch for %s: unexpected error", destination.name)
            outputs = [BatchOutput(list(by_id), error=Retryable(exc.__class__.__name__, 500))]
        finished: list[Finished] = []
        for output in outputs:
            result = (_result_of_error(output.error) if output.error is not None
                      else self._send_all(output.requests, destination))
            refused = _refused(adapter, result) if result.verdict is Verdict.DELIVERED else {}
            for index, key in enumerate(output.keys):
                outcome = result if index not in refused else Result(
                    Verdict.DEAD, 400, "ItemRejected", refused[index], result.duration_ms)
                finished.append(Finished(by_id.pop(key), destination, started, outcome))
        for left in by_id.values():  # an adapter that forgot an item must not lose it
            finished.append(Finished(left, destination, started, Result(
                Verdict.RETRY, None, "NotBatched", "left out of every batch")))
        return finished

    def _lease_too_short(self, claimed: Claimed, now: datetime) -> bool:
        """Never start a send that could outlive its lease (another worker would take the
        delivery over meanwhile): such a delivery goes back unsent."""
        lease = self.config.worker.lease_seconds
        if lease <= 0:  # leases that expire at once (tests): nothing to protect
            return False
        return (claimed.lease - now).total_seconds() < min(SEND_BUDGET, lease / 2)

    def _attempt(self, claimed: Claimed, destination: Destination | None) -> Result:
        if destination is None or not destination.enabled:
            return Result(Verdict.DEAD, None, "DestinationRemoved",
                          "the destination is no longer configured or enabled")
        adapter = DESTINATION_TYPES[destination.type]
        lookup = self.client.lookup(destination.endpoint)
        if claimed.regulation_id is not None:  # issue 14: a user deletion, not an event
            return _deletion_result(adapter, claimed, destination, lookup)
        try:
            requests = adapter.transform(filters.for_destination(destination, claimed.event),
                                         destination.settings, lookup)
        except AdapterError as error:
            return _result_of_error(error)
        return self._send_all(requests, destination)

    def _send_all(self, requests: Sequence[HttpRequest], destination: Destination) -> Result:
        """Send in order; the first request that does not succeed decides the outcome."""
        total_ms, last = 0, Result(Verdict.DELIVERED, None, None, "")
        for request in requests:
            sent = self.client.send(request, destination.endpoint)
            total_ms += sent.duration_ms
            last = _result_of(sent, total_ms)
            if last.verdict is not Verdict.DELIVERED:
                break
        return last

    def _record(self, finished: list[Finished]) -> None:
        """Write every attempt and next state in one transaction, but only for deliveries
        whose lease we still hold (an expired lease means another worker took over)."""
        now = datetime.now(UTC)
        with write_transaction(self.engine) as connection:
            held = {row.id: row.lease_expires_at for row in connection.execute(
                select(deliveries.c.id, deliveries.c.lease_expires_at)
                .where(deliveries.c.id.in_([f.claimed.id for f in finished]),
                       deliveries.c.state == states.DELIVERING).with_for_update())}
            mine = [f for f in finished if held.get(f.claimed.id) == f.claimed.lease]
            for lost in (f for f in finished if f not in mine):
                log.warning("delivery %s: lease lost; its result is dropped", lost.claimed.id)
            if not mine:
                return
            released = [f.claimed.id for f in mine if f.result is RELEASED]
            if released:  # back unsent: no attempt, no change to what the last one said
                connection.execute(update(deliveries).where(deliveries.c.id.in_(released)).values(
                    state=states.check_transition(states.DELIVERING, states.RETRYING),
                    next_attempt_at=now, lease_expires_at=None, updated_at=now))
            mine = [f for f in mine if f.result is not RELEASED]
            if not mine:
                return
            rows = [self._row(f, now) for f in mine]
            connection.execute(
                update(deliveries).where(deliveries.c.id == bindparam("b_id")).values(
                    state=bindparam("b_state"), attempts=bindparam("b_attempts"),
                    first_attempt_at=bindparam("b_first"), next_attempt_at=bindparam("b_next"),
                    lease_expires_at=None, last_status=bindparam("b_status"),
                    last_error=bindparam("b_error"), updated_at=now),
                [row["delivery"] for row in rows])
            connection.execute(insert(delivery_attempts), [row["attempt"] for row in rows])
        for f, row in zip(mine, rows, strict=True):
            metrics.DELIVERIES.labels(f.claimed.destination, row["delivery"]["b_state"]).inc()
            metrics.ATTEMPT_SECONDS.labels(f.claimed.destination).observe(
                f.result.duration_ms / 1000)

    def _row(self, f: Finished, now: datetime) -> dict[str, dict[str, Any]]:
        attempts = f.claimed.attempts + 1
        first = f.claimed.first_attempt_at or f.started
        target, next_at = self._next_state(f.result, attempts, first, now)
        secrets = _secret_values(f.destination)
        error = None if target == states.DELIVERED else redact(
            f"{f.result.error_class or 'HTTP'}: {f.result.text[:500]}", secrets)
        capped = self.policy.cap_note(f.result.retry_after, f.result.retry_after_text)
        if capped and error:
            error = f"{error} ({capped})"
        return {
            "delivery": {"b_id": f.claimed.id,
                         "b_state": states.check_transition(states.DELIVERING, target),
                         "b_attempts": attempts, "b_first": first, "b_next": next_at,
                         "b_status": f.result.status, "b_error": error},
            "attempt": {"delivery_id": f.claimed.id, "number": attempts,
                        "started_at": f.started, "duration_ms": f.result.duration_ms,
                        "status": f.result.status, "error_class": f.result.error_class,
                        "excerpt": excerpt(f.result.text, secrets)},
        }

    def _next_state(self, result: Result, attempts: int, first: datetime,
                    now: datetime) -> tuple[str, datetime]:
        if result.verdict is None:
            return states.SKIPPED, now
        if result.verdict is Verdict.DELIVERED:
            return states.DELIVERED, now
        if result.verdict is Verdict.DEAD or self.policy.gives_up(attempts, first, now):
            return states.DEAD, now
        delay = self.policy.delay(attempts, result.retry_after)
        return states.RETRYING, now + timedelta(seconds=delay)

    def close(self) -> None:
        for lane in self._all_lanes():
            lane.close()
        self.client.close()


def _destination_is(name: str) -> Any:
    """`destination = name`, written as an expression on purpose: a plain equality lets
    PostgreSQL copy the constant into the per-user barrier's lookup below, and on a table
    whose statistics are young it then checks every earlier row for every row (measured:
    1.8 s for 3,000 due rows instead of a few ms)."""
    return (deliveries.c.destination + literal("")) == name


def _due_query(now: datetime, limit: int, only: Any = None):
    """The oldest unfinished delivery of each (destination, user key), if it is due."""
    earlier = aliased(deliveries)
    blocked = exists().where(
        earlier.c.destination == deliveries.c.destination,
        earlier.c.user_key == deliveries.c.user_key,
        earlier.c.id < deliveries.c.id,
        earlier.c.state.in_(states.UNFINISHED))
    due = or_(
        and_(deliveries.c.state.in_((states.PENDING, states.RETRYING)),
             deliveries.c.next_attempt_at <= now),
        and_(deliveries.c.state == states.DELIVERING, deliveries.c.lease_expires_at < now))
    return (select(deliveries.c.id, deliveries.c.destination, deliveries.c.state,
                   deliveries.c.attempts, deliveries.c.first_attempt_at, events.c.payload,
                   deliveries.c.regulation_id, regulation_subjects.c.payload.label("subject"))
            # outer joins: a regulation's deletion delivery has no event (issue 14)
            .outerjoin(events, events.c.id == deliveries.c.event_id)
            .outerjoin(regulation_subjects,
                       regulation_subjects.c.regulation_id == deliveries.c.regulation_id)
            .where(true() if only is None else only, due, ~blocked)
            .order_by(deliveries.c.id).limit(limit)
            .with_for_update(of=deliveries, skip_locked=True))


def _is_outage(exc: BaseException) -> bool:
    """The database is unreachable or unusable (as opposed to refusing one row's values)."""
    return isinstance(exc, OperationalError | InterfaceError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated)


def _outcome(task: Future, items: list[Claimed]) -> list[Finished]:
    """A task's results; a task that crashed retries its deliveries instead of losing them."""
    try:
        return task.result()
    except Exception as exc:
        log.exception("delivery task crashed")
        now = datetime.now(UTC)
        return [Finished(c, None, now, Result(Verdict.RETRY, None, exc.__class__.__name__,
                                              "internal error")) for c in items]


def _refused(adapter: Adapter, result: Result) -> dict[int, str]:
    try:
        body = orjson.loads(result.text) if result.text else None
    except orjson.JSONDecodeError:
        return {}
    return adapter.rejected_items(result.status or 0, body)


def _deletion_result(adapter: Adapter, claimed: Claimed, destination: Destination,
                     lookup: Any) -> Result:
    """Issue 14: a regulation's deletion request. The adapter sends it through `lookup` (its
    `delete_users`, which knows the destination's "already gone" answers); its errors are
    classified as a transform's are, so retries, dead letters and attempts work as usual."""
    started = time.monotonic()
    try:
        answer = send_deletion(adapter, claimed.event, destination.settings, lookup)
    except AdapterError as error:
        return _result_of_error(error)
    return Result(Verdict.DELIVERED, answer.status, None, answer.text or "",
                  int((time.monotonic() - started) * 1000))


def _result_of_error(error: AdapterError) -> Result:
    if isinstance(error, Unsupported):
        return Result(None, None, "Unsupported", error.reason)
    verdict = Verdict.RETRY if error.retryable else Verdict.DEAD
    return Result(verdict, error.status, error.__class__.__name__, error.reason,
                  retry_after=error.retry_after)


def _result_of(sent: Sent, total_ms: int) -> Result:
    if sent.status is None:
        return Result(Verdict.RETRY, None, sent.error_class, sent.text, total_ms)
    verdict = classify_status(sent.status)
    error_class = None if verdict is Verdict.DELIVERED else f"HTTP {sent.status}"
    return Result(verdict, sent.status, error_class, sent.text, total_ms,
                  retry_after_seconds(sent), sent.retry_after)


def _secret_values(destination: Destination | None) -> list[str]:
    if destination is None:
        return []
    names = DESTINATION_TYPES[destination.type].secret_settings()
    return [str(v) for k, v in destination.settings.items() if k in names and v]
