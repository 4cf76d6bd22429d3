"""gateway/filters/: the pure rules, the field transforms, and the checks at config load."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import filters
from gateway.config import ConfigFileError, from_mapping
from gateway.filters import Dropped, apply, parse, sampled_in, truncate_ip
from tests.conftest import ADMIN_TOKEN

SALT = "pepper-0123456789abcdef"


def track(**extra: Any) -> dict[str, Any]:
    event = {"type": "track", "event": "Order Completed", "userId": "u1", "messageId": "m1",
             "properties": {"revenue": 9.5, "card": "4111", "env": "prod",
                            "products": [{"sku": "a", "price": 1}, {"sku": "b", "price": 2}]},
             "context": {"ip": "203.0.113.77", "traits": {"email": "ann@example.com"}},
             "request_ip": "203.0.113.77", "receivedAt": "2026-12-01T00:00:00Z"}
    event.update(extra)
    return event


def test_drop_rule_by_type_event_and_condition_names_the_rule() -> None:
    rules = parse({"drop": [{"name": "staging-orders", "types": ["track"],
                             "events": ["Order Completed"],
                             "where": [{"field": "properties.env", "equals": "staging"}]}]})
    assert isinstance(apply(rules, track()), dict)  # env = prod: kept
    staging = track(properties={"env": "staging"})
    assert apply(rules, staging) == Dropped("dropped by filter 'staging-orders'")
    assert isinstance(apply(rules, {**staging, "event": "Signed Up"}), dict)
    assert isinstance(apply(rules, {**staging, "type": "page"}), dict)


def test_keep_rules_are_an_allow_list() -> None:
    rules = parse({"keep": [{"name": "orders", "events": ["Order Completed"]},
                            {"name": "identifies", "types": ["identify"]}]})
    assert isinstance(apply(rules, track()), dict)
    assert isinstance(apply(rules, {"type": "identify", "userId": "u"}), dict)
    assert apply(rules, track(event="Viewed")) == Dropped(
        "matched no keep filter ('orders', 'identifies')")


@pytest.mark.parametrize(("condition", "expected"), [
    ({"field": "properties.revenue", "gt": 9}, True),
    ({"field": "properties.revenue", "lte": 9}, False),
    ({"field": "properties.revenue", "gte": 9.5}, True),
    ({"field": "properties.revenue", "lt": 100}, True),
    ({"field": "properties.env", "in": ["prod", "qa"]}, True),
    ({"field": "properties.env", "not_in": ["prod"]}, False),
    ({"field": "properties.env", "not_equals": "qa"}, True),
    ({"field": "properties.missing", "not_equals": "qa"}, True),
    ({"field": "properties.missing", "equals": "qa"}, False),
    ({"field": "properties.missing", "exists": False}, True),
    ({"field": "properties.card", "exists": True}, True),
    ({"field": "context.traits.email", "contains": "@example."}, True),
    ({"field": "context.traits.email", "starts_with": "bob"}, False),
    ({"field": "properties.env", "gt": 1}, False),  # text is not a number
    ({"field": "properties.flag", "equals": 1}, False),  # true is not 1
])
def test_conditions(condition: dict[str, Any], expected: bool) -> None:
    rules = parse({"drop": [{"name": "r", "where": [condition]}]})
    event = track()
    event["properties"]["flag"] = True
    assert isinstance(apply(rules, event), Dropped) is expected


def test_field_transforms_never_touch_the_input() -> None:
    rules = parse({"drop_fields": ["properties.card", "properties.products.price"],
                   "allow_fields": ["context.traits.email"],
                   "hash_fields": ["userId", "context.traits.email"], "hash_salt": SALT,
                   "ip": "truncate"})
    event = track()
    before = copy.deepcopy(event)
    out = apply(rules, event)
    assert event == before
    assert isinstance(out, dict)
    assert "card" not in out["properties"]
    assert out["properties"]["products"] == [{"sku": "a"}, {"sku": "b"}]
    assert out["properties"]["revenue"] == 9.5
    assert out["userId"] == hashlib.sha256((SALT + "u1").encode()).hexdigest()
    # context names only traits.email: its other keys (ip) are gone, traits keeps email
    assert out["context"] == {"traits": {
        "email": hashlib.sha256((SALT + "ann@example.com").encode()).hexdigest()}}
    assert out["request_ip"] == "203.0.113.0"
    assert out["messageId"] == "m1" and out["type"] == "track"


def test_allow_fields_keep_only_the_named_keys_of_named_objects() -> None:
    out = apply(parse({"allow_fields": ["properties.revenue", "properties.products.sku"]}),
                track())
    assert isinstance(out, dict)
    assert out["properties"] == {"revenue": 9.5, "products": [{"sku": "a"}, {"sku": "b"}]}
    assert out["context"]["traits"]["email"] == "ann@example.com"  # not named: whole


@pytest.mark.parametrize(("mode", "ip", "expected"), [
    ("truncate", "198.51.100.200", "198.51.100.0"),
    ("truncate", "2001:db8:abcd:12:34::1", "2001:db8:abcd::"),
    ("truncate", "::ffff:192.0.2.9", "192.0.2.0"),
    ("truncate", "not an ip", None),
    ("drop", "198.51.100.200", None),
    ("keep", "198.51.100.200", "198.51.100.200"),
])
def test_ip_modes(mode: str, ip: str, expected: str | None) -> None:
    out = apply(parse({"ip": mode}), track(context={"ip": ip}, request_ip=ip))
    assert isinstance(out, dict)
    assert out["context"].get("ip") == expected
    assert out.get("request_ip") == expected


def test_hash_of_non_strings_and_null() -> None:
    rules = parse({"hash_fields": ["properties.revenue", "properties.none"], "hash_salt": SALT})
    out = apply(rules, track(properties={"revenue": 12, "none": None}))
    assert isinstance(out, dict)
    assert out["properties"] == {"revenue": hashlib.sha256(f"{SALT}12".encode()).hexdigest(),
                                 "none": None}


def test_sample_is_stable_per_user_and_close_to_the_percentage() -> None:
    rules = parse({"sample": 25})
    kept = [k for k in range(4000) if isinstance(apply(rules, track(userId=f"user-{k}")), dict)]
    assert 900 < len(kept) < 1100
    again = [k for k in range(4000) if sampled_in(f"user-{k}", 25)]
    assert kept == again
    dropped = apply(rules, track(userId=f"user-{next(k for k in range(4000) if k not in kept)}"))
    assert dropped == Dropped("outside the 25 % sample")
    anonymous = track(userId=None, anonymousId="anon-7")
    assert isinstance(apply(rules, anonymous), Dropped) is not sampled_in("anon-7", 25)
    assert sampled_in("anyone", 100)


def test_truncate_ip_bounds() -> None:
    assert truncate_ip("10.1.2.3") == "10.1.2.0"
    assert truncate_ip(42) is None


def test_messages_at_source_level_get_their_ids_from_the_new_payload() -> None:
    from datetime import UTC, datetime

    from gateway.messages import Message

    now = datetime.now(UTC)
    messages = [Message("track", "m1", "u1", None, now, track()),
                Message("track", "m2", "u2", None, now, track(userId="u2", event="Test"))]
    rules = parse({"drop": [{"name": "tests", "events": ["Test"]}],
                   "hash_fields": ["userId"], "hash_salt": SALT})
    kept = filters.apply_to_messages(rules, messages)
    assert [m.message_id for m in kept] == ["m1"]
    assert kept[0].user_id == hashlib.sha256((SALT + "u1").encode()).hexdigest()
    assert kept[0].payload["userId"] == kept[0].user_id
    assert messages[0].payload["userId"] == "u1"


# --- property: whatever the event, drop_fields leaves no dropped field and changes nothing else

json_leaf = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=8)
keys = st.sampled_from(["a", "b", "email", "ip", "card"])
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(keys, inner, max_size=4), max_leaves=12)


@settings(max_examples=150, derandomize=True, deadline=None)
@given(properties=st.dictionaries(keys, json_value, max_size=5),
       dropped=st.lists(keys, min_size=1, max_size=3, unique=True))
def test_dropped_fields_never_survive(properties: dict[str, Any], dropped: list[str]) -> None:
    paths = [f"properties.{k}" for k in dropped] + [f"properties.a.{k}" for k in dropped]
    out = apply(parse({"drop_fields": paths}), track(properties=properties))
    assert isinstance(out, dict)
    for key in dropped:
        assert key not in out["properties"]
        inner = out["properties"].get("a")
        items = inner if isinstance(inner, list) else [inner]
        assert all(key not in item for item in items if isinstance(item, dict))
    kept = {k: v for k, v in properties.items() if k not in dropped and k != "a"}
    assert {k: v for k, v in out["properties"].items() if k != "a"} == kept


# --- checked at config load


def config_with(destination_filters: Any = None, source_filters: Any = None) -> None:
    source: dict[str, Any] = {"name": "web", "write_key": "wk"}
    if source_filters is not None:
        source["filters"] = source_filters
    destination: dict[str, Any] = {"name": "hook", "type": "webhook",
                                   "settings": {"webhookUrl": "https://h.example/x"}}
    if destination_filters is not None:
        destination["filters"] = destination_filters
    from_mapping({"database_url": "sqlite:///x.db", "admin_token": ADMIN_TOKEN, "sources": [source],
                  "destinations": [destination]})


@pytest.mark.parametrize(("raw", "message"), [
    ({"drop_feilds": []}, "unknown field 'drop_feilds' (did you mean 'drop_fields'?)"),
    ({"drop_fields": ["propertes.card"]},
     "'propertes' is not a message field (did you mean 'properties'?)"),
    ({"drop_fields": ["properties..card"]}, "not a dotted path"),
    ({"drop_fields": ["properties.a b"]}, "not a dotted path"),
    ({"drop_fields": ["messageId"]}, "'messageId' identifies the event and cannot be removed"),
    ({"drop_fields": ["userId"]}, "(hash it instead)"),
    ({"allow_fields": ["properties"]}, "name a field inside an object"),
    ({"hash_fields": ["traits.email"]}, "field 'hash_salt': required with hash_fields"),
    ({"hash_fields": ["traits.email"], "hash_salt": "short"}, "at least 16 characters"),
    ({"hash_salt": SALT}, "set without hash_fields"),
    ({"ip": "mask"}, "field 'ip': must be one of keep, truncate, drop, not 'mask'"),
    ({"sample": 0}, "field 'sample': a percentage more than 0 and at most 100"),
    ({"sample": 101}, "at most 100, not 101"),
    ({"sample": "50%"}, "not '50%'"),
    ({"sample": True}, "field 'sample'"),
    ({"drop": {"name": "x"}}, "field 'drop': must be an array of tables"),
    ({"drop": [{"types": ["track"]}]}, "drop #1: field 'name': required"),
    ({"drop": [{"name": "x"}]}, "drop #1 ('x'): matches every event"),
    ({"drop": [{"name": "x", "types": ["click"]}]}, "unknown type 'click'"),
    ({"keep": [{"name": "x", "event": ["A"]}]}, "unknown field 'event' (did you mean 'events'?)"),
    ({"drop": [{"name": "x", "events": ["A"]}, {"name": "x", "events": ["B"]}]},
     "drop #2 ('x'): field 'name': duplicate rule name"),
    ({"drop": [{"name": "x", "where": [{"field": "properties.a"}]}]},
     "where #1: needs exactly one operator"),
    ({"drop": [{"name": "x", "where": [{"field": "properties.a", "gt": "9"}]}]},
     "'gt' must be a number"),
    ({"drop": [{"name": "x", "where": [{"field": "properties.a", "equals": 1, "in": [1]}]}]},
     "needs exactly one operator"),
    ({"drop": [{"name": "x", "where": [{"field": "prop.a", "equals": 1}]}]},
     "'prop' is not a message field"),
    ({"drop": [{"name": "x", "where": [{"field": "properties.a", "like": 1}]}]},
     "unknown field 'like'"),
])
def test_bad_filters_are_refused_with_the_field_named(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigFileError) as error:
        config_with(destination_filters=raw)
    assert "[[destinations]] #1 ('hook').filters: " in str(error.value)
    assert message in str(error.value)
    with pytest.raises(ConfigFileError) as error:
        config_with(source_filters=raw)
    assert "[[sources]] #1 ('web').filters: " in str(error.value)


def test_filters_must_be_a_table_and_the_salt_stays_out_of_reprs() -> None:
    with pytest.raises(ConfigFileError, match=r"\.filters: must be a table"):
        config_with(destination_filters=["drop"])
    parsed = parse({"hash_fields": ["traits.email"], "hash_salt": SALT})
    assert SALT not in repr(parsed)


def test_retention_table_is_checked() -> None:
    base = {"database_url": "sqlite:///x.db", "admin_token": ADMIN_TOKEN}
    assert from_mapping(base).retention.events_days == 30
    assert from_mapping({**base, "retention": {"events_days": 0}}).retention.events_days == 0
    with pytest.raises(ConfigFileError, match=r"\[retention\]: field 'dead_days': must be a whole"):
        from_mapping({**base, "retention": {"dead_days": 1.5}})
    with pytest.raises(ConfigFileError, match=r"\[retention\]: unknown field 'event_days'"):
        from_mapping({**base, "retention": {"event_days": 3}})
    with pytest.raises(ConfigFileError, match="must be at least 0"):
        from_mapping({**base, "retention": {"attempts_days": -1}})
    env = {"GATEWAY_RETENTION_EVENTS_DAYS": "3"}
    assert from_mapping(base, env=env).retention.events_days == 3



def test_explain_names_the_filter_not_the_adapter_for_a_filtered_delivery() -> None:
    """A destination filter's skip is the filter's decision (so explain can say
    why), not the adapter's."""
    from types import SimpleNamespace

    from gateway.explain import _delivery_words

    row = SimpleNamespace(state="skipped", attempts=1, last_status=None,
                          last_error="Filtered: dropped by filter 'test-events'",
                          next_attempt_at=None, updated_at=None)
    state, words = _delivery_words(row)
    assert state == "skipped"
    assert "adapter" not in words and "filter 'test-events'" in words
