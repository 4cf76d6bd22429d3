"""Source and destination filters and privacy transforms: pure functions over one event payload.

The same `filters` table sits in a `[[sources]]` entry (what must never be stored: applied at
ingest, before the event is written) and in a `[[destinations]]` entry, beside `settings`
(what one destination must not receive: applied right before the adapter's transform). The
shape follows Segment's Destination Filters ("drop event", "only send", "sample", "drop /
allow properties") so its users recognise it:

    [destinations.filters]
    drop_fields  = ["context.ip", "properties.card_number"]
    allow_fields = ["traits.email", "traits.plan"]    # within `traits`, keep only these
    hash_fields  = ["userId", "traits.email"]         # hex SHA-256 of hash_salt + value
    hash_salt    = "…"                                # secret, ≥ 16 characters
    ip           = "truncate"                         # keep | truncate (/24, /48) | drop
    sample       = 25                                 # percent of users, stable per user
    [[destinations.filters.drop]]                     # drop events matching any rule
    name   = "test-events"
    types  = ["track"]
    events = ["Test Event"]
    where  = [{ field = "properties.env", equals = "staging" }]
    [[destinations.filters.keep]]                     # when present: only matching events pass
    name   = "orders"
    events = ["Order Completed", "Order Refunded"]

Order: drop rules, keep rules, sample (an event that fails one is not sent, and the reason
names the rule), then allow_fields, drop_fields, hash_fields, ip. Nothing here does I/O;
`parse` checks a table and raises ValueError with the exact field at fault.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from adapters.known import unknown_key
from gateway.store.models import MESSAGE_TYPES
from gateway.store.outbox import user_key_of

IP_MODES = ("keep", "truncate", "drop")
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
FILTER_KEYS = ("drop_fields", "allow_fields", "hash_fields", "hash_salt", "ip", "sample",
               "drop", "keep")
RULE_KEYS = ("name", "types", "events", "where")
_SEGMENT = re.compile(r"[^.\s]+")


@dataclass(frozen=True)
class Condition:
    path: tuple[str, ...]
    op: str
    value: Any


@dataclass(frozen=True)
class Rule:
    """Matches an event when every given criterion holds (an empty criterion is not checked)."""

    name: str
    types: frozenset[str] = frozenset()
    events: frozenset[str] = frozenset()
    where: tuple[Condition, ...] = ()


@dataclass(frozen=True)
class Filters:
    drop: tuple[Rule, ...] = ()
    keep: tuple[Rule, ...] = ()
    sample: float | None = None  # percent of user keys kept; None = all
    drop_fields: tuple[tuple[str, ...], ...] = ()
    allow_fields: tuple[tuple[str, ...], ...] = ()
    hash_fields: tuple[tuple[str, ...], ...] = ()
    hash_salt: str = field(default="", repr=False)  # a secret: never in a repr or a log
    ip: str = "keep"

    @property
    def empty(self) -> bool:
        return self == NO_FILTERS

    @property
    def changes_fields(self) -> bool:
        return bool(self.drop_fields or self.allow_fields or self.hash_fields
                    or self.ip != "keep")


NO_FILTERS = Filters()


@dataclass(frozen=True)
class Dropped:
    """The event is not sent (destination) or not stored (source); `reason` names the rule."""

    reason: str


def apply(filters: Filters, payload: Mapping[str, Any]) -> dict[str, Any] | Dropped:
    """The payload as `filters` let it through (a new dict; `payload` is never changed), or
    Dropped with the reason."""
    if filters.empty:
        return dict(payload)
    verdict = decide(filters, payload)
    if verdict is not None:
        return verdict
    return transform(filters, payload)


def decide(filters: Filters, payload: Mapping[str, Any]) -> Dropped | None:
    """Drop rules, then keep rules, then the sample: the first that refuses the event."""
    for rule in filters.drop:
        if matches(rule, payload):
            return Dropped(f"dropped by filter {rule.name!r}")
    if filters.keep and not any(matches(rule, payload) for rule in filters.keep):
        names = ", ".join(repr(rule.name) for rule in filters.keep)
        return Dropped(f"matched no keep filter ({names})")
    if filters.sample is not None and not sampled_in(
            user_key_of(payload.get("userId"), payload.get("anonymousId")), filters.sample):
        return Dropped(f"outside the {filters.sample:g} % sample")
    return None


def transform(filters: Filters, payload: Mapping[str, Any]) -> dict[str, Any]:
    """allow_fields, drop_fields, hash_fields and ip, on a deep copy."""
    if not filters.changes_fields:
        return dict(payload)
    out = copy.deepcopy(dict(payload))
    if filters.allow_fields:
        allow_only(out, filters.allow_fields)
    for path in filters.drop_fields:
        _walk(out, path, lambda parent, key: parent.pop(key, None))
    for path in filters.hash_fields:
        _walk(out, path, lambda parent, key: parent.__setitem__(
            key, hash_value(parent[key], filters.hash_salt)))
    if filters.ip != "keep":
        _apply_ip(out, filters.ip)
    return out


def matches(rule: Rule, payload: Mapping[str, Any]) -> bool:
    if rule.types and payload.get("type") not in rule.types:
        return False
    if rule.events and payload.get("event") not in rule.events:
        return False
    return all(holds(condition, payload) for condition in rule.where)


_MISSING = object()


def holds(condition: Condition, payload: Mapping[str, Any]) -> bool:
    """One `where` condition. A missing field fails every operator but `not_equals`,
    `not_in` and `exists = false`; comparing a number with a non-number is false."""
    value = lookup(payload, condition.path)
    op, wanted = condition.op, condition.value
    if op == "exists":
        return (value is not _MISSING and value is not None) == wanted
    if value is _MISSING:
        return op in ("not_equals", "not_in")
    if op == "equals":
        return _same(value, wanted)
    if op == "not_equals":
        return not _same(value, wanted)
    if op == "in":
        return any(_same(value, w) for w in wanted)
    if op == "not_in":
        return not any(_same(value, w) for w in wanted)
    if op == "contains":
        if isinstance(value, str):
            return isinstance(wanted, str) and wanted in value
        return isinstance(value, list) and any(_same(v, wanted) for v in value)
    if op == "starts_with":
        return isinstance(value, str) and value.startswith(wanted)
    if not _is_number(value):
        return False
    return {"gt": value > wanted, "gte": value >= wanted, "lt": value < wanted,
            "lte": value <= wanted}[op]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same(a: Any, b: Any) -> bool:
    """JSON equality: true is not 1, 1 is 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


def lookup(payload: Mapping[str, Any], path: Sequence[str]) -> Any:
    """The value at a dotted path through objects (not arrays), or _MISSING."""
    node: Any = payload
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return _MISSING
        node = node[key]
    return node


def _walk(node: Any, path: Sequence[str], act: Callable[[dict, str], None]) -> None:
    """Call act(parent, last_key) wherever `path` exists; an array on the way applies the
    rest of the path to each of its objects (`properties.products.sku`)."""
    if isinstance(node, list):
        for item in node:
            _walk(item, path, act)
        return
    if not isinstance(node, dict) or path[0] not in node:
        return
    if len(path) == 1:
        act(node, path[0])
    else:
        _walk(node[path[0]], path[1:], act)


def allow_only(payload: dict[str, Any], paths: Sequence[tuple[str, ...]]) -> None:
    """Segment's "allow properties": in each object that a path's parent names, keep only
    the listed keys; objects no path names are left whole."""
    keep: dict[tuple[str, ...], set[str]] = {}
    for path in paths:  # `properties.products.sku` also keeps `products` in `properties`
        for depth in range(1, len(path)):
            keep.setdefault(path[:depth], set()).add(path[depth])
    for parent, names in sorted(keep.items(), key=lambda item: len(item[0])):
        _walk(payload, parent, lambda node, key, names=names: _keep_keys(node[key], names))


def _keep_keys(node: Any, names: set[str]) -> None:
    if isinstance(node, list):
        for item in node:
            _keep_keys(item, names)
    elif isinstance(node, dict):
        for key in [k for k in node if k not in names]:
            del node[key]


def hash_value(value: Any, salt: str) -> Any:
    """Hex SHA-256 of salt + value: a string as it is (so sha256(salt + email) computed
    elsewhere matches), anything else as its JSON text; null stays null."""
    if value is None:
        return None
    text = value if isinstance(value, str) else orjson.dumps(
        value, option=orjson.OPT_SORT_KEYS).decode()
    return hashlib.sha256((salt + text).encode()).hexdigest()


def truncate_ip(text: Any) -> str | None:
    """IPv4 → its /24 network address, IPv6 → its /48; None when it is not an address (a
    value we cannot truncate is dropped rather than passed on whole)."""
    if not isinstance(text, str):
        return None
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


def _apply_ip(payload: dict[str, Any], mode: str) -> None:
    """`context.ip` and the gateway's own `request_ip`."""
    holders = [(payload, "request_ip")]
    if isinstance(payload.get("context"), dict):
        holders.append((payload["context"], "ip"))
    for holder, key in holders:
        if key not in holder:
            continue
        value = truncate_ip(holder[key]) if mode == "truncate" else None
        if value is None:
            del holder[key]
        else:
            holder[key] = value


def sampled_in(key: str, percent: float) -> bool:
    """Whether a user key is in a `percent` sample: the first 8 bytes of SHA-256(key) as a
    fraction of 2**64, so a user is always in or always out, whatever process decides."""
    if percent >= 100:
        return True
    bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    return bucket < percent / 100 * 2 ** 64


def apply_to_messages(filters: Filters, messages: list[Any]) -> list[Any]:
    """Source level, before storing: the messages whose payload the filters let through,
    with their ids re-read from the new payload (hash_fields may pseudonymise them)."""
    if filters.empty:
        return messages
    kept = []
    for message in messages:
        payload = apply(filters, message.payload)
        if isinstance(payload, Dropped):
            continue
        kept.append(dataclasses.replace(
            message, payload=payload, user_id=_id_text(payload.get("userId")),
            anonymous_id=_id_text(payload.get("anonymousId"))))
    return kept


def _id_text(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


# --- checking the TOML table ------------------------------------------------------------------


def parse(raw: Any) -> Filters:
    """A `filters` table (a source's or a destination's: the same keys) → Filters, or
    ValueError naming the field at fault."""
    if not isinstance(raw, dict):
        raise ValueError("must be a table")
    _unknown(raw, FILTER_KEYS, "")
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
    salt = raw.get("hash_salt", "")
    if not isinstance(salt, str):
        raise ValueError("field 'hash_salt': must be a string")
    if hash_fields and len(salt) < MIN_SALT:
        raise ValueError(f"field 'hash_salt': required with hash_fields, at least {MIN_SALT} "
                         "characters (a short salt lets anyone rebuild the hashes)")
    if salt and not hash_fields:
        raise ValueError("field 'hash_salt': set without hash_fields")
    ip = raw.get("ip", "keep")
    if ip not in IP_MODES:
        raise ValueError(f"field 'ip': must be one of {', '.join(IP_MODES)}, not {ip!r}")
    sample = raw.get("sample")
    if sample is not None:
        if not _is_number(sample) or not 0 < sample <= 100:
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
        if not isinstance(item, dict):
            raise ValueError(f"{where}: must be a table")
        _unknown(item, RULE_KEYS, f"{where}: ")
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
    _unknown(raw, ("field", *OPERATORS), f"{where}: ")
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
    if op in ("gt", "gte", "lt", "lte") and not _is_number(value):
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


def _unknown(raw: Mapping[str, Any], allowed: Sequence[str], prefix: str) -> None:
    problem = unknown_key(raw, allowed)
    if problem:
        raise ValueError(f"{prefix}{problem}")
