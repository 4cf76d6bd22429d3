"""Per-message destination selection by the `integrations` object (tracking-api.md §6.5)."""

from __future__ import annotations

import pytest

from gateway.config import from_mapping
from gateway.routing import destinations_for_source, route
from tests.conftest import ADMIN_TOKEN

CONFIG = from_mapping({
    "database_url": "sqlite://", "admin_token": ADMIN_TOKEN,
    "sources": [{"name": "web", "write_key": "k1"}, {"name": "app", "write_key": "k2"}],
    "destinations": [
        {"name": "cio", "type": "customerio", "settings": {"siteID": "s", "apiKey": "k"}},
        {"name": "kus", "type": "kustomer", "sources": ["web"], "settings": {"apiKey": "k"}},
        {"name": "cf", "type": "customfit",
         "settings": {"apiKey": "k", "endpointUrl": "https://cf.example/in"}},
        {"name": "off", "type": "custify", "enabled": False, "settings": {"apiKey": "k"}},
    ],
})


def names(integrations, source: str = "web") -> list[str]:
    return [d.name for d in route(destinations_for_source(CONFIG, source), integrations)]


def test_enabled_and_linked_destinations_only() -> None:
    assert names(None) == ["cio", "kus", "cf"]
    assert names(None, "app") == ["cio", "cf"]


@pytest.mark.parametrize("integrations,expected", [
    ({}, ["cio", "kus", "cf"]),
    ({"All": True}, ["cio", "kus", "cf"]),
    ({"All": False}, []),
    ({"All": False, "Customer.io": True}, ["cio"]),
    ({"All": False, "Customer IO": True}, ["cio"]),  # RudderStack's spelling
    ({"All": False, "Kustomer": {"someOption": 1}}, ["kus"]),  # an object means send
    ({"Kustomer": False}, ["cio", "cf"]),
    ({"kustomer": False}, ["cio", "kus", "cf"]),  # keys are case-sensitive
    ({"All": False, "CustomFit.ai": True, "CustomFit": True}, ["cf"]),
    ({"All": False, "cio": True}, ["cio"]),  # the configured destination name
    ({"Customer.io": True, "cio": False}, ["kus", "cf"]),  # the configured name wins
    ({"All": "yes"}, []),  # All not a boolean → nowhere (rudder-server)
    ("all", []),  # integrations not an object → nowhere
    ({"Mixpanel": False, "Salesforce": True}, ["cio", "kus", "cf"]),
])
def test_integrations_object(integrations, expected: list[str]) -> None:
    assert names(integrations) == expected


def test_decision_always_agrees_with_wants() -> None:
    """`decision` (explain's words) takes the same branches as `wants` (what ingest does)."""
    from gateway.routing import decision, wants

    destination = CONFIG.destinations[0]
    cases = [None, [], "x", {}, {"All": False}, {"All": True}, {"All": "yes"},
             {"All": False, "Customer.io": True}, {"All": True, "Customer.io": False},
             {"Customer.io": {"opt": 1}}, {"Customer.io": "true"}, {"cio": False},
             {"All": False, "cio": {}}, {"Other": False}]
    for integrations in cases:
        verdict, words = decision(destination, integrations)
        assert verdict == wants(destination, integrations), integrations
        assert words
