"""Kustomer settings that a conformance case cannot express: checked when the config loads."""

from __future__ import annotations

import pytest

from adapters.kustomer import ADAPTER
from adapters.kustomer.transform import base_url


@pytest.mark.parametrize("settings,host", [
    ({}, "https://api.kustomerapp.com"),
    ({"orgPod": ""}, "https://api.kustomerapp.com"),
    ({"orgPod": "prod1"}, "https://api.kustomerapp.com"),
    ({"orgPod": "prod2"}, "https://api.prod2.kustomerapp.com"),
    ({"orgPod": "prod7"}, "https://api.prod7.kustomerapp.com"),
    ({"orgPod": "prod2", "baseEndpoint": "https://eu.example/"}, "https://eu.example"),
])
def test_base_url(settings, host: str) -> None:
    assert base_url(settings) == host


def test_a_bad_org_pod_fails_at_config_load() -> None:
    message = ADAPTER.check_settings({"apiKey": "k", "orgPod": "eu-west"})
    assert message and "orgPod" in message and "eu-west" in message
    assert ADAPTER.check_settings({"apiKey": "k", "orgPod": "prod2"}) is None
    assert "apiKey" in ADAPTER.check_settings({"orgPod": "prod2"})
    assert ADAPTER.secret_settings() == {"apiKey"}
