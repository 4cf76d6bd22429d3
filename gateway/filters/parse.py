"""Checking a `filters` table (a source's or a destination's: the same keys) into the rules of
rules.py, with the table checker of gateway/config/tables.py: every refusal is a ValueError
naming the exact field at fault, which the config puts behind the file and the entry.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any

from gateway.config.tables import ANY, Key, TableError, check_keys, value_of
from gateway.filters.rules import IP_MODES, Condition, Filters, Rule, is_number
from gateway.store.models import MESSAGE_TYPES

# Top-level fields of a message (Segment spec + what the gateway adds); a path must start
# with one of these, so `propertes.email` is a config error, not a filter that never matches.
TOP_LEVEL = ("anonymousId", "userId", "type", "messageId", "event", "name", "category",
             "properties", "traits", "context", "integrations", "groupId", "previousId",
             "timestamp", "originalTimestamp", "sentAt", "receivedAt", "request_ip", "channel",
             "version", "rudderId")
# What identifies and orders a stored event: never removed (hashing userId/anonymousId is
# allowed: pseudonymous ids keep per-user order and identity intact).
PROTECTED = ("type", "messageId", "userId", "anonymousId", "timestamp", "receivedAt")
OPERATORS = ("equals", "not_equals", "in", "not_in", "exists", "contains", "starts_with",
             "gt", "gte", "lt", "lte")
MAX_PATH_DEPTH = 8
MAX_PATH_LENGTH = 200
MAX_LIST = 200  # paths, rules, conditions or values in one list
MIN_SALT = 16
# The declared shapes (tables.py checks the keys, the salt's type and the ip mode).
FILTER_KEYS = {"drop_fields": ANY, "allow_fields": ANY, "hash_fields": ANY,
               "hash_salt": Key("str"), "ip": Key("choice", choices=IP_MODES), "sample": ANY,
               "drop": ANY, "keep": ANY}
RULE_KEYS = {"name": ANY, "types": ANY, "events": ANY, "where": ANY}
CONDITION_KEYS = {"field": ANY, **{op: ANY for op in OPERATORS}}
_SEGMENT = re.compile(r"[^.\s]+")




def parse(raw: Any) -> Filters:
    """A `filters` table (a source's or a destination's: the same keys) → Filters, or
    ValueError naming the field at fault."""
    check_keys(raw, FILTER_KEYS)
    drop_fields = _paths(raw, "drop_fields", protect=True)
    allow_fields = _paths(raw, "allow_fields", protect=True)
    for path in allow_fields:
        if len(path) < 2:
            raise ValueError(f"field 'allow_fields': {'.'.join(path)!r}: name a field inside "
                             "an object (e.g. 'properties.revenue'); top-level fields are "
                             "removed with drop_fields")
    hash_fields = _paths(raw, "hash_fields", protect=False)
    for path in hash_fields:
        if path[0] in PROTECTED and path[0] not in ("userId", "anonymousId"):
            raise ValueError(f"field 'hash_fields': {path[0]!r} cannot be hashed")
    salt = value_of(raw, "hash_salt", FILTER_KEYS, "")
    if hash_fields and len(salt) < MIN_SALT:
        raise ValueError(f"field 'hash_salt': required with hash_fields, at least {MIN_SALT} "
                         "characters (a short salt lets anyone rebuild the hashes)")
    if salt and not hash_fields:
        raise ValueError("field 'hash_salt': set without hash_fields")
    ip = value_of(raw, "ip", FILTER_KEYS, "keep")
    sample = raw.get("sample")
    if sample is not None:
        if not is_number(sample) or not 0 < sample <= 100:
            raise ValueError(f"field 'sample': a percentage more than 0 and at most 100, not "
                             f"{sample!r} (to send nothing, set enabled = false)")
        sample = float(sample)
    return Filters(drop=_rules(raw, "drop"), keep=_rules(raw, "keep"), sample=sample,
                   drop_fields=drop_fields, allow_fields=allow_fields, hash_fields=hash_fields,
                   hash_salt=salt, ip=ip)


def parse_path(text: Any, where: str) -> tuple[str, ...]:
    """`properties.card.number` → ("properties", "card", "number"), or ValueError."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"{where}: a path must be a non-empty string")
    if len(text) > MAX_PATH_LENGTH:
        raise ValueError(f"{where}: {text[:40]!r}…: at most {MAX_PATH_LENGTH} characters")
    parts = tuple(text.split("."))
    if not all(_SEGMENT.fullmatch(part) for part in parts):
        raise ValueError(f"{where}: {text!r}: not a dotted path (e.g. 'properties.email'; "
                         "no spaces, no empty parts)")
    if len(parts) > MAX_PATH_DEPTH:
        raise ValueError(f"{where}: {text!r}: at most {MAX_PATH_DEPTH} levels")
    if parts[0] not in TOP_LEVEL:
        close = difflib.get_close_matches(parts[0], TOP_LEVEL, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"{where}: {text!r}: {parts[0]!r} is not a message field{hint}")
    return parts


def _paths(raw: Mapping[str, Any], key: str, protect: bool) -> tuple[tuple[str, ...], ...]:
    items = raw.get(key, [])
    if not isinstance(items, list) or len(items) > MAX_LIST:
        raise ValueError(f"field {key!r}: must be a list of at most {MAX_LIST} paths")
    paths = tuple(parse_path(item, f"field {key!r}") for item in items)
    for path in paths:
        if protect and len(path) == 1 and path[0] in PROTECTED:
            raise ValueError(f"field {key!r}: {path[0]!r} identifies the event and cannot be "
                             "removed" + (" (hash it instead)" if path[0] in
                                          ("userId", "anonymousId") else ""))
    return paths


def _rules(raw: Mapping[str, Any], key: str) -> tuple[Rule, ...]:
    items = raw.get(key, [])
    if not isinstance(items, list) or len(items) > MAX_LIST:
        raise ValueError(f"field {key!r}: must be an array of tables ([[….filters.{key}]]), "
                         f"at most {MAX_LIST}")
    rules: list[Rule] = []
    names: set[str] = set()
    for index, item in enumerate(items, 1):
        where = f"{key} #{index}"
        _keys(item, RULE_KEYS, where)
        name = item.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 100:
            raise ValueError(f"{where}: field 'name': required, a non-empty string of at "
                             "most 100 characters (it is the reason a skipped delivery shows)")
        where = f"{key} #{index} ({name!r})"
        if name in names:
            raise ValueError(f"{where}: field 'name': duplicate rule name")
        names.add(name)
        types = _strings(item, "types", where)
        for kind in types:
            if kind not in MESSAGE_TYPES:
                raise ValueError(f"{where}: field 'types': unknown type {kind!r} "
                                 f"(known: {', '.join(MESSAGE_TYPES)})")
        events = _strings(item, "events", where)
        conditions = item.get("where", [])
        if not isinstance(conditions, list) or len(conditions) > MAX_LIST:
            raise ValueError(f"{where}: field 'where': must be a list of conditions "
                             "({ field = \"…\", equals = … })")
        parsed = tuple(_condition(c, f"{where}: where #{n}")
                       for n, c in enumerate(conditions, 1))
        if not (types or events or parsed):
            raise ValueError(f"{where}: matches every event; give types, events or where")
        rules.append(Rule(name, frozenset(types), frozenset(events), parsed))
    return tuple(rules)


def _condition(raw: Any, where: str) -> Condition:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: must be a table like {{ field = \"properties.x\", "
                         "equals = 1 }")
    _keys(raw, CONDITION_KEYS, where)
    path = parse_path(raw.get("field"), f"{where}: field 'field'")
    ops = [op for op in OPERATORS if op in raw]
    if len(ops) != 1:
        raise ValueError(f"{where}: needs exactly one operator ({', '.join(OPERATORS)})")
    op, value = ops[0], raw[ops[0]]
    if op == "exists" and not isinstance(value, bool):
        raise ValueError(f"{where}: 'exists' must be true or false")
    if op in ("in", "not_in") and (not isinstance(value, list) or len(value) > MAX_LIST):
        raise ValueError(f"{where}: {op!r} must be a list of at most {MAX_LIST} values")
    if op in ("starts_with",) and not isinstance(value, str):
        raise ValueError(f"{where}: 'starts_with' must be a string")
    if op in ("gt", "gte", "lt", "lte") and not is_number(value):
        raise ValueError(f"{where}: {op!r} must be a number")
    if isinstance(value, dict) or (isinstance(value, list) and any(
            isinstance(v, dict | list) for v in value)):
        raise ValueError(f"{where}: compare with a string, number or boolean (or a list of "
                         "them for in / not_in)")
    return Condition(path, op, tuple(value) if isinstance(value, list) else value)


def _strings(item: Mapping[str, Any], key: str, where: str) -> list[str]:
    value = item.get(key, [])
    if not isinstance(value, list) or len(value) > MAX_LIST or not all(
            isinstance(v, str) and v for v in value):
        raise ValueError(f"{where}: field {key!r}: must be a list of non-empty strings "
                         f"(at most {MAX_LIST})")
    return value


def _keys(raw: Any, shape: Mapping[str, Key], where: str) -> None:
    """A rule's or a condition's keys, the message led by which one it is."""
    try:
        check_keys(raw, shape)
    except TableError as exc:
        raise TableError(f"{where}: {exc}") from None
