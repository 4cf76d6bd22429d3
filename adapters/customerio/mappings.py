"""Customer.io's mapping rows and constants (customerio-behaviour.md): data only."""

from __future__ import annotations

from adapters.mapping import USER_ID_ONLY, Field

US_HOST = "https://track.customer.io"
EU_HOST = "https://track-eu.customer.io"
CUSTOMERS = "/api/v1/customers"
ANONYMOUS_EVENTS = "/api/v1/events"
MERGE = "/api/v1/merge_customers"
BATCH = "/api/v2/batch"

DEVICE_EVENTS = ("Application Installed", "Application Opened", "Application Uninstalled")
DEVICE_DELETE = "Application Uninstalled"
APPLE_PLATFORMS = ("ios", "watchos", "ipados", "tvos")
ADDRESS_KEYS = ("city", "country", "postalCode", "state", "street")
NOT_COPIED_TRAITS = ("address", "createdAt", "userId", "anonymousId")
GROUP_ACTIONS = ("identify", "delete", "add_relationships", "delete_relationships")
ANONYMOUS_NAME_BYTES = 100
ANONYMOUS_SCREEN_BYTES = 86
# `a || b`: the first truthy, else the last as it is (mapping.either)
PAGE_NAME = ("name", "properties.url")
SCREEN_NAME = ("event", "properties.name")

GROUP = (
    Field("object_id", ("groupId", "traits.groupId"), required=True, fmt="string",
          label="groupId"),
    Field("object_type_id", ("traits.objectTypeId",), fmt="string", default="1"),
    Field("user_id", USER_ID_ONLY, fmt="string"),
    Field("email", ("context.traits.email", "properties.email", "context.externalId.0.id")),
    Field("action", ("traits.action", "properties.action")),
)

# v2 add_device: the device's context, then the event's properties over it
DEVICE_ATTRIBUTES = (
    Field("device_os", "context.os.name"),
    Field("device_model", "context.device.model"),
    Field("app_version", "context.app.version"),
    Field("device_locale", "context.locale"),
    Field("", "properties", spread=True),
)
