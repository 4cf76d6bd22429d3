"""Which SDK family sent a request (gateway/http/clients.py): read from `context.library.name`,
the batch-level context first; anything malformed reads as unknown."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.http.clients import library_name, resends_all_but_success


def named(name: Any) -> dict[str, Any]:
    return {"context": {"library": {"name": name}}}


@pytest.mark.parametrize(
    "body,elements,expected",
    [
        (named("rudder-ios-library"), [named("analytics-kotlin")], "rudder-ios-library"),
        ({}, [named("analytics-react-native")], "analytics-react-native"),
        ({}, ["not a message", 7, {}, named("analytics_flutter")], "analytics_flutter"),
        ({"context": "x"}, [{"context": {"library": "y"}}, named("")], None),
        ({}, [named(42)], None),
        ({}, [], None),
    ],
)
def test_library_name(body: dict[str, Any], elements: list[Any], expected: str | None) -> None:
    assert library_name(body, elements) == expected


def test_only_the_families_that_resend_every_refusal_are_named() -> None:
    assert resends_all_but_success({}, [named("com.rudderstack.android.sdk.core")])
    assert not resends_all_but_success({}, [named("analytics-kotlin")])
    assert not resends_all_but_success({}, [named("Com.RudderStack.Android.SDK.Core ")])
