"""Customer.io router mode v2 (customerio-behaviour.md, "Router mode v2"): every event one item
of POST …/api/v2/batch.

Per group of inputs sharing one Config: stage 1 validates every input's shape (messages written
`<path>: <text>`, joined with "; "), stage 2 builds the items of those that passed (the
`dontBatch` ones last), then the items are chunked under 500,000 bytes, the successes sorted by
their smallest job id, and the errors follow (stage 1, stage 2, stage 2 of `dontBatch`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
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
from adapters.customerio import transform as t
from adapters.mapping import (
    EMAIL,
    MISSING,
    USER_ID_ONLY,
    get_path,
    js_string,
    truthy,
    unix_seconds,
)

MAX_BATCH_BYTES = 500_000
MAX_ITEM_BYTES = 32_768
EVENT_TYPES = ("identify", "track", "page", "screen", "alias", "group")
RECORD_ACTIONS = ("insert", "update", "delete")
RECORD_OBJECTS = ("person", "event")
ID_FIELDS = ("userId", "anonymousId", "previousId", "groupId")
GATE_KEYS = ("userId", "anonymousId", "traits.email", "context.traits.email",
             "context.mappedToDestination")
RECORD_ID_KEYS = ("cio_id", "id", "email")
NO_IDENTITY = "message: userId, email or anonymousId is required"
NO_RECORD_ID = "message: A non-empty `id` or `email` identifier is required"
NAME_NOT_STRING = "Event Name type should be a string"
DEVICE_NOT_PRESENT = "userId/email or device_token not present"


# -- stage 1: shape -----------------------------------------------------------------------------

def js_type(value: Any) -> str:
    """The JavaScript type name zod reports (`received <T>`)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _options(values: Iterable[str]) -> str:
    return " | ".join(f"'{v}'" for v in values)


def _enum(path: str, container: Mapping[str, Any], key: str,
          allowed: Sequence[str]) -> str | None:
    if key not in container:
        return f"{path}: Required"
    value = container[key]
    if isinstance(value, str):
        return None if value in allowed else (
            f"{path}: Invalid enum value. Expected {_options(allowed)}, received '{value}'")
    return f"{path}: Expected {_options(allowed)}, received {js_type(value)}"


def config_problems(settings: Mapping[str, Any]) -> list[str]:
    """`destination.Config` problems in key order: siteID, apiKey, datacenter,
    deviceTokenEventName. Extra keys are allowed."""
    problems = []
    for key in ("siteID", "apiKey"):
        path = f"destination.Config.{key}"
        if key not in settings:
            problems.append(f"{path}: Required")
        elif not isinstance(settings[key], str):
            problems.append(f"{path}: Expected string, received {js_type(settings[key])}")
        elif settings[key] == "":
            problems.append(f"{path}: {key} is required")
    if "datacenter" in settings:
        problem = _enum("destination.Config.datacenter", settings, "datacenter", ("US", "EU"))
        if problem:
            problems.append(problem)
    token_event = settings.get("deviceTokenEventName", MISSING)
    if token_event is not MISSING and not isinstance(token_event, str):
        problems.append("destination.Config.deviceTokenEventName: Expected string, received "
                        f"{js_type(token_event)}")
    return problems


def event_problems(event: Mapping[str, Any]) -> list[str]:
    problems = []
    problem = _enum("message.type", event, "type", EVENT_TYPES)
    if problem:
        problems.append(problem)
    for key in ID_FIELDS:
        value = event.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, str | int
                                                                             | float)):
            problems.append(f"message.{key}: Invalid input")
    if problems:
        return problems
    if event["type"] == "alias":
        gate = truthy(event.get("userId")) and truthy(event.get("previousId"))
    else:
        gate = event["type"] == "group" or any(truthy(get_path(event, k)) for k in GATE_KEYS)
    return [] if gate else [NO_IDENTITY]


def record_problems(event: Mapping[str, Any], extra: Mapping[str, Any]) -> list[str]:
    problems = []
    action = _enum("message.action", event, "action", RECORD_ACTIONS)
    if action:
        problems.append(action)
    identifiers = event.get("identifiers", MISSING)
    if identifiers is MISSING:
        problems.append("message.identifiers: Required")
    elif not isinstance(identifiers, Mapping):
        problems.append(f"message.identifiers: Expected object, received {js_type(identifiers)}")
    if not problems and _record_identifier(event) is None:
        problems.append(NO_RECORD_ID)
    if "connection" in extra:
        problems += connection_problems(extra["connection"])
    return problems


def connection_problems(connection: Any) -> list[str]:
    if not isinstance(connection, Mapping):
        return [f"connection: Expected object, received {js_type(connection)}"]
    config = connection.get("config", MISSING)
    if config is MISSING:
        return ["connection.config: Required"]
    if not isinstance(config, Mapping):
        return [f"connection.config: Expected object, received {js_type(config)}"]
    destination = config.get("destination", MISSING)
    if destination is MISSING:
        return ["connection.config.destination: Required"]
    if not isinstance(destination, Mapping):
        return [f"connection.config.destination: Expected object, received "
                f"{js_type(destination)}"]
    path = "connection.config.destination"
    problems = []
    problem = _enum(f"{path}.object", destination, "object", RECORD_OBJECTS)
    if problem:
        problems.append(problem)
    sync = destination.get("syncMode", MISSING)
    if sync is not MISSING and not isinstance(sync, str):
        problems.append(f"{path}.syncMode: Expected string, received {js_type(sync)}")
    for key in ("identifierMappings", "fieldMappings"):
        value = destination.get(key, MISSING)
        if value is MISSING:
            continue
        if not isinstance(value, list):
            problems.append(f"{path}.{key}: Expected array, received {js_type(value)}")
            continue
        for index, pair in enumerate(value):
            if not isinstance(pair, Mapping):
                problems.append(f"{path}.{key}.{index}: Expected object, received "
                                f"{js_type(pair)}")
                continue
            for side in ("from", "to"):
                if side not in pair:
                    problems.append(f"{path}.{key}.{index}.{side}: Required")
                elif not isinstance(pair[side], str):
                    problems.append(f"{path}.{key}.{index}.{side}: Expected string, received "
                                    f"{js_type(pair[side])}")
    return problems


def validate(item: BatchItem) -> AdapterError | None:
    """Stage 1 for one input: None, or one 400 error whose class says its errorType
    (ConfigError when every problem is under destination or connection)."""
    event = item.event
    message = (record_problems(event, item.extra) if event.get("type") == "record"
               else event_problems(event))
    config = config_problems(item.settings)
    ordered = [p for p in message if p.startswith("message")] + config + [
        p for p in message if p.startswith("connection")]
    distinct = list(dict.fromkeys(ordered))
    if not distinct:
        return None
    text = "; ".join(distinct)
    if all(not p.startswith("message") for p in distinct):
        return ConfigError(text)
    return InvalidEvent(text)


# -- stage 2: items -----------------------------------------------------------------------------

def first_truthy(event: Mapping[str, Any], paths: Iterable[str]) -> Any:
    for path in paths:
        value = get_path(event, path)
        if truthy(value):
            return value
    return MISSING


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
    attributes = t.identify_attributes({k: v for k, v in event.items()
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
            name = event.get("name") if truthy(event.get("name")) else get_path(
                event, "properties.url")
            if not isinstance(name, str):
                raise InvalidEvent(NAME_NOT_STRING)
        else:
            screen = event.get("event") if truthy(event.get("event")) else get_path(
                event, "properties.name")
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
        when = t.event_time(event)
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
    when = t.event_time(event)
    if when is not MISSING:
        device["last_used"] = when
    context = {"device_os": "context.os.name", "device_model": "context.device.model",
               "app_version": "context.app.version", "device_locale": "context.locale"}
    attributes = {}
    for key, path in context.items():
        value = get_path(event, path)
        if truthy(value) or value == 0 or value is False:
            attributes[key] = value
    attributes.update(event.get("properties") or {})
    device["attributes"] = attributes
    platform = t.device_platform(event)
    if platform:
        device["platform"] = platform
    return {"type": "person", "action": "add_device", "identifiers": ids, "device": device}


def _alias(event: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    user_id, previous = event["userId"], event["previousId"]
    return {"type": "person", "action": "merge",
            "primary": {t.identifier_key(user_id): user_id},
            "secondary": {t.identifier_key(previous): previous}}


def _group(event: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    if not any(v not in (MISSING, None, "") for v in (event.get("groupId", MISSING),
                                                      get_path(event, "traits.groupId"))):
        raise InvalidEvent('Missing required value from "groupId"')
    return t.group_object(event)


# The item builder of each event type (stage 2 of an event-stream input).
ITEMS: dict[str, Callable[[Mapping[str, Any], Mapping[str, Any]], dict[str, Any]]] = {
    "identify": _identify, "track": _activity("track"), "page": _activity("page"),
    "screen": _activity("screen"), "alias": _alias, "group": _group,
}


def _record_identifier(event: Mapping[str, Any]) -> tuple[str, str] | None:
    fields = event.get("identifiers")
    if not isinstance(fields, Mapping):
        return None
    for key in RECORD_ID_KEYS:
        value = fields.get(key)
        if isinstance(value, str) and value:
            return key, value
    return None


def record_item(event: Mapping[str, Any], object_type: Any,
                settings: Mapping[str, Any]) -> dict[str, Any]:
    if object_type is MISSING:
        raise ConfigError("Missing connection config")
    action = event.get("action")
    if object_type not in RECORD_OBJECTS:
        raise ConfigError(f'Unsupported object type: "{object_type}"')
    if object_type == "event" and action not in ("insert", "update"):
        raise ConfigError(f'"{action}" is not supported for object type "event"')
    t.credentials(settings)
    key, value = _record_identifier(event) or ("id", "")
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
        event = t.with_retl_identity(event)
        t.credentials(settings)
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
    url = t.host(settings) + m.BATCH
    headers = {**t.credentials(settings), "Content-Type": "application/json"} \
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


def _dont_batch(item: BatchItem) -> bool:
    return isinstance(item.key, Mapping) and item.key.get("dontBatch") is True


def _job_id(key: Any) -> Any:
    """Fixtures key items by their metadata (jobId); the worker by the delivery id."""
    if isinstance(key, Mapping):
        return key.get("jobId", 0)
    return key if isinstance(key, int | float) else 0
