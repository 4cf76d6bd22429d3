"""The `[identity]` table: which values never link profiles, and how many keys one profile holds.

Its own module of the config package (load.py only calls `load`), so the identity rules and
their checks sit together:

    [identity]
    blocked_values = […]                 # replaces the default list below (rarely wanted)
    extra_blocked_values = ["n/a", "-"]  # added to the default list (or to blocked_values)
    alias_merges_identified = false      # alias may merge two profiles that both hold a userId
    [identity.limits]                    # the most keys of each kind one profile may hold
    userId = 1
    email = 5
    anonymousId = 1000

Values are compared trimmed and case-insensitively; a blocked value is stored on the event as
sent but never finds or links a profile (README "Identity").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from adapters.known import unknown_key

KINDS = ("userId", "anonymousId", "email")
# What SDK bugs and placeholder forms send in place of an id: never a person (PostHog refuses
# the same list; Segment Unify calls these blocked values).
DEFAULT_BLOCKED_VALUES = (
    "", "undefined", "null", "none", "nan", "0", "anonymous", "guest", "unknown",
    "[object object]", "true", "false", "id", "user_id", "distinct_id", "email",
    "not_authenticated", "00000000-0000-0000-0000-000000000000")
DEFAULT_LIMITS = {"userId": 1, "email": 5, "anonymousId": 1000}
MAX_BLOCKED_VALUES = 1000
MAX_BLOCKED_LENGTH = 500  # as long as a stored key
MAX_LIMIT = 1_000_000
TABLE_KEYS = ("blocked_values", "extra_blocked_values", "limits", "alias_merges_identified")


def normal_value(value: str) -> str:
    """How a value is compared with the blocked list: trimmed, case-folded."""
    return value.strip().casefold()


@dataclass(frozen=True)
class IdentitySettings:
    blocked: frozenset[str] = frozenset(normal_value(v) for v in DEFAULT_BLOCKED_VALUES)
    limits: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    alias_merges_identified: bool = False
    replaced_defaults: bool = False  # `blocked_values` was given (for `gateway check`)
    lengths: frozenset[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "lengths", frozenset(len(v) for v in self.blocked))

    def is_blocked(self, value: str) -> bool:
        """`value`, trimmed and case-folded, is a blocked value. The hot path (two keys a
        message): an ASCII value with no space at either end, of a length no blocked value has,
        is not one — decided without folding it (ASCII folds to the same length)."""
        if value.isascii() and len(value) not in self.lengths and value and \
                not value[0].isspace() and not value[-1].isspace():
            return False
        return normal_value(value) in self.blocked

    def describe(self) -> str:
        """One line for `gateway check`."""
        limits = ", ".join(f"{kind} {self.limits[kind]}" for kind in KINDS)
        origin = "own list" if self.replaced_defaults else "default list"
        extra = len(self.blocked - DEFAULT_BLOCKED) if not self.replaced_defaults else 0
        blocked = f"{len(self.blocked)} blocked values ({origin}" + (
            f" + {extra} added)" if extra else ")")
        alias = "alias may merge identified profiles" if self.alias_merges_identified else \
            "alias never merges two identified profiles"
        return f"{blocked}; at most {limits} per profile; {alias}"


DEFAULT_BLOCKED = IdentitySettings().blocked
DEFAULT_SETTINGS = IdentitySettings()


def load(raw: Any, where: str, error: type[Exception]) -> IdentitySettings:
    """`parse`, with a mistake raised as `error` (the config's ConfigFileError) saying the file
    and the table, as every other config mistake does."""
    try:
        return parse(raw)
    except ValueError as exc:
        raise error(f"{where}: [identity]: {exc}") from None


def parse(raw: Any) -> IdentitySettings:
    """The `[identity]` table → IdentitySettings, or ValueError naming the field at fault."""
    if raw is None:
        return DEFAULT_SETTINGS
    if not isinstance(raw, Mapping):
        raise ValueError("must be a table")
    problem = unknown_key(raw, TABLE_KEYS)
    if problem:
        raise ValueError(problem)
    replaced = "blocked_values" in raw
    base = _values(raw, "blocked_values") if replaced else DEFAULT_BLOCKED_VALUES
    blocked = frozenset(normal_value(v) for v in (*base, *_values(raw, "extra_blocked_values")))
    if len(blocked) > MAX_BLOCKED_VALUES:
        raise ValueError(f"at most {MAX_BLOCKED_VALUES} blocked values in all")
    alias = raw.get("alias_merges_identified", False)
    if not isinstance(alias, bool):
        raise ValueError("field 'alias_merges_identified': must be true or false")
    return IdentitySettings(blocked=blocked, limits=_limits(raw.get("limits", {})),
                            alias_merges_identified=alias, replaced_defaults=replaced)


def _values(raw: Mapping[str, Any], name: str) -> tuple[str, ...]:
    values = raw.get(name, [])
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ValueError(f"field {name!r}: must be a list of strings")
    if len(values) > MAX_BLOCKED_VALUES:
        raise ValueError(f"field {name!r}: at most {MAX_BLOCKED_VALUES} values")
    for value in values:
        if len(value) > MAX_BLOCKED_LENGTH:
            raise ValueError(f"field {name!r}: {value[:40]!r}…: at most {MAX_BLOCKED_LENGTH} "
                             "characters")
    return tuple(values)


def _limits(raw: Any) -> dict[str, int]:
    if not isinstance(raw, Mapping):
        raise ValueError("field 'limits': must be a table (e.g. { userId = 1, email = 5 })")
    problem = unknown_key(raw, KINDS)
    if problem:
        raise ValueError(f"limits: {problem}")
    limits = dict(DEFAULT_LIMITS)
    for kind, value in raw.items():
        if not isinstance(value, int) or isinstance(value, bool) or \
                not 1 <= value <= MAX_LIMIT:
            raise ValueError(f"limits: field {kind!r}: a whole number from 1 to {MAX_LIMIT}, "
                             f"not {value!r:.40}")
        limits[kind] = value
    return limits
