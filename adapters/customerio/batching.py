"""Customer.io router mode, as pure functions over a list of events (the worker batches with
them): v1 batches group objects only; v2 (`v2Batching`) sends every event as an item of the
v2 batch API, grouped by data centre and credentials."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from adapters.base import AdapterError, BatchItem, BatchOutput, HttpRequest, InvalidEvent
from adapters.customerio import mappings as m
from adapters.customerio import records
from adapters.customerio import transform as t
from adapters.mapping import EMAIL, MISSING, USER_ID_ONLY, first_present, get_path, truthy

MAX_OBJECTS = 1000
MAX_BATCH_BYTES = 500_000
MAX_ITEM_BYTES = 32_000
NO_ID = "message: userId, email or anonymousId is required"


def batch_v1(items: Sequence[BatchItem]) -> list[BatchOutput]:
    """Singles in input order, then group objects in chunks (always to the US host, as the
    reference does), then the errors."""
    singles: list[BatchOutput] = []
    groups: list[tuple[BatchItem, HttpRequest]] = []
    errors: list[BatchOutput] = []
    for item in items:
        try:
            request = t.transform(item.event, item.settings)
        except AdapterError as error:
            errors.append(BatchOutput([item.key], error=error))
            continue
        if m.BATCH in request.url:
            groups.append((item, request))
        else:
            singles.append(BatchOutput([item.key], [request]))
    return singles + _group_chunks(groups) + errors


def _group_chunks(groups: list[tuple[BatchItem, HttpRequest]]) -> list[BatchOutput]:
    outputs: list[BatchOutput] = []
    for chunk in _chunks(groups, lambda pair: _size(pair[1]), MAX_OBJECTS):
        headers = {**chunk[0][1].headers, "Content-Type": "application/json"}
        request = HttpRequest("POST", m.US_HOST + m.BATCH, headers,
                              json={"batch": [r.json for _, r in chunk]})
        outputs.append(BatchOutput([item.key for item, _ in chunk], [request]))
    return outputs


def batch_v2(items: Sequence[BatchItem]) -> list[BatchOutput]:
    """Every event one item of POST …/api/v2/batch; validation errors before the others."""
    grouped: dict[tuple[str, str], list[tuple[BatchItem, dict[str, Any]]]] = {}
    invalid: list[BatchOutput] = []
    failed: list[BatchOutput] = []
    for item in items:
        try:
            headers = t.credentials(item.settings)
            problem = validate_v2(item)
            if problem:
                invalid.append(BatchOutput([item.key], error=InvalidEvent(problem)))
                continue
            entry = item_v2(item)
            if len(json.dumps(entry)) > MAX_ITEM_BYTES:
                raise InvalidEvent(f"an item may hold at most {MAX_ITEM_BYTES} bytes")
        except AdapterError as error:
            failed.append(BatchOutput([item.key], error=error))
            continue
        url = t.host(item.settings) + m.BATCH
        grouped.setdefault((url, headers["Authorization"]), []).append((item, entry))
    outputs: list[BatchOutput] = []
    for (url, auth), entries in grouped.items():
        for chunk in _chunks(entries, lambda pair: len(json.dumps(pair[1])), None):
            request = HttpRequest("POST", url, {"Authorization": auth,
                                                "Content-Type": "application/json"},
                                  json={"batch": [entry for _, entry in chunk]})
            outputs.append(BatchOutput([item.key for item, _ in chunk], [request], batched=True))
    return outputs + invalid + failed


def rejected_items(status: int, body: Any) -> dict[int, str]:
    """A 207 names the items that failed by `batch_index`; they fail, the others succeed."""
    if status != 207 or not isinstance(body, Mapping):
        return {}
    failures: dict[int, str] = {}
    for error in body.get("errors") or []:
        if isinstance(error, Mapping) and isinstance(error.get("batch_index"), int):
            failures[error["batch_index"]] = (f"reason: {error.get('reason')}, field: "
                                              f"{error.get('field')}, message: "
                                              f"{error.get('message')}")
    return failures


def validate_v2(item: BatchItem) -> str | None:
    event = item.event
    kind = str(event.get("type") or "").lower()
    if kind == "record":
        return records.validate(event)
    if kind == "alias":
        if truthy(event.get("userId")) and truthy(event.get("previousId")):
            return None
        return "message: userId and previousId are required"
    if kind == "group" or truthy(get_path(event, "context.mappedToDestination")):
        return None
    keys = ("userId", "anonymousId", "traits.email", "context.traits.email")
    return None if any(truthy(get_path(event, k)) for k in keys) else NO_ID


def item_v2(item: BatchItem) -> dict[str, Any]:
    event = item.event
    kind = str(event.get("type") or "").lower()
    if kind == "record":
        return records.item(event, item.extra)
    if kind == "group":
        return t.group_object(event)
    event = t.with_retl_identity(event)
    if kind == "alias":
        return {"type": "person", "action": "merge",
                "primary": {t.identifier_key(event["userId"]): event["userId"]},
                "secondary": {t.identifier_key(event["previousId"]): event["previousId"]}}
    identifiers = _identifiers(event)
    if kind == "identify":
        attributes = t.identify_attributes({k: v for k, v in event.items()
                                            if k != "user_properties"})
        return {"type": "person", "action": "identify", "identifiers": identifiers,
                "attributes": attributes}
    if kind in ("track", "page", "screen"):
        return _event_item(event, kind, identifiers, item.settings)
    raise InvalidEvent(f"could not determine type {kind or 'undefined'}")


def _identifiers(event: Mapping[str, Any]) -> dict[str, Any]:
    user_id = first_present(event, USER_ID_ONLY)
    if user_id is not MISSING:
        return {"id": user_id}
    email = first_present(event, EMAIL)
    if email is not MISSING:
        return {"email": email}
    return {"anonymous_id": event.get("anonymousId")}


def _event_item(event: Mapping[str, Any], kind: str, identifiers: dict[str, Any],
                settings: Mapping[str, Any]) -> dict[str, Any]:
    name = t.event_name(event, kind)
    token = get_path(event, "context.device.token")
    if name == m.DEVICE_DELETE:
        if not truthy(token):
            raise InvalidEvent("userId/email or device_token not present")
        return {"type": "person", "action": "delete_device", "identifiers": identifiers,
                "device": {"token": token}}
    if name in (*m.DEVICE_EVENTS, settings.get("deviceTokenEventName")) and truthy(token):
        return {"type": "person", "action": "add_device", "identifiers": identifiers,
                "device": _device(event, token)}
    if not isinstance(name, str):
        raise InvalidEvent("Event Name type should be a string")
    entry: dict[str, Any] = {"type": "person", "action": "event" if kind == "track" else kind,
                             "identifiers": identifiers, "name": name}
    if event.get("properties") is not None:
        entry["attributes"] = event["properties"]
    when = t.event_time(event)
    if when is not MISSING:
        entry["timestamp"] = when
    return entry


def _device(event: Mapping[str, Any], token: Any) -> dict[str, Any]:
    context = {"device_os": "context.os.name", "device_model": "context.device.model",
               "app_version": "context.app.version", "device_locale": "context.locale"}
    attributes = {k: get_path(event, p) for k, p in context.items()
                  if get_path(event, p) not in (MISSING, None)}
    attributes.update(event.get("properties") or {})
    device: dict[str, Any] = {"token": token}
    when = t.event_time(event)
    device["last_used"] = None if when is MISSING else when
    device["attributes"] = attributes
    platform = t.device_platform(event)
    if platform:
        device["platform"] = platform
    return device


def _size(request: HttpRequest) -> int:
    return len(json.dumps({"method": request.method, "endpoint": request.url,
                           "headers": dict(request.headers), "body": request.json}))


def _chunks(entries: list[Any], size: Callable[[Any], int],
            max_count: int | None) -> list[list[Any]]:
    """Cut in order: a new chunk when the count or the running byte size would overflow."""
    chunks: list[list[Any]] = []
    current: list[Any] = []
    total = 0
    for entry in entries:
        weight = size(entry)
        full = (max_count is not None and len(current) >= max_count) or (
            current and total + weight > MAX_BATCH_BYTES)
        if full:
            chunks.append(current)
            current, total = [], 0
        current.append(entry)
        total += weight
    if current:
        chunks.append(current)
    return chunks
