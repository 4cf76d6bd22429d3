"""Custify: people (identify), events (track), companies (group) and user deletion."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from marshmallow import fields

from adapters.base import Adapter, Lookup, SettingsSchema, Unsupported, secret
from adapters.custify import transform as custify


class CustifySettings(SettingsSchema):
    apiKey = fields.String(required=True, metadata=secret(description="Custify API token"))
    sendAnonymousId = fields.Boolean(metadata={
        "description": "use anonymousId as user_id when no user id resolves"})
    enablededuplication = fields.Boolean(metadata={"description": "track: add deduplication_id"})
    deduplicationField = fields.String(metadata={
        "description": "dot path of the deduplication id (default: messageId)"})


class CustifyAdapter(Adapter):
    name = "custify"
    display_names = ("Custify",)
    settings_schema = CustifySettings
    handlers = custify.HANDLERS

    def check(self, event: Mapping[str, Any], settings: Mapping[str, Any]) -> str:
        return custify.check(event, settings)

    def delete_users(self, settings: Mapping[str, Any] | None,
                     users: Sequence[Mapping[str, Any]], send: Lookup) -> None:
        if users and all(u.get("email") and not u.get("userId") for u in users):
            # a regulation for a person known by email alone: Custify deletes by user_id only
            raise Unsupported("Custify deletes people by user_id; the profile has none")
        custify.delete_users(settings, users, send)


ADAPTER = CustifyAdapter()
