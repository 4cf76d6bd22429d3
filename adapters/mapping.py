"""The one mapping engine: declarative rows (target key ← source paths) shared by every adapter.

Semantics follow the reference transformer (common-conventions.md): a row's sources are tried in
order and the first *present* value wins (present = not null/missing, not "", not NaN); a row
with a single path (a str, not a tuple) takes the value as it is and writes it only when it is
truthy, 0 or false. Shared path lists are named constants below, not magic strings.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from adapters.base import InvalidEvent

MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()

Paths = str | tuple[str, ...]

# Shared path lists, in priority order (common-conventions.md "Shared path lists").
USER_ID_ONLY = ("userId", "traits.userId", "traits.id", "context.traits.userId",
                "context.traits.id")
USER_ID = (*USER_ID_ONLY, "anonymousId")
EMAIL_ONLY = ("traits.email", "context.traits.email", "properties.email")
EMAIL = (*EMAIL_ONLY, "context.externalId.0.id")
PHONE = ("traits.phone", "context.traits.phone", "properties.phone")
NAME = ("traits.name", "context.traits.name")
FIRST_NAME = tuple(f"{root}.{key}" for root in ("traits", "context.traits")
                   for key in ("firstName", "firstname", "first_name"))
LAST_NAME = tuple(f"{root}.{key}" for root in ("traits", "context.traits")
                  for key in ("lastName", "lastname", "last_name"))
WEBSITE = ("traits.website", "context.traits.website", "properties.website")
ADDRESS = ("traits.address", "context.traits.address")
TRAITS = ("traits", "context.traits")
CREATED_AT_ONLY = ("traits.createdAt", "context.traits.createdAt")
HISTORICAL_TIMESTAMP = ("timestamp", "originalTimestamp")
GROUP_ID = ("groupId", "traits.groupId")


def traits_and_context(key: str) -> tuple[str, str]:
    """`traits.<key>`, then `context.traits.<key>`: the most common row shape."""
    return (f"traits.{key}", f"context.traits.{key}")


@dataclass(frozen=True)
class Field:
    """One row: `dest` (a dot path in the output) ← the first present of `sources`."""

    dest: str
    sources: Paths
    required: bool = False
    fmt: str | None = None  # a key of FORMATTERS
    default: Any = MISSING
    exclude: tuple[str, ...] = ()  # keys dropped from an object value
    label: str | None = None  # the source a "Missing required value" error names, when the
    #                            reference names a path list by its name rather than its paths
    spread: bool = False  # merge an object value's keys into `dest` ("": the top level), as
    #                       JavaScript's `{...value}` does; a value that is no object adds nothing
    pick: str = ""  # how `sources` choose, when not as above: "truthy" (`a || b`, nothing when
    #                 all are falsy) or "defined" (`a ?? b`: the first not null/missing)


def get_path(obj: Any, path: str) -> Any:
    """Read a dot path; a numeric segment indexes an array. Absent → MISSING. The hottest
    function of every adapter: paths are split once (`_segments`), and plain dicts (what
    JSON decodes to) skip the abstract `Mapping` check."""
    node = obj
    for part, index in _segments(path):
        if node.__class__ is dict or isinstance(node, Mapping):
            node = node.get(part, MISSING)
        elif index is not None and isinstance(node, list):
            node = node[index] if index < len(node) else MISSING
        else:
            return MISSING
        if node is MISSING:
            return MISSING
    return node


@functools.lru_cache(maxsize=4096)
def _segments(path: str) -> tuple[tuple[str, int | None], ...]:
    """A dot path's segments, each with its array index when it is numeric."""
    return tuple((part, int(part) if part.isascii() and part.isdigit() else None)
                 for part in path.split("."))


def is_present(value: Any) -> bool:
    if value is MISSING or value is None or value == "":
        return False
    return not (isinstance(value, float) and math.isnan(value))


def truthy(value: Any) -> bool:
    """JavaScript truthiness: 0, false, "", null, NaN and missing are falsy; {} and [] are not."""
    if value is MISSING or value is None or value is False or value == "":
        return False
    if isinstance(value, bool):
        return True
    if isinstance(value, int | float):
        return value != 0 and not (isinstance(value, float) and math.isnan(value))
    return True


def first_present(event: Any, paths: Iterable[str]) -> Any:
    for path in paths:
        value = get_path(event, path)
        if is_present(value):
            return value
    return MISSING


def first_truthy(event: Any, paths: Iterable[str]) -> Any:
    """The first truthy value (JavaScript's `a || b` when every operand must count), else
    MISSING: unlike `first_present`, 0 and false are passed over too."""
    for path in paths:
        value = get_path(event, path)
        if truthy(value):
            return value
    return MISSING


def first_defined(event: Any, paths: Iterable[str]) -> Any:
    """JavaScript's `a ?? b`: the first value that is neither null nor missing ("", 0 and
    false count), else MISSING."""
    for path in paths:
        value = get_path(event, path)
        if value is not None and value is not MISSING:
            return value
    return MISSING


def either(event: Any, paths: tuple[str, ...]) -> Any:
    """JavaScript's `a || b || c`: the first truthy value, else the last value as it is (so
    a falsy last operand, or MISSING, comes back unchanged)."""
    *first, last = paths
    value = first_truthy(event, first)
    return get_path(event, last) if value is MISSING else value


def resolve(event: Any, sources: Paths, pick: str = "") -> Any:
    if pick:
        return PICKS[pick](event, (sources,) if isinstance(sources, str) else sources)
    if isinstance(sources, str):
        value = get_path(event, sources)
        if truthy(value) or value == 0 or value is False:
            return value
        return MISSING
    return first_present(event, sources)


def describe_paths(sources: Paths) -> str:
    """As the reference prints them: `"event"` or `["timestamp","originalTimestamp"]`."""
    return json.dumps(sources if isinstance(sources, str) else list(sources),
                      separators=(",", ":"))


def construct(event: Any, fields: Iterable[Field]) -> dict[str, Any]:
    """Build a payload from rows; a required row with no value raises InvalidEvent."""
    out: dict[str, Any] = {}
    for row in fields:
        value = resolve(event, row.sources, row.pick)
        if value is MISSING:
            if row.required:
                named = json.dumps(row.label) if row.label else describe_paths(row.sources)
                raise InvalidEvent(f"Missing required value from {named}")
            if row.default is MISSING:
                continue
            value = row.default
        if row.exclude and isinstance(value, Mapping):
            value = {k: v for k, v in value.items() if k not in row.exclude}
        if row.fmt:
            value = FORMATTERS[row.fmt](value)
            if value is MISSING:
                continue
        if row.spread:
            if isinstance(value, Mapping):
                node = out
                for part in row.dest.split(".") if row.dest else ():
                    node = node.setdefault(part, {})
                node.update(value)
            continue
        if "." in row.dest:
            set_path(out, row.dest, value)
        else:
            out[row.dest] = value
    return out


def set_path(out: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = out
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def drop_empty(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Drop null/undefined keys at the top level only (nested objects are left alone)."""
    return {k: v for k, v in payload.items() if v is not None and v is not MISSING}


def parse_date(value: Any) -> datetime | None:
    """An ISO-8601 string (offsets honoured) or epoch milliseconds → aware datetime."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value / 1000, UTC)
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith(("z", "Z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def unix_seconds(value: Any) -> int | None:
    """Epoch milliseconds / 1000, floored (common-conventions.md); None when not a date."""
    parsed = parse_date(value)
    if parsed is None:
        return None
    return math.floor(parsed.timestamp())


def js_string(value: Any) -> str:
    """String(value) as JavaScript prints it (numbers without a trailing .0, booleans lower)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if value is None:
        return "null"
    return str(value)


JS_TYPES = {bool: "boolean", int: "number", float: "number", str: "string", list: "array"}


def js_type(value: Any) -> str:
    """The type name JavaScript validators report for a JSON value (`typeof`, with null and
    array told apart, as zod's `received <T>` does)."""
    return "null" if value is None else JS_TYPES.get(type(value), "object")


FORMATTERS: dict[str, Callable[[Any], Any]] = {
    "string": js_string,
    "unix_seconds": lambda v: MISSING if unix_seconds(v) is None else unix_seconds(v),
    "unix_seconds_or_null": unix_seconds,  # no date → null, kept (the reference's NaN)
}
PICKS: dict[str, Callable[[Any, tuple[str, ...]], Any]] = {
    "truthy": first_truthy, "defined": first_defined}
