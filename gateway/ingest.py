"""Store accepted messages: events + identity changes + delivery rows in ONE transaction.

This is the outbox of DESIGN.md §2.1: the tracking endpoint answers 200 only after `store`
returns, so an accepted event and the work it causes are durable together or not at all.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import datetime

import orjson
from sqlalchemy import Connection, Engine, Insert, func, insert, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError

from gateway.config import Config
from gateway.db import write_transaction
from gateway.delivery.states import PENDING
from gateway.identity import IdentityGraph, key_value
from gateway.messages import Message
from gateway.models import deliveries, events
from gateway.routing import destinations_for_source, route

MAX_TRANSACTION_TRIES = 5


@dataclass(frozen=True)
class StoreResult:
    stored: int  # new events written
    duplicates: int  # messageIds this source had already sent
    deliveries: int  # delivery rows queued


def store(engine: Engine, config: Config, source: str, messages: list[Message],
          received_at: datetime) -> StoreResult:
    """Write the messages of one request atomically, retrying on concurrent-write conflicts."""
    if not messages:
        return StoreResult(0, 0, 0)
    for attempt in range(1, MAX_TRANSACTION_TRIES + 1):
        try:
            with write_transaction(engine) as connection:
                return _store(connection, config, source, messages, received_at)
        except IntegrityError as exc:  # a concurrent insert of the same identity key
            conflict = exc
        except DBAPIError as exc:
            if not _is_transient(exc):
                raise
            conflict = exc
        if attempt == MAX_TRANSACTION_TRIES:
            raise conflict
        time.sleep(random.uniform(0.005, 0.02) * attempt)  # jitter: do not collide again
    raise AssertionError("unreachable")


def _store(connection: Connection, config: Config, source: str, messages: list[Message],
           received_at: datetime) -> StoreResult:
    rows = [{
        "source": source,
        "message_id": m.message_id,
        "type": m.type,
        "event": clip_indexed(m.event),
        "user_id": clip_indexed(m.user_id),
        "anonymous_id": clip_indexed(m.anonymous_id),
        "timestamp": m.timestamp,
        "received_at": received_at,
        "payload": orjson.dumps(m.payload),
    } for m in messages]
    inserted = _insert_new_events(connection, rows)
    new = [(inserted[m.message_id], m) for m in messages if m.message_id in inserted]
    if new:
        IdentityGraph(connection).apply(m for _, m in new)
    candidates = destinations_for_source(config, source)
    routed: dict[str, list[int]] = {}
    for event_id, message in new:
        for destination in route(candidates, message.payload.get("integrations")):
            routed.setdefault(destination.name, []).append(event_id)
    for destination_name, event_ids in routed.items():
        connection.execute(_queue_deliveries(destination_name, event_ids))
    return StoreResult(len(new), len(messages) - len(new),
                       sum(len(ids) for ids in routed.values()))


def _queue_deliveries(destination: str, event_ids: list[int]) -> Insert:
    """One `pending` row per event for a destination, copied from the events rows in the
    database (INSERT … SELECT): no per-row values cross from Python."""
    user_key = func.coalesce(events.c.user_id, events.c.anonymous_id, literal(""))
    rows = select(
        events.c.id, literal(destination), user_key, literal(PENDING), literal(0),
        events.c.received_at, events.c.received_at, events.c.received_at,
    ).where(events.c.id.in_(event_ids))
    return insert(deliveries).from_select(
        ["event_id", "destination", "user_key", "state", "attempts", "next_attempt_at",
         "created_at", "updated_at"], rows)


def _insert_new_events(connection: Connection, rows: list[dict]) -> dict[str, int]:
    """INSERT … ON CONFLICT DO NOTHING RETURNING: messageId → id of the rows actually new."""
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = (dialect.insert(events)
                 .on_conflict_do_nothing(index_elements=["source", "message_id"])
                 .returning(events.c.id, events.c.message_id))
    return {row.message_id: row.id for row in connection.execute(statement, rows)}


def clip_indexed(value: str | None) -> str | None:
    """Index columns hold 500 characters: a longer value is stored as its prefix and a hash of
    the whole (identity.key_value), so it finds exactly its own events; the payload keeps the
    full value. The admin API's filters go through this too."""
    return None if value is None else key_value(value)


def _is_transient(exc: DBAPIError) -> bool:
    """Deadlock or serialization failure on PostgreSQL: safe to run the transaction again."""
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return code in ("40001", "40P01")
