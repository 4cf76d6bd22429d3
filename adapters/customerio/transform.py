"""Customer.io processor mode, Track API v1 (customerio-behaviour.md): one event → one
request, built from the rules both modes share (rules.py); and a regulation's deletion."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from adapters.base import (
    AdapterError,
    Handler,
    HttpRequest,
    InvalidEvent,
    Lookup,
    Unsupported,
    error_for_status,
    message_type,
)
from adapters.customerio import mappings as m
from adapters.customerio.rules import (
    credentials,
    device_platform,
    event_time,
    group_object,
    host,
    identify_attributes,
    merge_body,
    page_name,
    screen_name,
    segment,
    with_retl_identity,
)
from adapters.mapping import (
    EMAIL,
    MISSING,
    USER_ID_ONLY,
    first_present,
    get_path,
    js_string,
    truthy,
)


def check(event: Mapping[str, Any], settings: Mapping[str, Any]) -> str:
    """Credentials first (siteID, then apiKey), then a track's name: the reference's order."""
    credentials(settings)
    kind = message_type(event) or "undefined"
    if kind == "track" and (not isinstance(event.get("event"), str) or not event["event"]):
        raise InvalidEvent("Event is a required field and should be a string")
    return kind


def unsupported(event: Mapping[str, Any], kind: str) -> AdapterError:
    return InvalidEvent(f"could not determine type {kind}")


Build = Callable[[Mapping[str, Any], Any, str, dict[str, str], Mapping[str, Any]], HttpRequest]


def handler(build: Build) -> Handler:
    """A v1 handler: the event with its Reverse-ETL identity, its userId, the data centre's
    host and the credentials, then the one request `build` makes of them."""
    def run(event: Mapping[str, Any], settings: Mapping[str, Any],
            lookup: Lookup) -> list[HttpRequest]:
        event = with_retl_identity(event)
        user_id = first_present(event, USER_ID_ONLY)
        return [build(event, user_id, host(settings), credentials(settings), settings)]
    return run


def activity(kind: str) -> Build:
    """track, page and screen: an event (or a device) of the person, or an anonymous event."""
    def build(event: Mapping[str, Any], user_id: Any, base: str, headers: dict[str, str],
              settings: Mapping[str, Any]) -> HttpRequest:
        return _event(event, kind, user_id, settings, base, headers)
    return build


def _group(event: Mapping[str, Any], user_id: Any, base: str, headers: dict[str, str],
           settings: Mapping[str, Any]) -> HttpRequest:
    return HttpRequest("POST", base + m.BATCH, headers, json=group_object(event))


def customer_id(event: Mapping[str, Any], user_id: Any) -> Any:
    return user_id if user_id is not MISSING else first_present(event, EMAIL)


def _identify(event: Mapping[str, Any], user_id: Any, base: str, headers: dict[str, str],
              settings: Mapping[str, Any]) -> HttpRequest:
    target = customer_id(event, user_id)
    if target is MISSING:
        raise InvalidEvent("userId or email is not present")
    url = f"{base}{m.CUSTOMERS}/{customer_segment(target, user_id)}"
    return HttpRequest("PUT", url, headers, json=identify_attributes(event))


def customer_segment(target: Any, user_id: Any) -> str:
    """The person's id (userId, else email) as its path segment, encoded as the reference's
    encodeURIComponent does; `.`, `..` and control characters are refused."""
    return segment(target, "userId" if user_id is not MISSING else "email")


def event_name(event: Mapping[str, Any], kind: str) -> Any:
    if kind == "track":
        name = event.get("event")
    elif kind == "page":
        name = page_name(event)
    else:
        screen = screen_name(event)
        name = f"Viewed {'undefined' if screen in (None, MISSING) else js_string(screen)} Screen"
    return js_string(name) if truthy(name) else (None if name is MISSING else name)


def _event(event: Mapping[str, Any], kind: str, user_id: Any, settings: Mapping[str, Any],
           base: str, headers: dict[str, str]) -> HttpRequest:
    name = event_name(event, kind)
    token = get_path(event, "context.device.token")
    target = customer_id(event, user_id)
    path_id = None if target is MISSING else customer_segment(target, user_id)
    if name == m.DEVICE_DELETE:
        if path_id is None or not truthy(token):
            raise InvalidEvent("userId/email or device_token not present")
        url = f"{base}{m.CUSTOMERS}/{path_id}/devices/{segment(token, 'context.device.token')}"
        return HttpRequest("DELETE", url, headers)
    device_events = (*m.DEVICE_EVENTS, settings.get("deviceTokenEventName"))
    if name in device_events and name and path_id is not None and truthy(token):
        device = {**(event.get("properties") or {}), "id": token,
                  "last_used": _or_null(event_time(event))}
        platform = device_platform(event)
        if platform:
            device["platform"] = platform
        return HttpRequest("PUT", f"{base}{m.CUSTOMERS}/{path_id}/devices", headers,
                           json={"device": device})
    body = _event_body(event, kind, name)
    if path_id is not None:
        return HttpRequest("POST", f"{base}{m.CUSTOMERS}/{path_id}/events", headers, json=body)
    return HttpRequest("POST", base + m.ANONYMOUS_EVENTS, headers,
                       json=_anonymous(event, kind, body))


def _event_body(event: Mapping[str, Any], kind: str, name: Any) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if event.get("properties") is not None:
        body["data"] = event["properties"]
    if name is not None:
        body["name"] = name
    body["type"] = "page" if kind == "page" else "event"
    when = event_time(event)
    if when is not MISSING:
        body["timestamp"] = when
    return body


def _anonymous(event: Mapping[str, Any], kind: str, body: dict[str, Any]) -> dict[str, Any]:
    if kind == "screen":
        screen = screen_name(event)
        text = js_string(screen) if truthy(screen) else ""
        body["name"] = f"Viewed {cut_utf8(text, m.ANONYMOUS_SCREEN_BYTES)} Screen"
    else:
        if not isinstance(body.get("name"), str):
            raise InvalidEvent("Event Name type should be a string")
        body["name"] = cut_utf8(body["name"], m.ANONYMOUS_NAME_BYTES)
    if not truthy(event.get("anonymousId")):
        raise InvalidEvent("Anonymous id/ user id is required")
    body["anonymous_id"] = event["anonymousId"]
    return body


def cut_utf8(text: str, limit: int) -> str:
    """At most `limit` UTF-8 bytes, never splitting a character."""
    return text.encode()[:limit].decode("utf-8", errors="ignore")


def _alias(event: Mapping[str, Any], user_id: Any, base: str, headers: dict[str, str],
           settings: Mapping[str, Any]) -> HttpRequest:
    previous = event.get("previousId")
    if not truthy(user_id) or not truthy(previous):
        raise InvalidEvent("Both userId and previousId are mandatory for merge operation")
    return HttpRequest("POST", base + m.MERGE, headers, json=merge_body(user_id, previous))


def _or_null(value: Any) -> Any:
    return None if value is MISSING else value


HANDLERS: dict[str, Handler] = {
    "identify": handler(_identify), "track": handler(activity("track")),
    "page": handler(activity("page")), "screen": handler(activity("screen")),
    "alias": handler(_alias), "group": handler(_group),
}


def delete_users(settings: Mapping[str, Any], users: Sequence[Mapping[str, Any]],
                 send: Lookup) -> None:
    """A regulation's deletion: `DELETE /api/v1/customers/{identifier}` (Track API v1, as
    RudderStack's deletion does) for each userId — or each email when the person has no userId
    (workspaces that identify people by email). 200 and 404 both mean gone."""
    headers = credentials(settings)
    field = "userId" if any(u.get("userId") for u in users) else "email"
    identifiers = [u[field] for u in users if u.get(field)]
    if not identifiers:
        raise Unsupported("Customer.io deletes people by id or email; the profile has neither")
    # every id checked before the first is deleted: a refused one deletes no one
    segments = [segment(identifier, field) for identifier in identifiers]
    for encoded in segments:
        url = f"{host(settings)}{m.CUSTOMERS}/{encoded}"
        response = send(HttpRequest("DELETE", url, dict(headers)))
        if response.status not in (200, 404):
            detail = response.text[:500] or f"HTTP {response.status}"
            raise error_for_status(response.status, detail)
