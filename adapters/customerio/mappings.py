"""Customer.io's mapping rows and constants (customerio-behaviour.md): data only."""

from __future__ import annotations

from adapters.mapping import CREATED_AT_ONLY, HISTORICAL_TIMESTAMP, TRAITS, USER_ID_ONLY, Field

US_HOST = "https://track.customer.io"
EU_HOST = "https://track-eu.customer.io"
CUSTOMERS = "/api/v1/customers"
ANONYMOUS_EVENTS = "/api/v1/events"
MERGE = "/api/v1/merge_customers"
BATCH = "/api/v2/batch"

DEVICE_EVENTS = ("Application Installed", "Application Opened", "Application Uninstalled")
DEVICE_DELETE = "Application Uninstalled"
APPLE_PLATFORMS = ("ios", "watchos", "ipados", "tvos")
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

# identify, first: the keys of the address (`(traits || context.traits).address`) not null
ADDRESS = tuple(Field(key, key, pick="defined")
                for key in ("city", "country", "postalCode", "state", "street"))
# then these over them, each row overwriting the one before (behaviour §identify): the traits
# (`traits ?? context.traits`), v1's user_properties, created_at, _timestamp, anonymous_id
_TRAITS = Field("", TRAITS, pick="defined", spread=True,
                exclude=("address", "createdAt", "userId", "anonymousId"))
_AFTER_TRAITS = (
    Field("created_at", CREATED_AT_ONLY, fmt="unix_seconds_or_null"),
    Field("_timestamp", HISTORICAL_TIMESTAMP, pick="truthy", fmt="unix_seconds_or_null"),
    Field("anonymous_id", ("anonymousId",), pick="truthy"),
)
IDENTIFY_V1 = (_TRAITS, Field("", "user_properties", spread=True), *_AFTER_TRAITS)
IDENTIFY_V2 = (_TRAITS, *_AFTER_TRAITS)  # v2 leaves user_properties out

# a registered device's attributes: v1 spreads the properties; v2 reads the device's context,
# then the event's properties over it
DEVICE_V1 = (Field("", "properties", spread=True),)
DEVICE_V2 = (
    Field("device_os", "context.os.name"),
    Field("device_model", "context.device.model"),
    Field("app_version", "context.app.version"),
    Field("device_locale", "context.locale"),
    Field("", "properties", spread=True),
)
