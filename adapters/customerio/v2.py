"""Customer.io router mode v2 (customerio-behaviour.md, "Router mode v2"): every event one item
of POST …/api/v2/batch.

Per group of inputs sharing one Config: stage 1 validates every input's shape (shape.py),
stage 2 makes an item of each input that passed (an event's call from calls.py, or a Reverse-ETL
record; the `dontBatch` ones last), then the items are chunked under 500,000 bytes, the
successes sorted by their smallest job id, and the errors follow (stage 1, stage 2, stage 2 of
`dontBatch`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
    by_settings,
    chunks_within,
    dont_batch,
    job_id,
)
from adapters.customerio import mappings as m
from adapters.customerio.calls import HANDLERS, V2, Call, credentials, host, with_retl_identity
from adapters.customerio.shape import RECORD_OBJECTS, config_problems, record_identifier, validate
from adapters.mapping import MISSING, get_path, unix_seconds

MAX_BATCH_BYTES = 500_000
MAX_ITEM_BYTES = 32_768
EMPTY_BATCH = len(b'{"batch":[]}')


def item_of(call: Call) -> dict[str, Any]:
    """The batch item of a call: an object, a merge, or a person's identify, device or event."""
    action = call.action
    if action == "object":
        return call.body or {}
    if action == "merge":
        return {"type": "person", "action": "merge", **(call.body or {})}
    entry: dict[str, Any] = {"type": "person", "action": action,
                             "identifiers": call.identifiers}
    if action == "identify":
        entry["attributes"] = call.attributes
    elif action == "delete_device":
        entry["device"] = {"token": call.token}
    elif action == "add_device":
        device: dict[str, Any] = {"token": call.token}
        if call.timestamp is not MISSING:
            device["last_used"] = call.timestamp
        device["attributes"] = call.attributes
        if call.platform:
            device["platform"] = call.platform
        entry["device"] = device
    else:
        entry["name"] = call.name
        entry["attributes"] = call.attributes if call.attributes is not None else {}
        if call.timestamp is not MISSING:
            entry["timestamp"] = call.timestamp
    return entry


def record_item(event: Mapping[str, Any], object_type: Any) -> dict[str, Any]:
    if object_type is MISSING:
        raise ConfigError("Missing connection config")
    action = event.get("action")
    if object_type not in RECORD_OBJECTS:
        raise ConfigError(f'Unsupported object type: "{object_type}"')
    if object_type == "event" and action not in ("insert", "update"):
        raise ConfigError(f'"{action}" is not supported for object type "event"')
    key, value = record_identifier(event) or ("id", "")
    fields = dict(event.get("identifiers") or {})
    entry: dict[str, Any] = {"type": "person", "identifiers": {key: value}}
    skipped = {key, "created_at"}
    if object_type == "event":
        name = fields.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidEvent("Event name is required for CustomerIO event records")
        entry.update(action="event", name=name)
        skipped.add("name")
    else:
        entry["action"] = "delete" if action == "delete" else "identify"
    if fields.get("created_at") is not None:
        entry["timestamp"] = unix_seconds(fields["created_at"])
    attributes = {k: v for k, v in fields.items() if k not in skipped}
    if attributes and entry["action"] != "delete":  # a deleted person keeps no attributes
        entry["attributes"] = attributes
    return entry


def build(item: BatchItem, settings: Mapping[str, Any],
          object_type: Any) -> tuple[dict[str, Any], bytes]:
    """Stage 2 for one input that passed stage 1: the item and its compact JSON bytes (as
    JavaScript serialises it), or an AdapterError."""
    event = item.event
    if event.get("type") == "record":
        entry = record_item(event, object_type)
    else:
        event = with_retl_identity(event)
        entry = item_of(HANDLERS[event["type"]](event, settings, V2))
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
    return [output for group in by_settings(items) for output in _group_outputs(group)]


def _group_outputs(group: list[BatchItem]) -> list[BatchOutput]:
    settings = group[0].settings  # every item is built from the first input's destination
    object_type = next((get_path(i.extra, "connection.config.destination.object")
                        for i in group if "connection" in i.extra), MISSING)
    config: dict[int, list[str]] = {}  # by settings object, as `batch` groups them
    invalid: list[BatchOutput] = []
    valid: list[BatchItem] = []
    for one in group:
        problems = config.get(id(one.settings))
        if problems is None:
            problems = config[id(one.settings)] = config_problems(one.settings)
        error = validate(one, problems)
        if error is None:
            valid.append(one)
        else:
            invalid.append(BatchOutput([one.key], error=error))
    if not valid:
        return invalid
    # stage 1 passed, so the group's Config (all equal) has a non-empty siteID and apiKey
    headers = {**credentials(settings), "Content-Type": "application/json"}
    built: list[_Built] = []
    singles: list[_Built] = []  # `dontBatch`: each sent alone, after the others
    failed: list[BatchOutput] = []
    failed_singles: list[BatchOutput] = []
    for one in valid:
        alone = dont_batch(one)
        try:
            done = _Built(one, *build(one, settings, object_type))
        except AdapterError as error:
            (failed_singles if alone else failed).append(BatchOutput([one.key], error=error))
        else:
            (singles if alone else built).append(done)
    url = host(settings) + m.BATCH
    sizes = [len(one.encoded) for one in built]
    chunks = chunks_within(built, sizes, MAX_BATCH_BYTES, EMPTY_BATCH)
    chunks += [[one] for one in singles]
    successes = [_request(url, headers, chunk) for chunk in chunks]
    successes.sort(key=lambda output: min(job_id(k) for k in output.keys))
    return successes + invalid + failed + failed_singles


def _request(url: str, headers: Mapping[str, str], chunk: list[_Built]) -> BatchOutput:
    body = b'{"batch":[' + b",".join(b.encoded for b in chunk) + b"]}"
    request = HttpRequest("POST", url, dict(headers), json={"batch": [b.entry for b in chunk]},
                          data=body)
    return BatchOutput([b.item.key for b in chunk], [request], batched=True)


def rejected_items(status: int, body: Any) -> dict[int, str]:
    """A 207 names the items that failed by `batch_index`; they fail, the others succeed."""
    if status != 207 or not isinstance(body, Mapping):
        return {}
    return {error["batch_index"]: f"reason: {error.get('reason')}, field: {error.get('field')}"
                                  f", message: {error.get('message')}"
            for error in body.get("errors") or []
            if isinstance(error, Mapping) and isinstance(error.get("batch_index"), int)}
