"""Filter rules and privacy transforms: the dataclasses and pure functions over one event payload
(what a `filters` table means; parse.py builds them from the table). Nothing here does I/O.

Order: drop rules, keep rules, sample (an event that fails one is not sent, and the reason
names the rule), then allow_fields, drop_fields, hash_fields, ip.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.store.outbox import user_key_of

IP_MODES = ("keep", "truncate", "drop")


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
    if not is_number(value):
        return False
    return {"gt": value > wanted, "gte": value >= wanted, "lt": value < wanted,
            "lte": value <= wanted}[op]


def is_number(value: Any) -> bool:
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
