"""Customer.io: people, events, page and screen views, devices, merges (alias) and objects
(group), one request per event (Track API v1) or, with `v2Batching`, every event an item of the
v2 batch API."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marshmallow import fields, validate

from adapters.base import Adapter, SettingsSchema, secret
from adapters.customerio import v1, v2


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


def batches(settings: Mapping[str, Any]) -> bool:
    """Only `v2Batching` batches: without it the worker sends each event on its own (Track API
    v1). RudderStack's v1 router also batches group objects, always to the US host, which
    would send an EU workspace's objects to the US; it is not reproduced."""
    return bool(settings.get("v2Batching"))


ADAPTER = Adapter(
    name="customerio",
    display_names=("Customer.io", "Customer IO", "CustomerIO"),
    settings_schema=CustomerIoSettings,
    default_rate=100.0,  # Customer.io: ~100 requests/s per workspace (docs, section 4)
    handlers=v1.HANDLERS,
    requires=v1.check,
    unsupported=v1.unsupported,
    router=v2.batch,
    batches_when=batches,
    rejected=v2.rejected_items,
    deletion=v1.delete_users,
)
