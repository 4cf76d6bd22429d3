"""One checker, one wording for an unknown key, wherever a table declares its keys: the config,
a filters table, a destination's limits, its settings, an admin query and a regulation."""

from __future__ import annotations

from typing import Any

import pytest

from adapters import DESTINATION_TYPES
from adapters.known import unknown_key
from gateway import filters, queries
from gateway.config.limits import parse_limits
from gateway.regulations.keys import parse_request


def error_of(check: Any) -> str:
    with pytest.raises(ValueError) as caught:
        check()
    return str(caught.value)


def test_the_wording() -> None:
    assert unknown_key({"b", "zzz"}, ("a", "b")) == "unknown field 'zzz' (known: a, b)"
    assert unknown_key({"colr"}, {"color", "size"}, "setting") \
        == "unknown setting 'colr' (did you mean 'color'?)"
    assert unknown_key({"a"}, ("a",)) is None


@pytest.mark.parametrize("check,known", [
    (lambda: filters.parse({"zzz": 1}), "known: drop_fields, allow_fields,"),
    (lambda: parse_limits({"zzz": 1}), "known: concurrency,"),
    (lambda: parse_request({"type": "delete", "zzz": 1}), "known: type, subject, dry_run"),
])
def test_every_table_says_it_alike(check: Any, known: str) -> None:
    assert f"unknown field 'zzz' ({known}" in error_of(check)


def test_a_query_and_a_destination_setting_say_it_alike() -> None:
    said = error_of(lambda: queries.list_events(None, {"zzz": "1"}))  # type: ignore[arg-type]
    assert said.startswith("unknown filter 'zzz' (known: ")
    settings = DESTINATION_TYPES["webhook"].unknown_setting({"zzz": 1})
    assert settings is not None and settings.startswith("unknown setting 'zzz' (known: ")
