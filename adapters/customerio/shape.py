"""Customer.io router mode v2, stage 1 (customerio-behaviour.md, "Router mode v2"): the
shape of every input is checked before any item is built, as the reference's zod schema does;
messages are written `<path>: <text>` and joined with "; ". The schemas are data (`Rule`s):
one loop checks an object's keys and hands only a failed value to `value_problems`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adapters.base import AdapterError, BatchItem, ConfigError, InvalidEvent
from adapters.mapping import MISSING, first_truthy, js_type, truthy

RECORD_OBJECTS = ("person", "event")
ID_TYPES = (str, int, float)  # a string or a number: a JSON boolean is no id
GATE_KEYS = ("userId", "anonymousId", "traits.email", "context.traits.email",
             "context.mappedToDestination")
RECORD_ID_KEYS = ("cio_id", "id", "email")
NO_IDENTITY = "message: userId, email or anonymousId is required"
NO_RECORD_ID = "message: A non-empty `id` or `email` identifier is required"


@dataclass(frozen=True, slots=True)
class Rule:
    """zod's schema of one value. `kind` is a JavaScript type name ("string", "object",
    "array"), "id" (a string, a number or null) or the allowed strings of an enum. An object's
    `rows` (key, kind, required, rule) and an array's `each` element are checked only once
    the value has its kind."""

    kind: str | tuple[str, ...]
    required: bool = True
    nonempty: bool = False  # "" fails with "<key> is required" (zod's `.min(1)`)
    rows: tuple[tuple[str, Any, bool, Rule], ...] = ()
    each: Rule | None = None


def obj(**keys: Rule) -> Rule:
    """A required object with these keys (other keys are not checked)."""
    return Rule("object", rows=tuple((key, rule.kind, rule.required, rule)
                                     for key, rule in keys.items()))


STRING, OPTIONAL = Rule("string"), Rule("string", required=False)
MAPPINGS = Rule("array", required=False, each=obj(**{"from": STRING, "to": STRING}))
CONFIG = obj(siteID=Rule("string", nonempty=True), apiKey=Rule("string", nonempty=True),
             datacenter=Rule(("US", "EU"), required=False), deviceTokenEventName=OPTIONAL)
EVENT = obj(type=Rule(("identify", "track", "page", "screen", "alias", "group")),
            **{key: Rule("id", required=False)
               for key in ("userId", "anonymousId", "previousId", "groupId")})
RECORD = obj(action=Rule(("insert", "update", "delete")), identifiers=obj())
CONNECTION = obj(config=obj(destination=obj(
    object=Rule(RECORD_OBJECTS), syncMode=OPTIONAL, identifierMappings=MAPPINGS,
    fieldMappings=MAPPINGS)))


def problems(path: str, node: Mapping[str, Any],
             rows: tuple[tuple[str, Any, bool, Rule], ...]) -> list[str]:
    """zod's problems with an object's keys, in order. One loop: the checks of nearly every
    input (which passes) are made here, and only a failed value goes to `value_problems`."""
    found: list[str] = []
    for key, kind, required, rule in rows:
        value = node.get(key, MISSING)
        if value is MISSING:
            if not required:
                continue
        elif kind == "id":
            if value is None or value.__class__ is str or (
                    value.__class__ is not bool and isinstance(value, ID_TYPES)):
                continue
        elif kind.__class__ is tuple:
            if isinstance(value, str) and value in kind:
                continue
        elif kind == "string" and value.__class__ is str and not (rule.nonempty and value == ""):
            continue
        # what is left failed, or is an object or array with its own keys or elements
        found += value_problems(f"{path}.{key}", value, rule)
    return found


def value_problems(path: str, value: Any, rule: Rule) -> list[str]:
    """zod's problems with one value (MISSING: absent), then its keys' or elements'."""
    if value is MISSING:
        return [f"{path}: Required"] if rule.required else []
    kind = rule.kind
    if isinstance(kind, tuple):
        options = " | ".join(f"'{v}'" for v in kind)
        if not isinstance(value, str):
            return [f"{path}: Expected {options}, received {js_type(value)}"]
        return [f"{path}: Invalid enum value. Expected {options}, received '{value}'"]
    if kind == "id":
        return [f"{path}: Invalid input"]
    if not (isinstance(value, Mapping) if kind == "object" else js_type(value) == kind):
        return [f"{path}: Expected {kind}, received {js_type(value)}"]
    if rule.nonempty and value == "":
        return [f"{path}: {path.rsplit('.', 1)[-1]} is required"]
    found = problems(path, value, rule.rows) if rule.rows else []
    for index, element in enumerate(value if rule.each is not None else ()):
        found += value_problems(f"{path}.{index}", element, rule.each)
    return found


def config_problems(settings: Mapping[str, Any]) -> list[str]:
    """`destination.Config` problems in key order. Extra keys are allowed."""
    return problems("destination.Config", settings, CONFIG.rows)


def validate(item: BatchItem, config: list[str]) -> AdapterError | None:
    """Stage 1 for one input, given its Config's problems: None, or one 400 error whose class
    says its errorType (ConfigError when no problem is the message's)."""
    event, connection = item.event, []
    if event.get("type") == "record":
        message = problems("message", event, RECORD.rows)
        if not message and record_identifier(event) is None:
            message = [NO_RECORD_ID]
        if "connection" in item.extra:
            connection = value_problems("connection", item.extra["connection"], CONNECTION)
    else:
        message = problems("message", event, EVENT.rows)
        if not message and not identified(event):
            message = [NO_IDENTITY]
    if not message and not config and not connection:
        return None
    text = "; ".join(dict.fromkeys(message + config + connection))
    return InvalidEvent(text) if message else ConfigError(text)


def identified(event: Mapping[str, Any]) -> bool:
    """The reference's gate: an alias needs both ids, a group nothing, the others someone."""
    kind = event["type"]
    if kind == "alias":
        return truthy(event.get("userId")) and truthy(event.get("previousId"))
    return kind == "group" or first_truthy(event, GATE_KEYS) is not MISSING


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
