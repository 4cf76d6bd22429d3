"""One checker for "a TOML table against a declared shape", with one wording for every table
the gateway reads: the config's own tables, a destination entry, its `limits` and a `filters`
table (docs/design.md §4: a mistake in the file stops start-up with a message naming the field).

A shape is an ordered mapping of key → `Key`; a settings dataclass declares its shape through
its fields (`shape_of`), with bounds in the field metadata (`at_least`, `between`). The checker
says what is wrong without saying where: each caller puts its file and table in front.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from adapters.known import unknown_key

# What a key may hold, and the words that say so: "field 'x': must be <words>".
KINDS = {
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
    "strings": "a list of strings",
    "table": "a table",
    "choice": "one of",
    "any": "",  # checked by the caller (a nested table, a list of paths…)
}


class TableError(ValueError):
    """A table does not fit its shape; the message names the field, not the file."""


@dataclass(frozen=True)
class Key:
    """One declared key: its kind, whether it must be given, and its bounds."""

    kind: str
    required: bool = False  # a required "str" must also be non-blank
    optional: bool = False  # None is taken as "not set" ("auto" from the environment)
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    what: str = ""  # says the kind more precisely ("a list of source names")

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind {self.kind!r}")


ANY = Key("any")  # a key whose value the caller checks itself (a nested table, a list of paths)


def at_least(minimum: int, default: int) -> Any:
    """A whole-number field that is meaningless below `minimum` (checked at load)."""
    return field(default=default, metadata={"min": minimum})


def between(low: float, high: float, default: Any) -> Any:
    """A number field that must lie in [low, high] (checked at load)."""
    return field(default=default, metadata={"min": low, "max": high})


def one_of(choices: tuple[str, ...], default: str) -> Any:
    """A text field that must be one of `choices` (checked at load)."""
    return field(default=default, metadata={"choices": choices})


# `int | None` is a bound left to a default (None is not a value one may write);
# `bool | None` is a switch that may be left to "auto".
_TYPE_KINDS = {"int": "int", "int | None": "int", "float": "float", "bool": "bool",
               "bool | None": "bool", "str": "str", "tuple[str, ...]": "strings"}


def shape_of(cls: type) -> dict[str, Key]:
    """A settings dataclass's shape: its fields in declared order, kinds from their type
    annotations, bounds from their metadata."""
    return {f.name: Key("choice" if "choices" in f.metadata
                        else _TYPE_KINDS.get(str(f.type), "any"),
                        low=f.metadata.get("min"), high=f.metadata.get("max"),
                        optional=str(f.type) == "bool | None",
                        choices=f.metadata.get("choices", ()))
            for f in dataclasses.fields(cls)}


def check_table(values: Any, shape: Mapping[str, Key]) -> dict[str, Any]:
    """`values` if it is a table of known keys each fitting its `Key` (tuples for lists of
    strings, floats for numbers), checked in the file's order; else TableError on the first
    problem. A key left out is the caller's default (`value_of` asks for a required one)."""
    check_keys(values, shape)
    return {name: check_value(name, value, shape[name]) for name, value in values.items()}


def check_keys(values: Any, shape: Mapping[str, Key]) -> dict[str, Any]:
    """`values` if it is a table whose every key is declared (a close name is suggested)."""
    if not isinstance(values, dict):
        raise TableError("must be a table")
    problem = unknown_key(values, list(shape))
    if problem:
        raise TableError(problem)
    return values


def value_of(values: Mapping[str, Any], name: str, shape: Mapping[str, Key],
             default: Any = None) -> Any:
    """One declared key of a table whose keys `check_keys` passed, checked where the caller
    needs it (an entry checks its keys in the order their meaning depends on): `default` when
    it is not given, unless the key is required."""
    key = shape[name]
    if name not in values and not key.required:
        return default
    return check_value(name, values.get(name), key)


def check_value(name: str, value: Any, key: Key) -> Any:
    """One value against its Key: the value to use, or TableError naming the field."""
    kind = key.kind
    if key.optional and value is None:
        return None
    if key.required and kind == "str" and (not isinstance(value, str) or not value.strip()):
        raise TableError(f"field {name!r}: required, a non-empty string")
    if kind in ("int", "float"):
        return _number(name, value, key)
    if kind == "choice":
        if value not in key.choices:
            raise TableError(f"field {name!r}: must be one of {', '.join(key.choices)}, "
                             f"not {value!r}")
        return value
    if kind == "strings":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _wrong(name, key)
        return tuple(value)
    fits = {"bool": lambda: isinstance(value, bool),
            "str": lambda: isinstance(value, str),
            "table": lambda: isinstance(value, dict)}.get(kind, lambda: True)
    if not fits():
        raise _wrong(name, key)
    return value


def _number(name: str, value: Any, key: Key) -> int | float:
    """A whole number (kind "int") or any finite number (kind "float"). With both bounds the
    refusal says the range and the value; else the lower bound, 0 when none is declared
    (counts, sizes and durations are never negative)."""
    whole = key.kind == "int"
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    ok = ok and (isinstance(value, int) if whole else math.isfinite(value))
    if key.high is not None:
        if not ok or not key.low <= value <= key.high:  # type: ignore[operator]
            raise TableError(f"field {name!r}: must be {_words(key)} from {key.low:g} to "
                             f"{key.high:g}, not {value!r}")
    elif not ok:
        raise _wrong(name, key)
    elif value < (key.low or 0):
        raise TableError(f"field {name!r}: must be at least {key.low or 0}")
    return value if whole else float(value)


def _words(key: Key) -> str:
    return key.what or KINDS[key.kind]


def _wrong(name: str, key: Key) -> TableError:
    return TableError(f"field {name!r}: must be {_words(key)}")
