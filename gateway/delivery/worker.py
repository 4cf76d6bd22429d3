"""The delivery worker: claim due deliveries, send them, record the attempt, move the state.

Claiming takes, per (destination, user key), only the oldest unfinished delivery (the barrier
of DESIGN.md §2.3), marks it `delivering` with a lease, and commits; sending happens outside any
transaction; finishing writes the attempt row and the next state only if our lease still holds.
A worker killed mid-send leaves leases that expire, and the rows are claimed again.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Engine, and_, bindparam, exists, insert, or_, select, update
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
from gateway import metrics
from gateway.config import Config, Destination
from gateway.db import write_transaction
from gateway.delivery import states
from gateway.delivery.client import HttpClient, Sent, excerpt, redact, retry_after_seconds
from gateway.delivery.retry import RetryPolicy, Verdict, classify_status
from gateway.models import deliveries, delivery_attempts, events

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claimed:
    id: int
    destination: str
    state: str
    attempts: int
    first_attempt_at: datetime | None
    lease: datetime
    event: Mapping[str, Any]


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


def policy_from(config: Config) -> RetryPolicy:
    retry = config.retry
    return RetryPolicy(base_delay=retry.base_delay_seconds, max_delay=retry.max_delay_seconds,
                       min_attempts=retry.min_attempts, retry_window=retry.retry_window_seconds)


class Worker:
    def __init__(self, engine: Engine, config: Config, client: HttpClient | None = None,
                 tick: Callable[[], None] | None = None) -> None:
        self.engine = engine
        self.tick = tick  # called once per loop turn (the liveness heartbeat)
        self.config = config
        self.client = client or HttpClient(pool_size=max(8, config.worker.concurrency * 2))
        self.policy = policy_from(config)
        self.destinations = {d.name: d for d in config.destinations}
        self.pool = ThreadPoolExecutor(config.worker.concurrency, "delivery")
        self.finished: queue.Queue[list[Finished]] = queue.Queue()

    def run(self, stop: threading.Event) -> None:
        """Deliver until `stop` is set, then finish what is in flight.

        Claiming is continuous: whenever sending slots free up, more due deliveries are
        claimed, so one slow destination holds only its own slots, never a whole round.
        Results are recorded in batches, one transaction for all that finished meanwhile."""
        pause = self.config.worker.poll_interval_ms / 1000
        capacity = self.config.worker.batch_size
        in_flight = 0
        while not stop.is_set() or in_flight:
            if self.tick is not None:
                self.tick()
            claimed: list[Claimed] = []
            if not stop.is_set() and in_flight < capacity:
                try:
                    claimed = self.claim(capacity - in_flight)
                except Exception:  # a database outage must not kill the worker
                    log.exception("claiming failed; retrying")
                in_flight += len(claimed)
                for task, items in self._tasks(claimed):
                    task.add_done_callback(
                        lambda done, items=items: self.finished.put(_outcome(done, items)))
            finished = self._drain(wait=pause if not claimed else 0.0)
            in_flight -= len(finished)
            self._record_safely(finished)

    def run_once(self) -> int:
        """Claim one round, send it, record it (tests and benchmarks step with this)."""
        claimed = self.claim(self.config.worker.batch_size)
        finished: list[Finished] = []
        for task, items in self._tasks(claimed):
            finished.extend(_outcome(task, items))
        self._record_safely(finished)
        return len(claimed)

    def _tasks(self, claimed: list[Claimed]) -> list[tuple[Future, list[Claimed]]]:
        """One task per delivery, or one per destination whose adapter batches (Customer.io's
        v2 API). A claim holds at most one delivery per (destination, user), so batching
        keeps per-user order."""
        singles: list[Claimed] = []
        batched: dict[str, list[Claimed]] = {}
        for item in claimed:
            destination = self.destinations.get(item.destination)
            if destination is not None and destination.enabled and DESTINATION_TYPES[
                    destination.type].batches(destination.settings):
                batched.setdefault(item.destination, []).append(item)
            else:
                singles.append(item)
        tasks = [(self.pool.submit(self.process, item), [item]) for item in singles]
        tasks += [(self.pool.submit(self.process_batch, items), items)
                  for items in batched.values()]
        return tasks

    def _drain(self, wait: float) -> list[Finished]:
        """Whatever finished, waiting up to `wait` seconds for the first result."""
        finished: list[Finished] = []
        try:
            finished.extend(self.finished.get(timeout=wait) if wait else self.finished.get_nowait())
            while True:
                finished.extend(self.finished.get_nowait())
        except queue.Empty:
            pass
        return finished

    def _record_safely(self, finished: list[Finished]) -> None:
        if not finished:
            return
        try:
            self._record(finished)
        except Exception:  # unrecorded results: the leases expire and the sends are redone
            log.exception("recording %d results failed", len(finished))

    def claim(self, limit: int) -> list[Claimed]:
        now = datetime.now(UTC)
        lease = now + timedelta(seconds=self.config.worker.lease_seconds)
        with write_transaction(self.engine) as connection:
            rows = connection.execute(_due_query(now, limit)).all()
            if not rows:
                return []
            connection.execute(
                update(deliveries).where(deliveries.c.id.in_([r.id for r in rows]))
                .values(state=states.DELIVERING, lease_expires_at=lease, updated_at=now))
        return [Claimed(r.id, r.destination, r.state, r.attempts, r.first_attempt_at, lease,
                        r.payload) for r in rows]

    def process(self, claimed: Claimed) -> list[Finished]:
        started = datetime.now(UTC)
        destination = self.destinations.get(claimed.destination)
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
        by_id = {c.id: c for c in claimed}
        adapter = DESTINATION_TYPES[destination.type]
        items = [BatchItem(c.event, destination.settings, key=c.id) for c in claimed]
        try:
            outputs = adapter.transform_batch(items, self.client.lookup(destination.endpoint))
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

    def _attempt(self, claimed: Claimed, destination: Destination | None) -> Result:
        if destination is None or not destination.enabled:
            return Result(Verdict.DEAD, None, "DestinationRemoved",
                          "the destination is no longer configured or enabled")
        adapter = DESTINATION_TYPES[destination.type]
        lookup = self.client.lookup(destination.endpoint)
        try:
            requests = adapter.transform(claimed.event, destination.settings, lookup)
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
        self.pool.shutdown(wait=True)
        self.client.close()


def _due_query(now: datetime, limit: int):
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
                   deliveries.c.attempts, deliveries.c.first_attempt_at, events.c.payload)
            .join(events, events.c.id == deliveries.c.event_id)
            .where(due, ~blocked)
            .order_by(deliveries.c.id).limit(limit)
            .with_for_update(of=deliveries, skip_locked=True))


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
                  retry_after_seconds(sent))


def _secret_values(destination: Destination | None) -> list[str]:
    if destination is None:
        return []
    names = DESTINATION_TYPES[destination.type].secret_settings()
    return [str(v) for k, v in destination.settings.items() if k in names and v]
