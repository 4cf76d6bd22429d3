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
names the rule), then allow_fields, drop_fields, hash_fields, ip. Nothing here does I/O.

- rules.py: the dataclasses (Filters, Rule, Condition, Dropped) and the pure functions: apply,
  decide, transform, matches, holds, lookup, hash_value, truncate_ip, sampled_in,
  apply_to_messages
- parse.py: `parse` checks a table (with gateway/config/tables.py) and raises ValueError with
  the exact field at fault; `parse_path`
"""

from __future__ import annotations

from gateway.filters.parse import parse, parse_path
from gateway.filters.rules import (
    IP_MODES,
    NO_FILTERS,
    Condition,
    Dropped,
    Filters,
    Rule,
    allow_only,
    apply,
    apply_to_messages,
    decide,
    hash_value,
    holds,
    lookup,
    matches,
    sampled_in,
    transform,
    truncate_ip,
)

__all__ = [
    "IP_MODES", "NO_FILTERS", "Condition", "Dropped", "Filters", "Rule", "allow_only", "apply",
    "apply_to_messages", "decide", "hash_value", "holds", "lookup", "matches", "parse",
    "parse_path", "sampled_in", "transform", "truncate_ip",
]
