"""Segment-format webhook: POST each stored event, as Segment would, to a user-given URL.

This is also how a user reaches Kustomer's Segment app or any Segment partner receiver
(docs/design.md §7): `apiKey` becomes the Basic username, `sharedSecret` signs the exact body
(`X-Signature` = hex HMAC-SHA1, as Segment's webhooks do), the non-secret settings travel in
`X-Segment-Settings`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from marshmallow import ValidationError, fields, validates

from adapters.base import Adapter, ConfigError, HttpRequest, Lookup, SettingsSchema, secret
from adapters.segment_format import encoded_settings, segment_post

SECRET_SETTINGS = ("apiKey", "sharedSecret")
RESERVED_HEADERS = {"authorization", "content-type", "x-signature", "x-segment-settings"}


class WebhookSettings(SettingsSchema):
    webhookUrl = fields.String(required=True, metadata={"description": "the receiver's URL"})
    apiKey = fields.String(metadata=secret(description="Basic auth username"))
    sharedSecret = fields.String(metadata=secret(description="HMAC-SHA1 key for X-Signature"))
    # values are often credentials (a bearer token for the receiver): redacted like secrets
    # wherever an excerpt or a setting is shown; they still travel in X-Segment-Settings
    headers = fields.Dict(keys=fields.String(), values=fields.String(),
                          metadata=secret(description="extra request headers"))

    @validates("webhookUrl")
    def _http_url(self, value: str, **kwargs: Any) -> None:
        if not value.startswith(("http://", "https://")):
            raise ValidationError("must be an http(s) URL")

    @validates("headers")
    def _no_reserved(self, value: Mapping[str, str], **kwargs: Any) -> None:
        clash = sorted(k for k in value if k.lower() in RESERVED_HEADERS)
        if clash:
            raise ValidationError(f"{clash[0]} is set by the webhook itself")


def transform(event: Mapping[str, Any], settings: Mapping[str, Any],
          lookup: Lookup) -> list[HttpRequest]:
    """Every type the same way: the event in Segment's format, signed when asked."""
    url = settings.get("webhookUrl")
    if not url:
        raise ConfigError("webhookUrl is required")
    public = {k: v for k, v in settings.items() if k not in SECRET_SETTINGS}
    headers = {**(settings.get("headers") or {}),
               "X-Segment-Settings": encoded_settings(public)}
    request = segment_post(url, event, settings.get("apiKey"), headers)
    shared_secret = settings.get("sharedSecret")
    if shared_secret and request.data is not None:
        signature = hmac.new(shared_secret.encode(), request.data, hashlib.sha1).hexdigest()
        request = dataclasses.replace(request,
                                      headers={**request.headers, "X-Signature": signature})
    return [request]


ADAPTER = Adapter(
    name="webhook",
    display_names=("Webhook", "Webhooks"),
    settings_schema=WebhookSettings,
    every_event=transform,
)
