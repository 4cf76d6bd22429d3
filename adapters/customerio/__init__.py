"""Customer.io: people, events, page and screen views, devices, merges (alias) and objects
(group). Router mode batches objects (v1) or, with `v2Batching`, everything (v2 batch API)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class ApiMode:
    """One way of talking to Customer.io: processor mode sends one request per event (the
    handler table); router mode groups events (`router`). `worker_batches`: the worker hands
    this mode's deliveries to the router."""

    name: str
    router: Callable[[Sequence[BatchItem]], list[BatchOutput]]
    worker_batches: bool


# v1: Track API v1 per event (processor), group objects batched in router mode; v2: every
# event an item of /api/v2/batch (`v2Batching`, RudderStack's flag-gated router v2).
V1 = ApiMode("v1", batching.batch_v1, worker_batches=False)
V2 = ApiMode("v2", batching.batch_v2, worker_batches=True)


def api_mode(settings: Mapping[str, Any]) -> ApiMode:
    return V2 if settings.get("v2Batching") else V1


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
        return batching.rejected_items(status, body)

    def batches(self, settings: Mapping[str, Any]) -> bool:
        return api_mode(settings).worker_batches

    def transform_batch(self, items: Sequence[BatchItem], lookup: Lookup) -> list[BatchOutput]:
        mode = V2 if any(api_mode(item.settings) is V2 for item in items) else V1
        return mode.router(items)


ADAPTER = CustomerIoAdapter()
