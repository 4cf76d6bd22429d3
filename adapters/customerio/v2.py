"""Customer.io router mode v2 (customerio-behaviour.md, "Router mode v2"): every event one item
of POST …/api/v2/batch.

Per group of inputs sharing one Config: stage 1 validates every input's shape (shape.py),
stage 2 builds the items of those that passed (the `dontBatch` ones last) from the rules both
modes share (rules.py), then the items are chunked under 500,000 bytes, the successes sorted by
their smallest job id, and the errors follow (stage 1, stage 2, stage 2 of `dontBatch`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from adapters.base import (
    AdapterError,
    BatchItem,
    BatchOutput,
    ConfigError,
    HttpRequest,
    InvalidEvent,
)
from adapters.customerio import mappings as m
from adapters.customerio import rules
from adapters.customerio.shape import RECORD_OBJECTS, record_identifier, validate
from adapters.mapping import (
    EMAIL,
    MISSING,
    USER_ID_ONLY,
    construct,
    first_truthy,
    get_path,
    js_string,
    truthy,
    unix_seconds,
)

MAX_BATCH_BYTES = 500_000
MAX_ITEM_BYTES = 32_768
NAME_NOT_STRING = "Event Name type should be a string"
DEVICE_NOT_PRESENT = "userId/email or device_token not present"


# -- stage 2: items -----------------------------------------------------------------------------

def identifiers(event: Mapping[str, Any], anonymous: bool = True) -> dict[str, Any] | None:
    """{id}, else {email: String(email)}, else {anonymous_id} (when allowed); None if none."""
    user_id = first_truthy(event, USER_ID_ONLY)
    if user_id is not MISSING:
        return {"id": user_id}
    email = first_truthy(event, EMAIL)
    if email is not MISSING:
        return {"email": js_string(email)}
    if anonymous and truthy(event.get("anonymousId")):
        return {"anonymous_id": event["anonymousId"]}
    return None


def _identify(event: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    ids = identifiers(event, anonymous=False)
    if ids is None:
        raise InvalidEvent("userId or email is not present")
    # v2 leaves `user_properties` out of a person's attributes (v1 copies them)
    attributes = rules.identify_attributes({k: v for k, v in event.items()
                                            if k != "user_properties"})
    return {"type": "person", "action": "identify", "identifiers": ids,
            "attributes": attributes}


def _activity(kind: str) -> Callable[[Mapping[str, Any], Mapping[str, Any]], dict[str, Any]]:
    def build(event: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
        if kind == "track":
            device = _device_item(event, settings)
            if device is not None:
                return device
            name = event.get("event")
            if not isinstance(name, str) or not name:
                raise InvalidEvent("Event is a required field and should be a string")
        elif kind == "page":
            name = rules.page_name(event)
            if not isinstance(name, str):
                raise InvalidEvent(NAME_NOT_STRING)
        else:
            screen = rules.screen_name(event)
            if not isinstance(screen, str):
                raise InvalidEvent(NAME_NOT_STRING)
            name = f"Viewed {screen} Screen"
        ids = identifiers(event)
        if ids is None:
            raise InvalidEvent("userId, email or anonymousId is required")
        properties = event.get("properties")
        entry: dict[str, Any] = {"type": "person", "action": "event" if kind == "track" else kind,
                                 "identifiers": ids, "name": name,
                                 "attributes": properties if properties is not None else {}}
        when = rules.event_time(event)
        if when is not MISSING:
            entry["timestamp"] = when
        return entry
    return build


def _device_item(event: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any] | None:
    """A track named like a device event (or exactly `deviceTokenEventName`, absent == absent
    included): delete_device / add_device, or None to go on as an ordinary track."""
    raw = event.get("event", MISSING)
    configured = settings.get("deviceTokenEventName", MISSING)
    if raw not in m.DEVICE_EVENTS and raw != configured:
        return None
    ids = identifiers(event, anonymous=False)
    token = get_path(event, "context.device.token")
    if raw == m.DEVICE_DELETE:
        if ids is None or not truthy(token):
            raise InvalidEvent(DEVICE_NOT_PRESENT)
        return {"type": "person", "action": "delete_device", "identifiers": ids,
                "device": {"token": token}}
    if ids is None or not truthy(token):
        return None  # not an error: the ordinary track item
    device: dict[str, Any] = {"token": token}
    when = rules.event_time(event)
    if when is not MISSING:
        device["last_used"] = when
    device["attributes"] = construct(event, m.DEVICE_ATTRIBUTES)
    platform = rules.device_platform(event)
    if platform:
        device["platform"] = platform
    return {"type": "person", "action": "add_device", "identifiers": ids, "device": device}


def _alias(event: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "person", "action": "merge",
            **rules.merge_body(event["userId"], event["previousId"])}


def _group(event: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    return rules.group_object(event)


# The item builder of each event type (stage 2 of an event-stream input).
ITEMS: dict[str, Callable[[Mapping[str, Any], Mapping[str, Any]], dict[str, Any]]] = {
    "identify": _identify, "track": _activity("track"), "page": _activity("page"),
    "screen": _activity("screen"), "alias": _alias, "group": _group,
}


def record_item(event: Mapping[str, Any], object_type: Any,
                settings: Mapping[str, Any]) -> dict[str, Any]:
    if object_type is MISSING:
        raise ConfigError("Missing connection config")
    action = event.get("action")
    if object_type not in RECORD_OBJECTS:
        raise ConfigError(f'Unsupported object type: "{object_type}"')
    if object_type == "event" and action not in ("insert", "update"):
        raise ConfigError(f'"{action}" is not supported for object type "event"')
    rules.credentials(settings)
    key, value = record_identifier(event) or ("id", "")
    fields = dict(event.get("identifiers") or {})
    entry: dict[str, Any] = {"type": "person", "identifiers": {key: value}}
    if object_type == "event":
        name = fields.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidEvent("Event name is required for CustomerIO event records")
        entry.update(action="event", name=name)
        skipped = {key, "created_at", "name"}
    elif action == "delete":
        entry["action"] = "delete"
        skipped = None
    else:
        entry["action"] = "identify"
        skipped = {key, "created_at"}
    if fields.get("created_at") is not None:
        entry["timestamp"] = unix_seconds(fields["created_at"])
    if skipped is not None:
        attributes = {k: v for k, v in fields.items() if k not in skipped}
        if attributes:
            entry["attributes"] = attributes
    return entry


def build(item: BatchItem, settings: Mapping[str, Any], object_type: Any
          ) -> tuple[dict[str, Any], bytes]:
    """Stage 2 for one input that passed stage 1: the item and its compact JSON bytes (as
    JavaScript serialises it), or an AdapterError."""
    event = item.event
    if event.get("type") == "record":
        entry = record_item(event, object_type, settings)
    else:
        event = rules.with_retl_identity(event)
        rules.credentials(settings)
        entry = ITEMS[event["type"]](event, settings)
    encoded = orjson.dumps(entry)
    if len(encoded) > MAX_ITEM_BYTES:
        raise InvalidEvent(f"Event size ({len(encoded)} bytes) exceeds CustomerIO's 32KB "
                           "per-object limit.")
    return entry, encoded


# -- batching and order -------------------------------------------------------------------------

@dataclass
class _Built:
    item: BatchItem
    entry: dict[str, Any]
    encoded: bytes  # the entry as compact JSON: measured once, sent as these bytes


def batch(items: Sequence[BatchItem]) -> list[BatchOutput]:
    """Router mode v2 over the inputs, group by group (by Config, in order of appearance)."""
    groups: dict[bytes, list[BatchItem]] = {}
    for item in items:
        key = orjson.dumps(dict(item.settings), option=orjson.OPT_SORT_KEYS, default=str)
        groups.setdefault(key, []).append(item)
    outputs: list[BatchOutput] = []
    for group in groups.values():
        outputs += _group_outputs(group)
    return outputs


def _group_outputs(group: list[BatchItem]) -> list[BatchOutput]:
    settings = group[0].settings  # every item is built from the first input's destination
    object_type = next((get_path(i.extra, "connection.config.destination.object")
                        for i in group if "connection" in i.extra), MISSING)
    invalid: list[BatchOutput] = []
    passed: list[BatchItem] = []
    for item in group:
        error = validate(item)
        if error is not None:
            invalid.append(BatchOutput([item.key], error=error))
        else:
            passed.append(item)
    ordered = ([i for i in passed if not _dont_batch(i)]
               + [i for i in passed if _dont_batch(i)])
    built: list[_Built] = []
    singles: list[_Built] = []
    failed: list[BatchOutput] = []
    for item in ordered:
        try:
            one = _Built(item, *build(item, settings, object_type))
        except AdapterError as error:
            failed.append(BatchOutput([item.key], error=error))
            continue
        (singles if _dont_batch(item) else built).append(one)
    url = rules.host(settings) + m.BATCH
    headers = {**rules.credentials(settings), "Content-Type": "application/json"} \
        if built or singles else {}
    successes = [_request(url, headers, chunk) for chunk in _chunks(built)]
    successes += [_request(url, headers, [one]) for one in singles]
    successes.sort(key=lambda output: min(_job_id(k) for k in output.keys))
    return successes + invalid + failed


def _request(url: str, headers: Mapping[str, str], chunk: list[_Built]) -> BatchOutput:
    body = b'{"batch":[' + b",".join(b.encoded for b in chunk) + b"]}"
    request = HttpRequest("POST", url, dict(headers), json={"batch": [b.entry for b in chunk]},
                          data=body)
    return BatchOutput([b.item.key for b in chunk], [request], batched=True)


def _chunks(built: list[_Built]) -> list[list[_Built]]:
    """In order; a new chunk when `{"batch":[…, new]}` would pass 500,000 bytes."""
    chunks: list[list[_Built]] = []
    current: list[_Built] = []
    size = len(b'{"batch":[]}')
    for one in built:
        grown = size + len(one.encoded) + (1 if current else 0)
        if current and grown > MAX_BATCH_BYTES:
            chunks.append(current)
            current, grown = [], len(b'{"batch":[]}') + len(one.encoded)
        current.append(one)
        size = grown
    if current:
        chunks.append(current)
    return chunks


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


def _dont_batch(item: BatchItem) -> bool:
    return isinstance(item.key, Mapping) and item.key.get("dontBatch") is True


def _job_id(key: Any) -> Any:
    """Fixtures key items by their metadata (jobId); the worker by the delivery id."""
    if isinstance(key, Mapping):
        return key.get("jobId", 0)
    return key if isinstance(key, int | float) else 0
