"""Store accepted messages: events + identity changes + delivery rows in ONE transaction.

This is the outbox of docs/design.md §2.1: the tracking endpoint answers 200 only after `submit`
returns, so an accepted event and the work it causes are durable together or not at all.

Group commit: a durable commit costs about a millisecond of wall time whatever it holds, so the
concurrent requests of a process share one transaction and one commit (`submit`). Each request
still gets its own result, and only after the commit that holds it; a failed group fails every
request in it with the same error (or, when the database itself works, is written again request
by request so only the culprit fails).
"""

from __future__ import annotations

import random
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection, Engine
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError

from gateway.config import Config
from gateway.identity import IdentityGraph
from gateway.messages import Message
from gateway.regulations.suppression import suppressed_messages
from gateway.routing import destinations_for_source, route
from gateway.store import outbox, partitions
from gateway.store.db import write_transaction
from gateway.store.models import clip_indexed, events, message_ids
from gateway.store.storage_state import is_outage

MAX_TRANSACTION_TRIES = 5
MAX_GROUP_MESSAGES = 1000  # one group commit writes at most this many messages…
MAX_QUEUED_MESSAGES = 10_000  # …and at most this many wait for it (per process)


@dataclass(frozen=True)
class StoreResult:
    stored: int  # new events written
    duplicates: int  # messageIds this source had already sent
    deliveries: int  # delivery rows queued


@dataclass(eq=False)
class _Request:
    """One caller's messages, waiting for (or written by) a group's transaction."""

    config: Config
    source: str
    messages: list[Message]
    received_at: datetime
    wake: threading.Event = field(default_factory=threading.Event)
    finished: bool = False
    result: StoreResult | None = None
    error: BaseException | None = None


def store(engine: Engine, config: Config, source: str, messages: list[Message],
          received_at: datetime) -> StoreResult:
    """Write the messages of one request atomically in a transaction of their own, retrying on
    concurrent-write conflicts. (The tracking API uses `submit`, which shares commits.)"""
    if not messages:
        return StoreResult(0, 0, 0)
    return _store_with_retries(engine, [_Request(config, source, messages, received_at)])[0]


def submit(engine: Engine, config: Config, source: str, messages: list[Message],
           received_at: datetime) -> StoreResult:
    """Store one request's messages by group commit: concurrent callers of this process share
    one transaction and one commit. Returns only once that commit is done (200 means stored);
    raises what the group's transaction raised if it failed."""
    if not messages:
        return StoreResult(0, 0, 0)
    with _COMMITTERS_LOCK:
        committer = _COMMITTERS.get(engine)
        if committer is None:
            committer = _COMMITTERS[engine] = _GroupCommitter()
    request = _Request(config, source, messages, received_at)
    committer.submit(engine, request)
    if request.error is not None:
        raise request.error
    assert request.result is not None
    return request.result


class _GroupCommitter:
    """Group commit for one engine in one process ("the first waiter leads").

    A request queues itself; if no transaction is being written it becomes the leader at once
    (a lone request never waits for company). The leader takes what is queued (at most
    MAX_GROUP_MESSAGES), writes it in ONE transaction, wakes every request of the group with
    its own result and hands the lead to the first request queued meanwhile: groups form by
    themselves while a commit is in flight. The queue holds at most MAX_QUEUED_MESSAGES; more
    callers wait for room (back-pressure on the request threads).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._queue: deque[_Request] = deque()
        self._queued = 0  # messages in the queue
        self._leading = False  # a request is writing a group (the queue may be empty then)

    def submit(self, engine: Engine, request: _Request) -> None:
        size = len(request.messages)
        with self._lock:
            while self._queue and self._queued + size > MAX_QUEUED_MESSAGES:
                self._room.wait()
            self._queue.append(request)
            self._queued += size
            lead = not self._leading  # then the queue was empty: this request is first
            self._leading = True
        if not lead:
            request.wake.wait()  # set when its group is done, or when it is handed the lead
            if request.finished:
                return
        self._lead(engine, request)

    def _lead(self, engine: Engine, mine: _Request) -> None:
        try:
            while not mine.finished:  # `mine` is first in the queue: one group does it
                with self._lock:
                    group = [self._queue.popleft()]
                    messages = len(group[0].messages)
                    while self._queue and \
                            messages + len(self._queue[0].messages) <= MAX_GROUP_MESSAGES:
                        messages += len(self._queue[0].messages)
                        group.append(self._queue.popleft())
                    self._queued -= messages
                    self._room.notify_all()
                _write_group(engine, group)
        finally:
            with self._lock:
                if self._queue:
                    self._queue[0].wake.set()  # not finished: it wakes as the next leader
                else:
                    self._leading = False


def _write_group(engine: Engine, group: list[_Request]) -> None:
    """One transaction for the group. If it fails and the database is reachable (not an
    outage), the requests are written one by one, so only a culprit's request fails."""
    try:
        try:
            for request, result in zip(group, _store_with_retries(engine, group), strict=True):
                request.result = result
        except Exception as exc:
            if len(group) == 1 or is_outage(exc):
                for request in group:
                    request.error = exc
            else:
                for request in group:
                    try:
                        request.result = _store_with_retries(engine, [request])[0]
                    except Exception as own:
                        request.error = own
    except BaseException as exc:  # interrupted: nobody may wait for ever, nobody hears 200
        for request in group:
            if request.result is None and request.error is None:
                request.error = exc
        raise
    finally:
        for request in group:
            request.finished = True
            request.wake.set()


def _store_with_retries(engine: Engine, requests: list[_Request]) -> list[StoreResult]:
    for attempt in range(1, MAX_TRANSACTION_TRIES + 1):
        try:
            with write_transaction(engine) as connection:
                return _store(connection, requests)
        except IntegrityError as exc:
            conflict = exc
            if partitions.is_missing_partition(exc):  # no worker has made this week's yet
                when = min(r.received_at for r in requests)
                partitions.ensure(engine, when, max(r.received_at for r in requests))
            elif not _is_unique_violation(exc):  # a value refused: no retry will store it
                raise
        except DBAPIError as exc:
            if not _is_transient(exc):
                raise
            conflict = exc
        if attempt == MAX_TRANSACTION_TRIES:
            raise conflict
        time.sleep(random.uniform(0.005, 0.02) * attempt)  # jitter: do not collide again
    raise AssertionError("unreachable")


def _store(connection: Connection, requests: list[_Request]) -> list[StoreResult]:
    """Events, identity and delivery rows of every request, in arrival order. A messageId sent
    twice by one source (in two requests of the group, or already stored) is stored once: the
    first arrival is the new one, later ones are duplicates."""
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    # a suppressed person's messages are answered 200 but neither stored nor routed
    suppressed = suppressed_messages(connection, requests)
    for request in requests:
        for m in request.messages:
            key = (request.source, m.message_id)
            if key not in seen and id(m) not in suppressed:
                seen.add(key)
                rows.append(_event_row(request.source, m, request.received_at))
    # arrival order: event ids (and so delivery order per user) follow it
    inserted = _insert_new_events(connection, rows) if rows else {}  # none: all suppressed
    new: list[tuple[int, int, Message]] = []  # (request index, event id, message)
    for index, request in enumerate(requests):
        for m in request.messages:
            event_id = inserted.pop((request.source, m.message_id), None)
            if event_id is not None:
                new.append((index, event_id, m))
    if new:  # one config per engine, so per group: the first request's identity rules
        IdentityGraph(connection, requests[0].config.identity).apply(
            [m for _, _, m in new], [requests[index].source for index, _, _ in new])
    candidates: dict[tuple[int, str], list] = {}
    # runs of consecutive events routed alike → one statement each, in arrival order: delivery
    # ids must follow event ids for every destination (per-user order, §2.3), so events routed
    # differently in between start a new run
    routed: list[tuple[tuple[str, ...], list[int]]] = []
    queued = [0] * len(requests)
    for index, event_id, message in new:
        request = requests[index]
        wanted = candidates.get((id(request.config), request.source))
        if wanted is None:
            wanted = candidates[(id(request.config), request.source)] = destinations_for_source(
                request.config, request.source)
        names = tuple(d.name for d in route(wanted, message.payload.get("integrations")))
        if names:
            if routed and routed[-1][0] == names:
                routed[-1][1].append(event_id)
            else:
                routed.append((names, [event_id]))
            queued[index] += len(names)
    for names, event_ids in routed:
        outbox.queue_routed(connection, names, event_ids)
    stored = [0] * len(requests)
    for index, _, _ in new:
        stored[index] += 1
    return [StoreResult(stored[i], len(r.messages) - stored[i], queued[i])
            for i, r in enumerate(requests)]


def _event_row(source: str, m: Message, received_at: datetime) -> dict[str, Any]:
    return {
        "source": source,
        "message_id": m.message_id,
        "type": m.type,
        "event": clip_indexed(m.event),
        "user_id": clip_indexed(m.user_id),
        "anonymous_id": clip_indexed(m.anonymous_id),
        "timestamp": m.timestamp,
        "received_at": received_at,
        "payload": orjson.dumps(m.payload),
    }


# INSERT … ON CONFLICT DO NOTHING RETURNING: the rows actually new. SQLite: events' own unique
# (source, message_id). PostgreSQL: message_ids holds the unique key (events may be partitioned,
# models.message_ids); the events insert still skips a conflict without naming it, for the rows
# a node of the previous release stored in `events` alone before migration 0014.
_CLAIM_KEYS = (postgresql.insert(message_ids)
               .on_conflict_do_nothing(index_elements=["source", "message_id"])
               .returning(message_ids.c.source, message_ids.c.message_id))
# Built once per process, not per request (SQLAlchemy then finds their compiled form cached)
_INSERT_EVENTS = {
    "postgresql": postgresql.insert(events).on_conflict_do_nothing()
    .returning(events.c.id, events.c.source, events.c.message_id),
    "sqlite": sqlite.insert(events).on_conflict_do_nothing(index_elements=["source", "message_id"])
    .returning(events.c.id, events.c.source, events.c.message_id)}
_COMMITTERS: weakref.WeakKeyDictionary[Engine, _GroupCommitter] = weakref.WeakKeyDictionary()
_COMMITTERS_LOCK = threading.Lock()


def _insert_new_events(connection: Connection, rows: list[dict]) -> dict[tuple[str, str], int]:
    """(source, messageId) → id of the rows actually new."""
    if connection.dialect.name == "postgresql":
        claimed = {(row.source, row.message_id) for row in connection.execute(_CLAIM_KEYS, [
            {"source": r["source"], "message_id": r["message_id"],
             "received_at": r["received_at"]} for r in rows])}
        rows = [r for r in rows if (r["source"], r["message_id"]) in claimed]
        if not rows:
            return {}
    statement = _INSERT_EVENTS[connection.dialect.name]
    return {(row.source, row.message_id): row.id for row in connection.execute(statement, rows)}


def _is_unique_violation(exc: IntegrityError) -> bool:
    """A concurrent insert of the same identity key (PostgreSQL; SQLite has one writer, but
    says the same of a key inserted twice): the transaction may succeed when run again."""
    cause = exc.orig
    return getattr(cause, "sqlstate", None) == "23505" or getattr(
        cause, "sqlite_errorname", None) in ("SQLITE_CONSTRAINT_UNIQUE",
                                             "SQLITE_CONSTRAINT_PRIMARYKEY")


def _is_transient(exc: DBAPIError) -> bool:
    """Deadlock or serialization failure on PostgreSQL: safe to run the transaction again."""
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return code in ("40001", "40P01")
