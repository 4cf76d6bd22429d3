"""A contract every registered adapter keeps (like warehouse's verifyClass over its services)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import adapters
from adapters import DESTINATION_TYPES
from adapters.base import Adapter, AdapterError, HttpRequest, LookupResponse, SettingsSchema
from gateway.cli.destinations import describe, render

# Settings that make each type usable; secret values are recognisable in any output.
USABLE_SETTINGS = {
    "custify": {"apiKey": "SECRET-custify", "sendAnonymousId": True},
    "kustomer": {"apiKey": "SECRET-kustomer"},
    "customerio": {"siteID": "site", "apiKey": "SECRET-cio"},
    "customfit": {"apiKey": "SECRET-customfit", "endpointUrl": "https://cf.example/in"},
    "webhook": {"webhookUrl": "https://hook.example/in", "apiKey": "SECRET-webhook"},
    "console": {},
}
EVENTS = [
    {"type": "identify", "userId": "u1", "anonymousId": "a1", "messageId": "m1",
     "traits": {"email": "u1@example.com"}, "timestamp": "2026-11-24T10:00:00.000Z"},
    {"type": "track", "userId": "u1", "event": "Order Completed", "messageId": "m2",
     "properties": {"revenue": 9.99}, "timestamp": "2026-11-24T10:00:00.000Z"},
    {"type": "page", "userId": "u1", "name": "Home", "messageId": "m3",
     "timestamp": "2026-11-24T10:00:00.000Z"},
    {"type": "screen", "anonymousId": "a1", "name": "Main", "messageId": "m4",
     "timestamp": "2026-11-24T10:00:00.000Z"},
    {"type": "group", "userId": "u1", "groupId": "g1", "traits": {"name": "Acme"},
     "messageId": "m5", "timestamp": "2026-11-24T10:00:00.000Z"},
    {"type": "alias", "userId": "u1", "previousId": "a1", "messageId": "m6",
     "timestamp": "2026-11-24T10:00:00.000Z"},
]


def not_found(request: HttpRequest) -> LookupResponse:
    """Lookups answer 404 (Kustomer: no such customer) or 200 (Custify company upsert)."""
    return LookupResponse(404 if request.method == "GET" else 200, None)


def test_every_type_is_registered_with_usable_settings() -> None:
    assert set(DESTINATION_TYPES) == set(USABLE_SETTINGS)


@pytest.mark.parametrize("name", sorted(adapters.ADAPTER_MODULES))
def test_adapter_contract(name: str, caplog: pytest.LogCaptureFixture) -> None:
    adapter = DESTINATION_TYPES[name]
    assert isinstance(adapter, Adapter) and adapter.name == name
    assert (Path(adapters.__file__).parent / name / "__init__.py").is_file()
    assert adapter.display_names and issubclass(adapter.settings_schema, SettingsSchema)
    settings = USABLE_SETTINGS[name]
    assert adapter.check_settings(settings) is None
    secrets = [v for k, v in settings.items() if k in adapter.secret_settings()]
    assert all(v.startswith("SECRET-") for v in secrets)
    assert all(k in adapter.secret_settings() for k in settings if k == "apiKey")
    caplog.set_level(logging.DEBUG)
    for event in EVENTS:
        try:
            requests = adapter.transform(event, settings, not_found)
        except AdapterError as error:
            assert isinstance(error.reason, str) and error.reason
            assert 400 <= error.status <= 599
            continue
        assert isinstance(requests, list)
        assert all(isinstance(r, HttpRequest) and r.url.startswith("https://") for r in requests)
    for secret in secrets:
        assert secret not in caplog.text


def test_display_names_are_unique() -> None:
    names = [n for adapter in DESTINATION_TYPES.values() for n in adapter.display_names]
    assert len(names) == len(set(names))


def test_destinations_listing_marks_secrets() -> None:
    entries = {e["type"]: e for e in describe()}
    assert set(entries) == set(USABLE_SETTINGS)
    cio = {s["name"]: s for s in entries["customerio"]["settings"]}
    assert cio["apiKey"]["secret"] and cio["apiKey"]["required"]
    assert not cio["siteID"]["secret"] and cio["siteID"]["required"]
    text = render(as_json=False)
    assert "customerio" in text and "[required, secret]" in text


def test_type_specific_adapters_share_the_handler_table_shape() -> None:
    """Custify, Kustomer and Customer.io declare a handler per event type and use the one
    `transform` (requires → handler → or `unsupported`)."""
    from adapters.base import Adapter

    for name, types in {"custify": {"identify", "track", "group"},
                        "kustomer": {"identify", "track", "page", "screen"},
                        "customerio": {"identify", "track", "page", "screen", "alias",
                                       "group"}}.items():
        adapter = DESTINATION_TYPES[name]
        assert set(adapter.handlers) == types, name
        assert type(adapter).transform is Adapter.transform, name


def test_every_adapter_is_declared_as_data() -> None:
    """No subclass forwarding to module functions: each ADAPTER is an `Adapter(...)` value,
    and what it can do (route, batch, delete) reads off its declaration."""
    for name, adapter in DESTINATION_TYPES.items():
        assert type(adapter) is Adapter, name
    assert {n for n, a in DESTINATION_TYPES.items() if a.deletes} == {"custify", "customerio"}
    assert {n for n, a in DESTINATION_TYPES.items() if a.router} == {"customerio"}
    assert {n for n, a in DESTINATION_TYPES.items() if a.every_event} == {
        "customfit", "webhook", "console"}
