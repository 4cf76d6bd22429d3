"""The `[identity]` table: defaults, the two ways to set blocked values, and precise errors."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import ConfigFileError, from_mapping
from gateway.config.identity import DEFAULT_BLOCKED_VALUES, DEFAULT_LIMITS, parse
from tests.conftest import ADMIN_TOKEN


def config(identity: Any) -> Any:
    return from_mapping({"database_url": "sqlite:///x.db", "admin_token": ADMIN_TOKEN,
                         "identity": identity})


def test_the_defaults() -> None:
    settings = from_mapping({"database_url": "sqlite:///x.db",
                             "admin_token": ADMIN_TOKEN}).identity
    assert dict(settings.limits) == DEFAULT_LIMITS == {"userId": 1, "email": 5,
                                                       "anonymousId": 1000}
    assert len(settings.blocked) == len(DEFAULT_BLOCKED_VALUES) == 18
    assert not settings.alias_merges_identified
    for value in ("undefined", " Undefined ", "NULL", "[object Object]", "", "  ", "NaN",
                  "00000000-0000-0000-0000-000000000000", "Not_Authenticated"):
        assert settings.is_blocked(value), value
    for value in ("u1", "0x", "undefined-user", "ann@example.com"):
        assert not settings.is_blocked(value), value


def test_extra_values_add_and_blocked_values_replace() -> None:
    added = parse({"extra_blocked_values": ["N/A", "-"]})
    assert added.is_blocked("n/a") and added.is_blocked(" - ") and added.is_blocked("null")
    replaced = parse({"blocked_values": ["n/a"], "extra_blocked_values": ["-"]})
    assert replaced.is_blocked("N/A") and replaced.is_blocked("-")
    assert not replaced.is_blocked("null")
    assert parse({"limits": {"email": 2}}).limits == {"userId": 1, "email": 2,
                                                       "anonymousId": 1000}
    assert parse({"alias_merges_identified": True}).alias_merges_identified


@pytest.mark.parametrize(("identity", "message"), [
    ("yes", "[identity]: must be a table"),
    ({"blocked": []}, "[identity]: unknown field 'blocked' (did you mean 'blocked_values'?)"),
    ({"blocked_values": "null"}, "field 'blocked_values': must be a list of strings"),
    ({"extra_blocked_values": [1]}, "field 'extra_blocked_values': must be a list of strings"),
    ({"extra_blocked_values": ["x" * 501]}, "at most 500 characters"),
    ({"extra_blocked_values": [str(n) for n in range(1001)]}, "at most 1000 values"),
    ({"limits": 1}, "field 'limits': must be a table"),
    ({"limits": {"phone": 1}}, "limits: unknown field 'phone' (known: userId, anonymousId, "
                               "email)"),
    ({"limits": {"userId": 0}}, "limits: field 'userId': a whole number from 1 to 1000000"),
    ({"limits": {"email": True}}, "limits: field 'email': a whole number"),
    ({"limits": {"email": 2.5}}, "limits: field 'email': a whole number"),
    ({"alias_merges_identified": "true"}, "field 'alias_merges_identified': must be true or "
                                          "false"),
])
def test_mistakes_name_the_table_and_field(identity: Any, message: str) -> None:
    with pytest.raises(ConfigFileError) as caught:
        config(identity)
    assert str(caught.value).startswith("<config>: [identity]: ")
    assert message in str(caught.value)
