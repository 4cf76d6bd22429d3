"""The delivery worker: claim due deliveries, send them, record the attempt, move the state.

Claiming takes, per (destination, user key), only the oldest unfinished delivery (the barrier
of DESIGN.md §2.3), marks it `delivering` with a lease, and commits; sending happens outside any
transaction; finishing writes the attempt row and the next state only if our lease still holds.
A worker killed mid-send leaves leases that expire, and the rows are claimed again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Engine, and_, exists, insert, or_, select, update
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
    def __init__(self, engine: Engine, config: Config, client: HttpClient | None = None) -> None:
        self.engine = engine
        self.config = config
        self.client = client or HttpClient(pool_size=max(8, config.worker.concurrency * 2))
        self.policy = policy_from(config)
        self.destinations = {d.name: d for d in config.destinations}
        self.pool = ThreadPoolExecutor(config.worker.concurrency, "delivery")

    def run(self, stop: threading.Event) -> None:
        """Deliver until `stop` is set; what is in flight then is finished, not abandoned."""
        pause = self.config.worker.poll_interval_ms / 1000
        while not stop.is_set():
            try:
                done = self.run_once()
            except Exception:  # a database outage must not kill the worker
                log.exception("delivery round failed; retrying")
                done = 0
            if not done:
                stop.wait(pause)
        self.pool.shutdown(wait=True)

    def run_once(self) -> int:
        """Claim one round of due deliveries and process them concurrently: one task per
        delivery, or one per destination whose adapter batches (Customer.io's v2 API). A round
        holds at most one delivery per (destination, user), so batching keeps per-user order."""
        claimed = self.claim()
        singles: list[Claimed] = []
        batched: dict[str, list[Claimed]] = {}
        for item in claimed:
            destination = self.destinations.get(item.destination)
            if destination is not None and destination.enabled and DESTINATION_TYPES[
                    destination.type].batches(destination.settings):
                batched.setdefault(item.destination, []).append(item)
            else:
                singles.append(item)
        tasks = [self.pool.submit(self.process, item) for item in singles]
        tasks += [self.pool.submit(self.process_batch, items) for items in batched.values()]
        for task in tasks:
            task.result()
        return len(claimed)

    def claim(self) -> list[Claimed]:
        now = datetime.now(UTC)
        lease = now + timedelta(seconds=self.config.worker.lease_seconds)
        with write_transaction(self.engine) as connection:
            rows = connection.execute(_due_query(now, self.config.worker.batch_size)).all()
            if not rows:
                return []
            connection.execute(
                update(deliveries).where(deliveries.c.id.in_([r.id for r in rows]))
                .values(state=states.DELIVERING, lease_expires_at=lease, updated_at=now))
        return [Claimed(r.id, r.destination, r.state, r.attempts, r.first_attempt_at, lease,
                        r.payload) for r in rows]

    def process(self, claimed: Claimed) -> None:
        started = datetime.now(UTC)
        destination = self.destinations.get(claimed.destination)
        try:
            result = self._attempt(claimed, destination)
        except Exception as exc:  # a bug in an adapter must not lose the delivery
            log.exception("delivery %s: unexpected error", claimed.id)
            result = Result(Verdict.RETRY, None, exc.__class__.__name__, "internal error")
        self._finish(claimed, destination, started, result)

    def process_batch(self, claimed: list[Claimed]) -> None:
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
        for output in outputs:
            result = (_result_of_error(output.error) if output.error is not None
                      else self._send_all(output.requests, destination))
            refused = _refused(adapter, result) if result.verdict is Verdict.DELIVERED else {}
            for index, key in enumerate(output.keys):
                outcome = result if index not in refused else Result(
                    Verdict.DEAD, 400, "ItemRejected", refused[index], result.duration_ms)
                self._finish(by_id.pop(key), destination, started, outcome)
        for left in by_id.values():  # an adapter that forgot an item must not lose it
            self._finish(left, destination, started,
                         Result(Verdict.RETRY, None, "NotBatched", "left out of every batch"))

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

    def _finish(self, claimed: Claimed, destination: Destination | None, started: datetime,
                result: Result) -> None:
        now = datetime.now(UTC)
        attempts = claimed.attempts + 1
        first = claimed.first_attempt_at or started
        target, next_at = self._next_state(result, attempts, first, now)
        secrets = _secret_values(destination)
        text = excerpt(result.text, secrets)
        with write_transaction(self.engine) as connection:
            moved = connection.execute(
                update(deliveries).where(deliveries.c.id == claimed.id,
                                         deliveries.c.state == states.DELIVERING,
                                         deliveries.c.lease_expires_at == claimed.lease)
                .values(state=states.check_transition(states.DELIVERING, target),
                        attempts=attempts, first_attempt_at=first, next_attempt_at=next_at,
                        lease_expires_at=None, last_status=result.status,
                        last_error=None if target == states.DELIVERED else
                        redact(f"{result.error_class or 'HTTP'}: {result.text[:500]}", secrets),
                        updated_at=now)).rowcount
            if not moved:  # our lease expired and another worker took the delivery over
                log.warning("delivery %s: lease lost; its result is dropped", claimed.id)
                return
            connection.execute(insert(delivery_attempts).values(
                delivery_id=claimed.id, number=attempts, started_at=started,
                duration_ms=result.duration_ms, status=result.status,
                error_class=result.error_class, excerpt=text))
        metrics.DELIVERIES.labels(claimed.destination, target).inc()
        metrics.ATTEMPT_SECONDS.labels(claimed.destination).observe(result.duration_ms / 1000)

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
