"""Customer.io's one description of a call (customerio-behaviour.md): each event type's handler
returns a neutral `Call` (action, identifiers, name, attributes, timestamp, device), which v1.py
renders as a Track API request and v2.py as a batch item. Where the reference's two modes
differ, the difference is data (`V1`, `V2`), so a fix to a rule reaches both."""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from adapters.base import ConfigError, InvalidEvent, basic_auth
from adapters.customerio import mappings as m
from adapters.mapping import (
    EMAIL,
    HISTORICAL_TIMESTAMP,
    MISSING,
    TRAITS,
    USER_ID_ONLY,
    Field,
    construct,
    either,
    first_defined,
    first_present,
    first_truthy,
    get_path,
    js_string,
    truthy,
    unix_seconds,
)
from adapters.urls import URI_COMPONENT_SAFE, path_segment

EMAIL_PATTERN = re.compile(r"^[^\s@]+@[^\s@]+\.[^\s@]+$")
NAME_NOT_STRING = "Event Name type should be a string"


@dataclass(frozen=True)
class Mode:
    """What the reference does differently in v1 (Track API) and v2 (batch items)."""

    pick: Callable[[Any, tuple[str, ...]], Any]  # the person's id or email: present / truthy
    identify: tuple[Field, ...]  # a person's attribute rows
    device: tuple[Field, ...]  # a registered device's attribute rows
    device_kinds: tuple[str, ...]  # the types whose name can make a device event
    strict_names: bool  # a page or screen name that is no string is an error
    in_url: bool  # the person's id goes into the URL path: checked as soon as it is resolved
    cut_anonymous: bool  # an anonymous event's name is cut to a byte limit
    no_identity: str  # the error for an event with no person and no anonymousId


V1 = Mode(first_present, m.IDENTIFY_V1, m.DEVICE_V1, ("track", "page", "screen"),
          strict_names=False, in_url=True, cut_anonymous=True,
          no_identity="Anonymous id/ user id is required")
V2 = Mode(first_truthy, m.IDENTIFY_V2, m.DEVICE_V2, ("track",), strict_names=True,
          in_url=False, cut_anonymous=False,
          no_identity="userId, email or anonymousId is required")


@dataclass(slots=True)
class Call:
    """One call to Customer.io, before either mode gives it its shape."""

    action: str  # identify, event, page, screen, add_device, delete_device, merge, object
    identifiers: dict[str, Any] | None = None  # {id}, {email} or {anonymous_id}
    name: Any = None  # None: no name
    attributes: Any = None  # the person's, the event's properties or the device's
    timestamp: Any = MISSING  # Unix seconds (None: no date); MISSING: none given
    token: Any = None  # the device's
    platform: str | None = None  # the device's
    body: dict[str, Any] | None = None  # merge and object: the same body in both modes


Handler = Callable[[Mapping[str, Any], Mapping[str, Any], Mode], Call]


def identify(event: Mapping[str, Any], settings: Mapping[str, Any], mode: Mode) -> Call:
    ids = person(event, mode)
    if ids is None:
        raise InvalidEvent("userId or email is not present")
    address = get_path(either(event, TRAITS), "address")
    attributes = construct(address, m.ADDRESS) if isinstance(address, Mapping) else {}
    attributes.update(construct(event, mode.identify))
    return Call("identify", ids, attributes=attributes)


def activity(kind: str) -> Handler:
    """track, page and screen: a device registered or deleted, or an event of the person (or
    of the anonymous visitor)."""
    def call(event: Mapping[str, Any], settings: Mapping[str, Any], mode: Mode) -> Call:
        name = event_name(event, kind, mode)
        ids = person(event, mode)
        if kind in mode.device_kinds and (kind == "track" or truthy(name)):
            device = device_call(event, name, settings, ids, mode)
            if device is not None:
                return device
        if kind == "track":
            require_name(event)
        if ids is None:
            if mode.cut_anonymous:
                name = anonymous_name(event, kind, name)
            if not truthy(event.get("anonymousId")):
                raise InvalidEvent(mode.no_identity)
            ids = {"anonymous_id": event["anonymousId"]}
        return Call("event" if kind == "track" else kind, ids, name, event.get("properties"),
                    event_time(event))
    return call


def alias(event: Mapping[str, Any], settings: Mapping[str, Any], mode: Mode) -> Call:
    user_id, previous = first_present(event, USER_ID_ONLY), event.get("previousId")
    if not truthy(user_id) or not truthy(previous):
        raise InvalidEvent("Both userId and previousId are mandatory for merge operation")
    return Call("merge", body={"primary": {identifier_key(user_id): user_id},
                               "secondary": {identifier_key(previous): previous}})


def group(event: Mapping[str, Any], settings: Mapping[str, Any], mode: Mode) -> Call:
    """An object: the group, its attributes and the person's relationship to it."""
    mapped = construct(event, m.GROUP)
    action = mapped.get("action")
    traits = event.get("traits")
    attributes = {k: v for k, v in traits.items() if k != "action"} \
        if isinstance(traits, Mapping) else {}
    member = mapped.get("user_id") if truthy(mapped.get("user_id")) else mapped.get("email")
    relationships = [{"identifiers": {identifier_key(member): member}}] if truthy(member) else []
    return Call("object", body={
        "identifiers": {"object_id": mapped["object_id"],
                        "object_type_id": mapped["object_type_id"]},
        "type": "object", "action": action if action in m.GROUP_ACTIONS else "identify",
        "attributes": attributes, "cio_relationships": relationships})


HANDLERS: dict[str, Handler] = {
    "identify": identify, "track": activity("track"), "page": activity("page"),
    "screen": activity("screen"), "alias": alias, "group": group,
}


def require_name(event: Mapping[str, Any]) -> None:
    """A track's `event` is a non-empty string: v1 checks it first, v2 once no device
    registration took the event."""
    if not isinstance(event.get("event"), str) or not event["event"]:
        raise InvalidEvent("Event is a required field and should be a string")


def person(event: Mapping[str, Any], mode: Mode) -> dict[str, Any] | None:
    """{id: userId}, else {email: String(email)}; None when neither."""
    user_id = mode.pick(event, USER_ID_ONLY)
    if user_id is not MISSING:
        ids = {"id": user_id}
    else:
        email = mode.pick(event, EMAIL)
        if email is MISSING:
            return None
        ids = {"email": js_string(email)}
    if mode.in_url:
        person_segment(ids)
    return ids


def person_segment(ids: Mapping[str, Any]) -> str:
    """The person's id as its path segment, encoded as the reference's encodeURIComponent does;
    `.`, `..` and control characters are refused."""
    key, value = next(iter(ids.items()))
    return segment(value, "userId" if key == "id" else "email")


segment = functools.partial(path_segment, safe=URI_COMPONENT_SAFE)  # (value, field)


def event_name(event: Mapping[str, Any], kind: str, mode: Mode) -> Any:
    """track: `event` as it is; page: `name || properties.url`; screen: `"Viewed " + (event ||
    properties.name) + " Screen"`. A truthy name becomes a string; None: no name."""
    if kind == "track":
        return event.get("event", MISSING)
    value = either(event, m.PAGE_NAME if kind == "page" else m.SCREEN_NAME)
    if mode.strict_names and not isinstance(value, str):
        raise InvalidEvent(NAME_NOT_STRING)
    if kind == "screen":
        return f"Viewed {'undefined' if value in (None, MISSING) else js_string(value)} Screen"
    return js_string(value) if truthy(value) else (None if value is MISSING else value)


def anonymous_name(event: Mapping[str, Any], kind: str, name: Any) -> str:
    """An anonymous event's name, cut to a number of UTF-8 bytes."""
    if kind == "screen":
        screen = either(event, m.SCREEN_NAME)
        text = js_string(screen) if truthy(screen) else ""
        return f"Viewed {cut_utf8(text, m.ANONYMOUS_SCREEN_BYTES)} Screen"
    if not isinstance(name, str):
        raise InvalidEvent(NAME_NOT_STRING)
    return cut_utf8(name, m.ANONYMOUS_NAME_BYTES)


def cut_utf8(text: str, limit: int) -> str:
    """At most `limit` UTF-8 bytes, never splitting a character."""
    return text.encode()[:limit].decode("utf-8", errors="ignore")


def device_call(event: Mapping[str, Any], name: Any, settings: Mapping[str, Any],
                ids: dict[str, Any] | None, mode: Mode) -> Call | None:
    """An uninstall deletes the device (an error without a person or token); an install, open
    or `deviceTokenEventName` (absent == absent included) registers it when both are there;
    None goes on as an ordinary event."""
    token = get_path(event, "context.device.token")
    if name == m.DEVICE_DELETE:
        if ids is None or not truthy(token):
            raise InvalidEvent("userId/email or device_token not present")
        return Call("delete_device", ids, token=token)
    if name not in m.DEVICE_EVENTS and name != settings.get("deviceTokenEventName", MISSING):
        return None
    if ids is None or not truthy(token):
        return None
    return Call("add_device", ids, attributes=construct(event, mode.device),
                timestamp=event_time(event), token=token, platform=device_platform(event))


def event_time(event: Mapping[str, Any]) -> Any:
    """Unix seconds of `timestamp || originalTimestamp`; MISSING with neither; None (JSON
    null, the reference's NaN) when the value is no date."""
    value = first_truthy(event, HISTORICAL_TIMESTAMP)
    return MISSING if value is MISSING else unix_seconds(value)


def device_platform(event: Mapping[str, Any]) -> str | None:
    kind = get_path(event, "context.device.type")
    if not isinstance(kind, str) or not kind:
        return None
    return "ios" if kind.lower() in m.APPLE_PLATFORMS else kind.lower()


def identifier_key(value: Any) -> str:
    """A merged person or an object's member is keyed `email` when it looks like one."""
    return "email" if isinstance(value, str) and EMAIL_PATTERN.match(value) else "id"


def with_retl_identity(event: Mapping[str, Any]) -> Mapping[str, Any]:
    """Reverse ETL: the first externalId goes into the traits under its identifierType and,
    when truthy, replaces userId."""
    if not truthy(get_path(event, "context.mappedToDestination")):
        return event
    event = copy.deepcopy(dict(event))
    identifier_type = get_path(event, "context.externalId.0.identifierType")
    external_id = get_path(event, "context.externalId.0.id")
    traits = first_defined(event, TRAITS)  # `traits ?? context.traits`
    if isinstance(traits, dict) and isinstance(identifier_type, str):
        traits[identifier_type] = None if external_id is MISSING else external_id
    if truthy(external_id):
        event["userId"] = external_id
    return event


def credentials(settings: Mapping[str, Any]) -> dict[str, str]:
    """Checked before anything in the event, siteID first (as the reference does)."""
    site_id, api_key = settings.get("siteID"), settings.get("apiKey")
    if not site_id:
        raise ConfigError("siteID not found in Configs")
    if not api_key:
        raise ConfigError("apiKey not found in Configs")
    return {"Authorization": basic_auth(site_id, api_key)}


def host(settings: Mapping[str, Any]) -> str:
    return m.EU_HOST if settings.get("datacenter") == "EU" else m.US_HOST
