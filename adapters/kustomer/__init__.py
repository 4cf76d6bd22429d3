"""Kustomer: customers (identify, looked up then created or updated) and tracking events
(track, page, screen). RudderStack's settings, or Segment's (`apiKey` + `orgPod`) unchanged."""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, validates

from adapters.base import Adapter, ConfigError, SettingsSchema, secret
from adapters.kustomer import transform as kustomer


class KustomerSettings(SettingsSchema):
    apiKey = fields.String(required=True, metadata=secret(description="Kustomer API key"))
    baseEndpoint = fields.String(metadata={
        "description": "API host, e.g. https://api.prod2.kustomerapp.com (EU)"})
    orgPod = fields.String(metadata={"description": "Segment-style pod: prod1 (default), prod2…"})
    genericPage = fields.Boolean(metadata={"description": "name every page Web-Page-Viewed"})
    genericScreen = fields.Boolean(metadata={"description": "name every screen Screen-Viewed"})
    advancedTransform = fields.Boolean(metadata={"description": "typed attribute names"})
    setIdentityEmail = fields.Boolean(metadata={"description": "send identity.email"})
    disableEmailAsTrackingProperty = fields.Boolean(metadata={
        "description": "with setIdentityEmail: drop email from event meta"})

    @validates("orgPod")
    def _known_pod(self, value: str, **kwargs: Any) -> None:
        try:
            kustomer.base_url({"orgPod": value})
        except ConfigError as exc:
            raise ValidationError(exc.reason) from None


ADAPTER = Adapter(
    name="kustomer",
    display_names=("Kustomer",),
    settings_schema=KustomerSettings,
    default_rate=4.0,  # Kustomer: 300/min on the smallest plan; stay under it (docs, section 4)
    handlers=kustomer.HANDLERS,
    requires=kustomer.check,
    unsupported=kustomer.unsupported,
)
