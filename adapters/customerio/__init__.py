"""Customer.io: people, events, page and screen views, devices, merges (alias) and objects
(group), one request per event (Track API v1) or, with `v2Batching`, every event an item of the
v2 batch API."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from marshmallow import fields, validate

from adapters.base import (
    Adapter,
    AdapterError,
    BatchItem,
    BatchOutput,
    Lookup,
    SettingsSchema,
    secret,
)
from adapters.customerio import transform as customerio
from adapters.customerio import v2


class CustomerIoSettings(SettingsSchema):
    siteID = fields.String(required=True, metadata={"description": "Customer.io site ID"})
    apiKey = fields.String(required=True, metadata=secret(description="Track API key"))
    datacenter = fields.String(validate=validate.OneOf(("US", "EU", "")),
                               metadata={"description": "US (default) or EU"})
    deviceTokenEventName = fields.String(metadata={
        "description": "a track event that registers context.device.token"})
    sendPageNameInSDK = fields.Boolean(metadata={"description": "device mode only; ignored"})
    v2Batching = fields.Boolean(metadata={
        "description": "send everything through the v2 batch API (RudderStack's flag-gated "
                       "router v2)"})


class CustomerIoAdapter(Adapter):
    name = "customerio"
    display_names = ("Customer.io", "Customer IO", "CustomerIO")
    settings_schema = CustomerIoSettings
    default_rate = 100.0  # Customer.io: ~100 requests/s per workspace (docs, section 4)

    handlers = customerio.HANDLERS

    def check(self, event: Mapping[str, Any], settings: Mapping[str, Any]) -> str:
        return customerio.check(event, settings)

    def unsupported(self, event: Mapping[str, Any], kind: str) -> AdapterError:
        return customerio.unsupported(event, kind)

    def delete_users(self, settings: Mapping[str, Any] | None,
                     users: Sequence[Mapping[str, Any]], send: Lookup) -> None:
        customerio.delete_users(settings or {}, users, send)

    def rejected_items(self, status: int, body: Any) -> dict[int, str]:
        return v2.rejected_items(status, body)

    def batches(self, settings: Mapping[str, Any]) -> bool:
        return bool(settings.get("v2Batching"))

    def transform_batch(self, items: Sequence[BatchItem], lookup: Lookup) -> list[BatchOutput]:
        """With `v2Batching`, the v2 batch API; without, each event on its own (Track API v1),
        as the worker sends it: RudderStack's v1 router also batches group objects, always to
        the US host, which would send an EU workspace's objects to the US."""
        if any(self.batches(item.settings) for item in items):
            return v2.batch(items)
        return super().transform_batch(items, lookup)


ADAPTER = CustomerIoAdapter()
