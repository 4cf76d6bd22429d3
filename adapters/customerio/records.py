"""Reverse-ETL `record` events in v2 batching: the connection's object type (person or event)
decides the item; the identifiers carry both the id and the fields."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.base import InvalidEvent
from adapters.mapping import get_path, unix_seconds

ID_KEYS = ("cio_id", "id", "email")
NO_ID = "message: A non-empty `id` or `email` identifier is required"


def validate(event: Mapping[str, Any]) -> str | None:
    return None if _identifier(event) else NO_ID


def _identifier(event: Mapping[str, Any]) -> tuple[str, str] | None:
    identifiers = event.get("identifiers")
    if not isinstance(identifiers, Mapping):
        return None
    for key in ID_KEYS:
        value = identifiers.get(key)
        if isinstance(value, str) and value.strip():
            return key, value
    return None


def item(event: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    identifier = _identifier(event)
    assert identifier is not None  # validate() ran first
    key, value = identifier
    fields = dict(event.get("identifiers") or {})
    object_type = get_path(extra, "connection.config.destination.object")
    action = event.get("action")
    entry: dict[str, Any] = {"type": "person", "identifiers": {key: value}}
    if object_type == "event":
        if action == "delete":
            raise InvalidEvent('"delete" is not supported for object type "event"')
        name = fields.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidEvent("Event name is required for CustomerIO event records")
        entry.update(action="event", name=name)
        skipped = (key, "created_at", "name")
    elif action == "delete":
        return {**entry, "action": "delete"}
    else:
        entry["action"] = "identify"
        skipped = (key, "created_at")
    if fields.get("created_at") is not None:
        entry["timestamp"] = unix_seconds(fields["created_at"])
    attributes = {k: v for k, v in fields.items() if k not in skipped}
    if attributes:
        entry["attributes"] = attributes
    return entry
