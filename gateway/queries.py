"""Reading what the gateway stored: events, deliveries with attempts, identities.

One module serves the admin API and the CLI alike (docs/design.md §6: the CLI wraps these functions,
not the HTTP API). Lists page newest first by id with an opaque cursor.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Select, or_, select

from adapters.known import unknown_key
from gateway import identity
from gateway.messages import iso_text, parse_time
from gateway.store.models import clip_indexed, deliveries, delivery_attempts, events

MAX_LIMIT = 1000
DEFAULT_LIMIT = 50
EVENT_FILTERS = ("source", "type", "event", "user_id", "anonymous_id", "email", "since",
                 "until")
DELIVERY_FILTERS = ("destination", "state", "event_id", "since", "until")
MAX_ID = 2**63 - 1  # ids are BIGINTs (SQLite INTEGERs): 1 … 2**63-1


class QueryError(ValueError):
    """A filter or paging parameter the caller got wrong (answered 400)."""


@dataclass(frozen=True)
class Page:
    data: list[dict[str, Any]]
    next_cursor: str | None

    def as_json(self) -> dict[str, Any]:
        return {"data": self.data, "next_cursor": self.next_cursor}


def list_events(connection: Connection, filters: Mapping[str, str], limit: Any = None,
                cursor: str | None = None) -> Page:
    query = event_selection(connection, filters)
    return _page(connection, query, events.c.id, limit, cursor, event_summary)


def event_selection(connection: Connection, filters: Mapping[str, str]) -> Select:
    """The events a filter matches (also what a replay selects)."""
    filters = _checked(filters, EVENT_FILTERS)
    query = select(events)
    for column in ("source", "type"):
        if filters.get(column):
            query = query.where(events.c[column] == filters[column])
    for column in ("event", "user_id", "anonymous_id"):  # stored clipped: compare clipped
        if filters.get(column):
            query = query.where(events.c[column] == clip_indexed(filters[column]))
    if filters.get("email"):
        profile = identity.lookup(connection, "email", filters["email"])
        keys = profile["keys"] if profile else []
        users = [k["value"] for k in keys if k["kind"] == "userId"]
        anonymous = [k["value"] for k in keys if k["kind"] == "anonymousId"]
        query = query.where(or_(events.c.user_id.in_(users), events.c.anonymous_id.in_(anonymous)))
    return _time_range(query, events.c.received_at, filters)


def get_event(connection: Connection, event_id: int) -> dict[str, Any] | None:
    row = connection.execute(select(events).where(events.c.id == event_id)).first()
    if row is None:
        return None
    rows = connection.execute(select(deliveries).where(deliveries.c.event_id == event_id)
                              .order_by(deliveries.c.id)).all()
    attempts = _attempts_of(connection, [r.id for r in rows])
    return {**event_summary(row), "payload": row.payload,
            "deliveries": [{**delivery_summary(r), "attempts": attempts.get(r.id, [])}
                           for r in rows]}


def list_deliveries(connection: Connection, filters: Mapping[str, str], limit: Any = None,
                    cursor: str | None = None) -> Page:
    filters = _checked(filters, DELIVERY_FILTERS)
    query = select(deliveries)
    for column in ("destination", "state"):
        if filters.get(column):
            query = query.where(deliveries.c[column] == filters[column])
    if filters.get("event_id"):
        event_id = parse_id(filters["event_id"])
        if event_id is None:
            raise QueryError(f"event_id: an id, a whole number from 1 to {MAX_ID}")
        query = query.where(deliveries.c.event_id == event_id)
    query = _time_range(query, deliveries.c.created_at, filters)
    return _page(connection, query, deliveries.c.id, limit, cursor, delivery_summary)


def get_delivery(connection: Connection, delivery_id: int) -> dict[str, Any] | None:
    row = connection.execute(select(deliveries).where(deliveries.c.id == delivery_id)).first()
    if row is None:
        return None
    return {**delivery_summary(row), "attempts": _attempts_of(connection, [row.id]).get(row.id,
                                                                                          [])}


def get_identity(connection: Connection, filters: Mapping[str, str]) -> dict[str, Any] | None:
    kinds = {"user_id": "userId", "anonymous_id": "anonymousId", "email": "email"}
    if set(filters) - set(kinds):
        raise QueryError("give exactly one of user_id, anonymous_id or email")
    given = [(kinds[k], v) for k, v in _checked(filters, tuple(kinds)).items() if v]
    if len(given) != 1:
        raise QueryError("give exactly one of user_id, anonymous_id or email")
    found = identity.lookup(connection, *given[0])
    return None if found is None else identity_json(found)


def get_identity_by_id(connection: Connection, profile_id: int) -> dict[str, Any] | None:
    found = identity.profile(connection, profile_id)
    return None if found is None else identity_json(found)


def identity_json(found: dict[str, Any]) -> dict[str, Any]:
    """A profile (`identity.profile`) with its times as ISO text."""
    return {**found, "first_seen": iso_text(found["first_seen"]),
            "last_seen": iso_text(found["last_seen"]),
            "keys": [{**k, "linked_at": iso_text(k["linked_at"])} for k in found["keys"]],
            "conflicts": [{**c, "at": iso_text(c["at"])} for c in found["conflicts"]]}


def event_summary(row: Any) -> dict[str, Any]:
    return {"id": row.id, "source": row.source, "message_id": row.message_id, "type": row.type,
            "event": row.event, "user_id": row.user_id, "anonymous_id": row.anonymous_id,
            "timestamp": iso_text(row.timestamp), "received_at": iso_text(row.received_at)}


def delivery_summary(row: Any) -> dict[str, Any]:
    return {"id": row.id, "event_id": row.event_id, "destination": row.destination,
            "user_key": row.user_key, "state": row.state, "attempts": row.attempts,
            "next_attempt_at": iso_text(row.next_attempt_at), "last_status": row.last_status,
            "last_error": row.last_error, "replay_id": row.replay_id,
            "regulation_id": row.regulation_id,
            "created_at": iso_text(row.created_at), "updated_at": iso_text(row.updated_at)}


def _attempts_of(connection: Connection, ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    if not ids:
        return out
    for a in connection.execute(select(delivery_attempts)
                                .where(delivery_attempts.c.delivery_id.in_(ids))
                                .order_by(delivery_attempts.c.id)):
        out.setdefault(a.delivery_id, []).append({
            "number": a.number, "started_at": iso_text(a.started_at), "duration_ms": a.duration_ms,
            "status": a.status, "error_class": a.error_class, "excerpt": a.excerpt})
    return out


def paginate(connection: Connection, query: Select, id_column: Any, limit: Any,
             cursor: str | None, render: Any) -> Page:
    """The admin lists' paging (newest first, `limit` + opaque cursor) for another module's
    table (gateway.regulations)."""
    return _page(connection, query, id_column, limit, cursor, render)


def _page(connection: Connection, query: Select, id_column: Any, limit: Any,
          cursor: str | None, render: Any) -> Page:
    size = _limit(limit)
    if cursor:
        query = query.where(id_column < _decode_cursor(cursor))
    rows = connection.execute(query.order_by(id_column.desc()).limit(size + 1)).all()
    more = len(rows) > size
    rows = rows[:size]
    next_cursor = _encode_cursor(rows[-1].id) if more else None
    return Page([render(r) for r in rows], next_cursor)


def _time_range(query: Select, column: Any, filters: Mapping[str, str]) -> Select:
    for name, compare in (("since", column.__ge__), ("until", column.__lt__)):
        if filters.get(name):
            when = parse_time(filters[name])
            if when is None:
                raise QueryError(f"{name}: not an ISO-8601 time")
            query = query.where(compare(when))
    return query


def _limit(value: Any) -> int:
    if value in (None, ""):
        return DEFAULT_LIMIT
    size = _integer(value, "limit")
    if not 1 <= size <= MAX_LIMIT:
        raise QueryError(f"limit: between 1 and {MAX_LIMIT}")
    return size


def _integer(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise QueryError(f"{name}: not a whole number") from None


def _encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except ValueError:  # binascii.Error, UnicodeDecodeError, non-ASCII input
        text = ""
    kind, _, value = text.partition(":")
    last_id = parse_id(value) if kind == "id" else None
    if last_id is None:
        raise QueryError("cursor: not a cursor this API returned")
    return last_id


def parse_id(value: Any) -> int | None:
    """A row id as the API takes it (path, cursor, event_id): ASCII digits for 1 … MAX_ID;
    anything else — a sign, a 5000-digit number, an Arabic-Indic digit — is None."""
    if not isinstance(value, str) or not (value.isascii() and value.isdigit()) \
            or len(value) > len(str(MAX_ID)):
        return None
    number = int(value)
    return number if 1 <= number <= MAX_ID else None


def _checked(filters: Mapping[str, Any], allowed: tuple[str, ...]) -> dict[str, str]:
    """Filters as the tracking API stores values: strings, NUL removed (ingest strips it);
    a string no database can hold (a lone surrogate, via a JSON replay body) is refused."""
    _reject_unknown(filters, allowed)
    out: dict[str, str] = {}
    for name, value in filters.items():
        if not isinstance(value, str):
            raise QueryError(f"{name}: must be a string")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise QueryError(f"{name}: not valid Unicode") from None
        out[name] = value.replace("\x00", "")
    return out


def _reject_unknown(filters: Mapping[str, str], allowed: tuple[str, ...]) -> None:
    problem = unknown_key(filters, allowed, "filter")
    if problem:
        raise QueryError(problem)

