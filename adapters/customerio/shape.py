"""Customer.io router mode v2, stage 1 (customerio-behaviour.md, "Router mode v2"): the
shape of every input is checked before any item is built, as the reference's zod schema does;
messages are written `<path>: <text>` and joined with "; "."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from adapters.base import AdapterError, BatchItem, ConfigError, InvalidEvent
from adapters.mapping import MISSING, get_path, truthy

EVENT_TYPES = ("identify", "track", "page", "screen", "alias", "group")
RECORD_ACTIONS = ("insert", "update", "delete")
RECORD_OBJECTS = ("person", "event")
ID_FIELDS = ("userId", "anonymousId", "previousId", "groupId")
GATE_KEYS = ("userId", "anonymousId", "traits.email", "context.traits.email",
             "context.mappedToDestination")
RECORD_ID_KEYS = ("cio_id", "id", "email")
NO_IDENTITY = "message: userId, email or anonymousId is required"
NO_RECORD_ID = "message: A non-empty `id` or `email` identifier is required"


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
    if not problems and record_identifier(event) is None:
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
