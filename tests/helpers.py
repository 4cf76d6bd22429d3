"""Reading back what the gateway stored, for assertions."""

from __future__ import annotations

import base64
from typing import Any

from sqlalchemy import Engine, select

from gateway.models import deliveries, events


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def stored_events(engine: Engine, source: str | None = None) -> list[dict[str, Any]]:
    query = select(events).order_by(events.c.id)
    if source:
        query = query.where(events.c.source == source)
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]


def stored_payloads(engine: Engine, source: str | None = None) -> list[dict[str, Any]]:
    return [row["payload"] for row in stored_events(engine, source)]


def stored_deliveries(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        rows = connection.execute(select(deliveries).order_by(deliveries.c.id))
        return [dict(row._mapping) for row in rows]
