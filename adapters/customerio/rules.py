"""Customer.io's rules both API modes share (customerio-behaviour.md): one owner each, so a
fix reaches the v1 requests (transform.py) and the v2 batch items (v2.py) alike."""

from __future__ import annotations

import base64
import copy
import re
from collections.abc import Mapping
from typing import Any

from adapters.base import ConfigError
from adapters.customerio import mappings as m
from adapters.mapping import (
    CREATED_AT_ONLY,
    HISTORICAL_TIMESTAMP,
    MISSING,
    construct,
    either,
    first_present,
    get_path,
    truthy,
    unix_seconds,
)
from adapters.urls import URI_COMPONENT_SAFE, path_segment

EMAIL_PATTERN = re.compile(r"^[^\s@]+@[^\s@]+\.[^\s@]+$")


def credentials(settings: Mapping[str, Any]) -> dict[str, str]:
    """Checked before anything in the event, siteID first (as the reference does)."""
    site_id, api_key = settings.get("siteID"), settings.get("apiKey")
    if not site_id:
        raise ConfigError("siteID not found in Configs")
    if not api_key:
        raise ConfigError("apiKey not found in Configs")
    token = base64.b64encode(f"{site_id}:{api_key}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def host(settings: Mapping[str, Any]) -> str:
    return m.EU_HOST if settings.get("datacenter") == "EU" else m.US_HOST


def with_retl_identity(event: Mapping[str, Any]) -> Mapping[str, Any]:
    """Reverse ETL: the first externalId goes into the traits under its identifierType and,
    when truthy, replaces userId."""
    if not truthy(get_path(event, "context.mappedToDestination")):
        return event
    event = copy.deepcopy(dict(event))
    identifier_type = get_path(event, "context.externalId.0.identifierType")
    external_id = get_path(event, "context.externalId.0.id")
    traits = event.get("traits") if event.get("traits") is not None else get_path(
        event, "context.traits")
    if isinstance(traits, dict) and isinstance(identifier_type, str):
        traits[identifier_type] = None if external_id is MISSING else external_id
    if truthy(external_id):
        event["userId"] = external_id
    return event


def segment(value: Any, field: str) -> str:
    return path_segment(value, field, safe=URI_COMPONENT_SAFE)


def identify_attributes(event: Mapping[str, Any]) -> dict[str, Any]:
    """The person's attributes, each step overwriting the one before (behaviour §identify)."""
    body: dict[str, Any] = {}
    root = event.get("traits") if truthy(event.get("traits")) else get_path(event,
                                                                            "context.traits")
    address = root.get("address") if isinstance(root, Mapping) else None
    if isinstance(address, Mapping):
        body.update({k: address[k] for k in m.ADDRESS_KEYS if address.get(k) is not None})
    traits = event.get("traits") if event.get("traits") is not None else get_path(
        event, "context.traits")
    if isinstance(traits, Mapping):
        body.update({k: v for k, v in traits.items() if k not in m.NOT_COPIED_TRAITS})
    if isinstance(event.get("user_properties"), Mapping):
        body.update(event["user_properties"])
    created_at = first_present(event, CREATED_AT_ONLY)
    if created_at is not MISSING:
        body["created_at"] = unix_seconds(created_at)
    when = event_time(event)
    if when is not MISSING:
        body["_timestamp"] = when
    if truthy(event.get("anonymousId")):
        body["anonymous_id"] = event["anonymousId"]
    return body


def event_time(event: Mapping[str, Any]) -> Any:
    """Unix seconds of `timestamp || originalTimestamp`; MISSING with neither; None (JSON
    null, the reference's NaN) when the value is no date."""
    value = either(event, HISTORICAL_TIMESTAMP)
    if not truthy(value):
        return MISSING
    return unix_seconds(value)


def page_name(event: Mapping[str, Any]) -> Any:
    """`name || properties.url`, as it is: the one page-name rule of both API modes."""
    return either(event, m.PAGE_NAME)


def screen_name(event: Mapping[str, Any]) -> Any:
    """`event || properties.name`, as it is: the one screen-name rule of both API modes."""
    return either(event, m.SCREEN_NAME)


def device_platform(event: Mapping[str, Any]) -> str | None:
    kind = get_path(event, "context.device.type")
    if not isinstance(kind, str) or not kind:
        return None
    return "ios" if kind.lower() in m.APPLE_PLATFORMS else kind.lower()


def merge_body(primary: Any, secondary: Any) -> dict[str, Any]:
    """Each person of a merge keyed `email` when it looks like one, else `id` (both modes)."""
    return {"primary": {identifier_key(primary): primary},
            "secondary": {identifier_key(secondary): secondary}}


def identifier_key(value: Any) -> str:
    return "email" if isinstance(value, str) and EMAIL_PATTERN.match(value) else "id"


def group_object(event: Mapping[str, Any]) -> dict[str, Any]:
    """A v2 object: the group, its attributes and the person's relationship to it."""
    mapped = construct(event, m.GROUP)
    action = mapped.get("action")
    traits = event.get("traits")
    attributes = {k: v for k, v in traits.items() if k != "action"} \
        if isinstance(traits, Mapping) else {}
    member = mapped.get("user_id") if truthy(mapped.get("user_id")) else mapped.get("email")
    relationships = [{"identifiers": {identifier_key(member): member}}] if truthy(member) else []
    return {"identifiers": {"object_id": mapped["object_id"],
                            "object_type_id": mapped["object_type_id"]},
            "type": "object",
            "action": action if action in m.GROUP_ACTIONS else "identify",
            "attributes": attributes, "cio_relationships": relationships}
