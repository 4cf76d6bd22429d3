"""Webhook and CustomFit details a conformance case cannot express."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from adapters.base import ConfigError, Unsupported, no_lookups
from adapters.customfit import ADAPTER as CUSTOMFIT
from adapters.webhook import ADAPTER as WEBHOOK

EVENT = {"type": "track", "userId": "u", "event": "Signed Up", "messageId": "m",
         "properties": {"plan": "pro", "seats": 3}, "request_ip": "10.0.0.1"}


def test_webhook_signs_the_exact_body_bytes() -> None:
    [request] = WEBHOOK.transform(EVENT, {"webhookUrl": "https://r.example/in",
                                          "sharedSecret": "s3cret"}, no_lookups)
    assert request.data is not None
    expected = hmac.new(b"s3cret", request.data, hashlib.sha1).hexdigest()
    assert request.headers["X-Signature"] == expected
    assert json.loads(request.data) == {k: v for k, v in EVENT.items() if k != "request_ip"}


def test_webhook_without_key_sends_no_authorization_and_hides_secrets() -> None:
    settings = {"webhookUrl": "https://r.example/in", "sharedSecret": "s3cret"}
    [request] = WEBHOOK.transform(EVENT, settings, no_lookups)
    assert "Authorization" not in request.headers
    assert b"s3cret" not in request.headers["X-Segment-Settings"].encode()
    assert WEBHOOK.secret_settings() == {"apiKey", "sharedSecret", "headers"}
    assert WEBHOOK.redact({"apiKey": "k", "webhookUrl": "u"}) == {"apiKey": "***",
                                                                   "webhookUrl": "u"}


@pytest.mark.parametrize("settings,problem", [
    ({}, "webhookUrl"),
    ({"webhookUrl": "ftp://x"}, "webhookUrl"),
    ({"webhookUrl": "https://x", "headers": {"Authorization": "Bearer t"}}, "headers"),
])
def test_webhook_settings_are_checked_at_config_load(settings, problem: str) -> None:
    message = WEBHOOK.check_settings(settings)
    assert message and problem in message


def test_customfit_group_and_alias_are_skipped_not_failed() -> None:
    settings = {"apiKey": "k", "endpointUrl": "https://cf.example"}
    for kind in ("group", "alias"):
        with pytest.raises(Unsupported):
            CUSTOMFIT.transform({"type": kind, "userId": "u"}, settings, no_lookups)


def test_customfit_settings() -> None:
    assert CUSTOMFIT.check_settings({"apiKey": "k", "endpointUrl": "https://cf.example"}) is None
    assert CUSTOMFIT.check_settings({"apiKey": "k", "mode": "native"}) is None
    assert "endpointUrl" in CUSTOMFIT.check_settings({"apiKey": "k"})
    assert "mode" in CUSTOMFIT.check_settings({"apiKey": "k", "mode": "carrier-pigeon"})
    assert "apiKey" in CUSTOMFIT.check_settings({"mode": "native"})
    assert CUSTOMFIT.secret_settings() == {"apiKey"}
    with pytest.raises(ConfigError):
        CUSTOMFIT.transform(EVENT, {"apiKey": "k"}, no_lookups)
