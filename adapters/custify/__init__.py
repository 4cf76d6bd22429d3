"""Custify: people (identify), events (track), companies (group) and user deletion."""

from __future__ import annotations

from marshmallow import fields

from adapters.base import Adapter, SettingsSchema, secret
from adapters.custify import transform as custify


class CustifySettings(SettingsSchema):
    apiKey = fields.String(required=True, metadata=secret(description="Custify API token"))
    sendAnonymousId = fields.Boolean(metadata={
        "description": "use anonymousId as user_id when no user id resolves"})
    enablededuplication = fields.Boolean(metadata={"description": "track: add deduplication_id"})
    deduplicationField = fields.String(metadata={
        "description": "dot path of the deduplication id (default: messageId)"})


ADAPTER = Adapter(
    name="custify",
    display_names=("Custify",),
    settings_schema=CustifySettings,
    handlers=custify.HANDLERS,
    requires=custify.check,
    deletion=custify.delete_users,
)
