"""Customer.io: people, events, page and screen views, devices, merges (alias) and objects
(group). Router mode batches objects (v1) or, with `v2Batching`, everything (v2 batch API)."""

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
from adapters.customerio import batching
from adapters.customerio import transform as customerio


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

    def rejected_items(self, status: int, body: Any) -> dict[int, str]:
        return batching.rejected_items(status, body)

    def batches(self, settings: Mapping[str, Any]) -> bool:
        return bool(settings.get("v2Batching"))

    def transform_batch(self, items: Sequence[BatchItem], lookup: Lookup) -> list[BatchOutput]:
        if any(item.settings.get("v2Batching") for item in items):
            return batching.batch_v2(items)
        return batching.batch_v1(items)


ADAPTER = CustomerIoAdapter()
