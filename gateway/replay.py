"""Sending stored events again: replay (new delivery rows for a filter) and retry of a dead
delivery. Both only write ordinary delivery rows; the worker does the rest (docs/design.md §6)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from sqlalchemy import Engine, select

from gateway.config import Config
from gateway.queries import QueryError, event_selection
from gateway.store import outbox
from gateway.store.db import write_transaction
from gateway.store.models import deliveries, events

CHUNK = 5000
Progress = Callable[[int, int], None]


class NotFound(LookupError):
    pass


class Conflict(ValueError):
    """The delivery is not in a state this action applies to."""


def replay(engine: Engine, config: Config, destination: str, filters: Mapping[str, str],
           dry_run: bool = False, progress: Progress | None = None) -> dict[str, object]:
    """Queue one new `pending` delivery to `destination` per event the filter matches."""
    names = {d.name: d for d in config.destinations}
    if destination not in names:
        raise QueryError(f"destination: no destination named {destination!r}")
    if not names[destination].enabled:
        raise QueryError(f"destination: {destination!r} is disabled")
    with engine.connect() as connection:
        matched_ids = [row.id for row in connection.execute(
            event_selection(connection, filters).with_only_columns(events.c.id)
            .order_by(events.c.id))]
    if dry_run:
        return {"replay_id": None, "matched": len(matched_ids), "queued": 0}
    replay_id = uuid.uuid4().hex
    queued = 0
    for start in range(0, len(matched_ids), CHUNK):
        chunk = matched_ids[start:start + CHUNK]
        with write_transaction(engine) as connection:
            queued += outbox.queue(connection, destination, chunk, at=datetime.now(UTC),
                                   replay_id=replay_id)
        if progress:
            progress(min(start + CHUNK, len(matched_ids)), len(matched_ids))
    return {"replay_id": replay_id, "matched": len(matched_ids), "queued": queued}


def retry_dead(engine: Engine, delivery_id: int) -> None:
    """Move a dead delivery back to pending, with a fresh retry window."""
    with write_transaction(engine) as connection:
        state = connection.execute(select(deliveries.c.state)
                                   .where(deliveries.c.id == delivery_id)).scalar_one_or_none()
        if state is None:
            raise NotFound(f"no delivery {delivery_id}")
        if state != outbox.DEAD:
            raise Conflict(f"delivery {delivery_id} is {state}; only a dead delivery is retried")
        outbox.revive(connection, [delivery_id])
