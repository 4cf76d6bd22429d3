"""Customer.io router mode v2, stage 1 (customerio-behaviour.md, "Router mode v2"): the
shape of every input is checked before any item is built, as the reference's zod schema does;
messages are written `<path>: <text>` and joined with "; "."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.base import AdapterError, BatchItem, ConfigError, InvalidEvent
from adapters.mapping import MISSING, get_path, truthy

EVENT_TYPES = ("identify", "track", "page", "screen", "alias", "group")
RECORD_ACTIONS = ("insert", "update", "delete")
RECORD_OBJECTS = ("person", "event")
ID_FIELDS = ("userId", "anonymousId", "previousId", "groupId")
ID_TYPES = (str, int, float)  # a string or a number: a JSON boolean is no id
GATE_KEYS = ("userId", "anonymousId", "traits.email", "context.traits.email",
             "context.mappedToDestination")
RECORD_ID_KEYS = ("cio_id", "id", "email")
NO_IDENTITY = "message: userId, email or anonymousId is required"
NO_RECORD_ID = "message: A non-empty `id` or `email` identifier is required"


JS_TYPES = {bool: "boolean", int: "number", float: "number", str: "string", list: "array"}


def js_type(value: Any) -> str:
    """The JavaScript type name zod reports (`received <T>`)."""
    return "null" if value is None else JS_TYPES.get(type(value), "object")


def _check(path: str, value: Any, kind: str | tuple[str, ...],
           required: bool = True) -> list[str]:
    """zod's problem with one value (MISSING: absent): `kind` is a JavaScript type name
    ("string", "object", "array") or the allowed strings of an enum."""
    if value is MISSING:
        return [f"{path}: Required"] if required else []
    if isinstance(kind, tuple):
        if isinstance(value, str) and value in kind:
            return []
        options = " | ".join(f"'{v}'" for v in kind)
        if not isinstance(value, str):
            return [f"{path}: Expected {options}, received {js_type(value)}"]
        return [f"{path}: Invalid enum value. Expected {options}, received '{value}'"]
    ok = isinstance(value, Mapping) if kind == "object" else js_type(value) == kind
    return [] if ok else [f"{path}: Expected {kind}, received {js_type(value)}"]


def config_problems(settings: Mapping[str, Any]) -> list[str]:
    """`destination.Config` problems in key order: siteID, apiKey, datacenter,
    deviceTokenEventName. Extra keys are allowed."""
    problems = []
    for key in ("siteID", "apiKey"):
        path = f"destination.Config.{key}"
        found = _check(path, settings.get(key, MISSING), "string")
        problems += found or ([f"{path}: {key} is required"] if settings[key] == "" else [])
    for key, kind in (("datacenter", ("US", "EU")), ("deviceTokenEventName", "string")):
        problems += _check(f"destination.Config.{key}", settings.get(key, MISSING), kind,
                           required=False)
    return problems


def event_problems(event: Mapping[str, Any]) -> list[str]:
    problems = _check("message.type", event.get("type", MISSING), EVENT_TYPES)
    for key in ID_FIELDS:
        value = event.get(key)
        if value is not None and (value.__class__ is bool or not isinstance(value, ID_TYPES)):
            problems.append(f"message.{key}: Invalid input")
    if problems:
        return problems
    if event["type"] == "alias":
        gate = truthy(event.get("userId")) and truthy(event.get("previousId"))
    else:
        gate = event["type"] == "group" or any(truthy(get_path(event, k)) for k in GATE_KEYS)
    return [] if gate else [NO_IDENTITY]


def record_problems(event: Mapping[str, Any], extra: Mapping[str, Any]) -> list[str]:
    problems = (_check("message.action", event.get("action", MISSING), RECORD_ACTIONS)
                + _check("message.identifiers", event.get("identifiers", MISSING), "object"))
    if not problems and record_identifier(event) is None:
        problems.append(NO_RECORD_ID)
    if "connection" in extra:
        problems += connection_problems(extra["connection"])
    return problems


def connection_problems(connection: Any) -> list[str]:
    node, path = connection, "connection"
    for key in ("config", "destination", None):
        found = _check(path, node, "object")
        if found or key is None:
            break
        node, path = node.get(key, MISSING), f"{path}.{key}"
    if found:
        return found
    problems = (_check(f"{path}.object", node.get("object", MISSING), RECORD_OBJECTS)
                + _check(f"{path}.syncMode", node.get("syncMode", MISSING), "string", False))
    for key in ("identifierMappings", "fieldMappings"):
        pairs = node.get(key, MISSING)
        found = _check(f"{path}.{key}", pairs, "array", required=False)
        problems += found
        for index, pair in enumerate([] if found or pairs is MISSING else pairs):
            where = f"{path}.{key}.{index}"
            problems += _check(where, pair, "object") or [
                p for side in ("from", "to")
                for p in _check(f"{where}.{side}", pair.get(side, MISSING), "string")]
    return problems


def validate(item: BatchItem, config: list[str]) -> AdapterError | None:
    """Stage 1 for one input, given its Config's problems: None, or one 400 error whose class
    says its errorType (ConfigError when every problem is under destination or connection)."""
    event = item.event
    message = (record_problems(event, item.extra) if event.get("type") == "record"
               else event_problems(event))
    if not message and not config:
        return None
    ordered = [p for p in message if p.startswith("message")] + config + [
        p for p in message if p.startswith("connection")]
    distinct = list(dict.fromkeys(ordered))
    if not distinct:
        return None
    text = "; ".join(distinct)
    if all(not p.startswith("message") for p in distinct):
        return ConfigError(text)
    return InvalidEvent(text)


def record_identifier(event: Mapping[str, Any]) -> tuple[str, str] | None:
    """The first non-empty record identifier (cio_id, id, email) as (key, value)."""
    fields = event.get("identifiers")
    if not isinstance(fields, Mapping):
        return None
    for key in RECORD_ID_KEYS:
        value = fields.get(key)
        if isinstance(value, str) and value:
            return key, value
    return None
