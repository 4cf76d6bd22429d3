"""CustomFit.ai (docs/destinations/customfit.md §4): two delivery modes.

Mode A (`webhook`, the default): Segment's partner-webhook format to the user-given
`endpointUrl` — CustomFit maps the raw events itself. Mode B (`native`): CustomFit's events API
as its client SDKs use it, with the Segment mapping of §1 applied here. Both modes skip group and
alias ("unsupported for destination"), which CustomFit documents no use for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marshmallow import ValidationError, fields, validate, validates_schema

from adapters.base import (
    Adapter,
    ConfigError,
    HttpRequest,
    InvalidEvent,
    Lookup,
    SettingsSchema,
    Unsupported,
    secret,
)
from adapters.customfit.native import native_request
from adapters.segment_format import segment_post

SUPPORTED = ("identify", "track", "page", "screen")


class CustomFitSettings(SettingsSchema):
    apiKey = fields.String(required=True, metadata=secret(
        description="the CustomFit Server Key (Segment's 'API Key')"))
    mode = fields.String(load_default="webhook", validate=validate.OneOf(("webhook", "native")),
                         metadata={"description": "webhook (Segment format, default) | native"})
    endpointUrl = fields.String(metadata={"description": "mode webhook: CustomFit's receiver URL"})

    @validates_schema
    def _webhook_needs_a_url(self, data: Mapping[str, Any], **kwargs: Any) -> None:
        if data.get("mode", "webhook") == "webhook" and not data.get("endpointUrl"):
            raise ValidationError(NO_URL, "endpointUrl")


NO_URL = ("required in webhook mode: CustomFit's Segment receiver URL is not public, "
          "so there is no default (ask CustomFit for it, or use mode = \"native\")")


def transform(event: Mapping[str, Any], settings: Mapping[str, Any],
          lookup: Lookup) -> list[HttpRequest]:
    """Every type the same way: the API key, a supported type, then the mode's request."""
    key = settings.get("apiKey")
    if not key:
        raise ConfigError("apiKey is required")
    kind = event.get("type")
    if not isinstance(kind, str) or not kind:
        raise InvalidEvent("message type is required")
    if kind.lower() not in SUPPORTED:
        raise Unsupported(f"{kind} is unsupported for destination CustomFit")
    if settings.get("mode", "webhook") == "native":
        return [native_request(event, kind.lower(), key)]
    url = settings.get("endpointUrl")
    if not url:
        raise ConfigError(f"endpointUrl is {NO_URL}")
    return [segment_post(url, event, key)]


ADAPTER = Adapter(
    name="customfit",
    display_names=("CustomFit", "CustomFit.ai"),
    settings_schema=CustomFitSettings,
    every_event=transform,
)
