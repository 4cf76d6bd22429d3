"""The mapping engine's rules (common-conventions.md), as a table."""

from __future__ import annotations

import math

import pytest

from adapters.base import InvalidEvent, basic_auth, rebase_url
from adapters.mapping import (
    MISSING,
    Field,
    construct,
    drop_empty,
    either,
    first_defined,
    first_truthy,
    get_path,
    js_string,
    js_type,
    resolve,
    truthy,
    unix_seconds,
)

EVENT = {"userId": "", "traits": {}, "context": {"traits": {"email": "c@x.io", "zero": 0},
                                                 "externalId": [{"id": "ext-1"}]},
         "properties": {"flag": False, "nan": math.nan, "empty": ""}, "anonymousId": "a1"}


@pytest.mark.parametrize("path,expected", [
    ("context.externalId.0.id", "ext-1"), ("context.externalId.1.id", MISSING),
    ("context.traits.email", "c@x.io"), ("properties.flag", False), ("nope.deeper", MISSING),
    ("userId.length", MISSING),
])
def test_get_path(path: str, expected) -> None:
    assert get_path(EVENT, path) == expected


@pytest.mark.parametrize("sources,expected", [
    (("userId", "anonymousId"), "a1"),  # "" is not present
    (("traits", "context.traits"), {}),  # {} is present
    (("properties.nan", "properties.empty", "properties.flag"), False),
    ("context.traits.zero", 0),  # a single path keeps 0 and false
    ("properties.flag", False),
    ("userId", MISSING),  # and drops ""
])
def test_first_present(sources, expected) -> None:
    assert resolve(EVENT, sources) == expected


def test_construct_required_defaults_exclusions_and_formatters() -> None:
    rows = [Field("user.email", ("traits.email", "context.traits.email")),
            Field("kind", "type", default="unknown"),
            Field("attrs", "context.traits", exclude=("zero",)),
            Field("ts", "timestamp", fmt="unix_seconds"),
            Field("id", "context.traits.zero", fmt="string")]
    assert construct({**EVENT, "timestamp": "2022-01-10T20:39:03.955+05:30"}, rows) == {
        "user": {"email": "c@x.io"}, "kind": "unknown", "attrs": {"email": "c@x.io"},
        "ts": 1641827343, "id": "0"}
    with pytest.raises(InvalidEvent, match=r'^Missing required value from \["a","b"\]$'):
        construct(EVENT, [Field("x", ("a", "b"), required=True)])
    with pytest.raises(InvalidEvent, match=r'^Missing required value from "event"$'):
        construct(EVENT, [Field("name", "event", required=True)])


@pytest.mark.parametrize("value,expected", [
    (0, False), (0.0, False), (math.nan, False), ("", False), (None, False), (False, False),
    (MISSING, False), ({}, True), ([], True), ("0", True), (-1, True), (True, True),
])
def test_truthy(value, expected: bool) -> None:
    assert truthy(value) is expected


def test_small_helpers() -> None:
    assert drop_empty({"a": None, "b": 0, "c": {"d": None}, "e": MISSING}) == {
        "b": 0, "c": {"d": None}}
    assert (js_string(4.0), js_string(4.5), js_string(True)) == ("4", "4.5", "true")
    assert unix_seconds("not a date") is None
    assert unix_seconds("2026-01-01T00:00:00Z") == 1767225600
    assert rebase_url("https://api.x.com/v1/a?b=c", "http://127.0.0.1:9000") == (
        "http://127.0.0.1:9000/v1/a?b=c")


@pytest.mark.parametrize("paths,expected", [
    (("userId", "properties.flag", "context.traits.zero", "context.traits.email"), "c@x.io"),
    (("userId", "properties.flag"), MISSING), (("nope",), MISSING)])
def test_first_truthy_passes_over_every_falsy_value(paths, expected) -> None:
    assert first_truthy(EVENT, paths) == expected


@pytest.mark.parametrize("paths,expected", [
    (("userId", "anonymousId"), "a1"), (("userId", "properties.flag"), False),
    (("anonymousId", "nope"), "a1"), (("userId", "nope"), MISSING)])
def test_either_is_javascripts_or_chain(paths, expected) -> None:
    """`a || b`: the first truthy, else the last operand as it is (false stays false)."""
    value = either(EVENT, paths)
    assert (value, type(value)) == (expected, type(expected))


def test_a_spread_row_merges_an_object_and_ignores_anything_else() -> None:
    rows = (Field("first", "anonymousId"), Field("", "context.traits", spread=True),
            Field("nested", "properties", spread=True), Field("", "anonymousId", spread=True))
    out = construct(EVENT, rows)
    assert out == {"first": "a1", "email": "c@x.io", "zero": 0,
                   "nested": {"flag": False, "nan": EVENT["properties"]["nan"], "empty": ""}}


@pytest.mark.parametrize("paths,expected", [
    (("nope", "userId", "properties.flag"), ""),  # "" is defined: `a ?? b`
    (("nope", "properties.flag"), False), (("context.traits.zero",), 0),
    (("nope", "also.nope"), MISSING)])
def test_first_defined_is_javascripts_nullish_chain(paths, expected) -> None:
    value = first_defined({**EVENT, "nope": None}, paths)
    assert (value, type(value)) == (expected, type(expected))


def test_rows_pick_truthy_or_defined_and_a_date_may_stay_null() -> None:
    """`pick` chooses among the sources as `a || b` or `a ?? b`; "unix_seconds_or_null" keeps
    a value that is no date as null where "unix_seconds" leaves the key out."""
    rows = (Field("truthy", ("userId", "properties.flag", "anonymousId"), pick="truthy"),
            Field("none", ("userId", "properties.flag"), pick="truthy"),
            Field("defined", ("nope", "userId", "anonymousId"), pick="defined"),
            Field("one", "properties.flag", pick="defined"),
            Field("", ("nope", "traits", "context.traits"), pick="defined", spread=True),
            Field("date", "anonymousId", fmt="unix_seconds_or_null"),
            Field("dropped", "anonymousId", fmt="unix_seconds"))
    assert construct({**EVENT, "nope": None}, rows) == {
        "truthy": "a1", "defined": "", "one": False, "date": None}


@pytest.mark.parametrize("value,expected", [
    (None, "null"), (True, "boolean"), (0, "number"), (2.5, "number"), ("", "string"),
    ([], "array"), ({}, "object")])
def test_js_type_names_a_json_value_as_javascript_validators_do(value, expected: str) -> None:
    assert js_type(value) == expected


def test_basic_auth_keeps_the_colon_with_an_empty_password() -> None:
    assert basic_auth("key") == "Basic a2V5Og=="  # key:
    assert basic_auth("site", "api") == "Basic c2l0ZTphcGk="  # site:api
