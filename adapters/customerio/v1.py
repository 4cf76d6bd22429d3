"""Customer.io processor mode, Track API v1 (customerio-behaviour.md): each event's call
(calls.py) rendered as one request; and a regulation's deletion."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from adapters.base import (
    AdapterError,
    Handler,
    HttpRequest,
    InvalidEvent,
    Lookup,
    Unsupported,
    delete_each,
    message_type,
)
from adapters.customerio import calls
from adapters.customerio import mappings as m
from adapters.mapping import MISSING


def check(event: Mapping[str, Any], settings: Mapping[str, Any]) -> str:
    """Credentials first (siteID, then apiKey), then a track's name: the reference's order."""
    calls.credentials(settings)
    kind = message_type(event) or "undefined"
    if kind == "track":
        calls.require_name(event)
    return kind


def unsupported(event: Mapping[str, Any], kind: str) -> AdapterError:
    return InvalidEvent(f"could not determine type {kind}")


def handler(call: calls.Handler) -> Handler:
    """The event with its Reverse-ETL identity, described (`call`), then rendered."""
    def run(event: Mapping[str, Any], settings: Mapping[str, Any],
            lookup: Lookup) -> list[HttpRequest]:
        described = call(calls.with_retl_identity(event), settings, calls.V1)
        return [request(described, calls.host(settings), calls.credentials(settings))]
    return run


HANDLERS: dict[str, Handler] = {kind: handler(call) for kind, call in calls.HANDLERS.items()}


def request(call: calls.Call, base: str, headers: dict[str, str]) -> HttpRequest:
    """The Track API request of a call: objects to the batch API, merges, anonymous events,
    and a person's upsert, devices and events under /customers/{id}."""
    if call.body is not None:  # an object or a merge: the body both modes send
        path = m.BATCH if call.action == "object" else m.MERGE
        return HttpRequest("POST", base + path, headers, json=call.body)
    ids = call.identifiers or {}
    if "anonymous_id" in ids:
        body = {**event_body(call), "anonymous_id": ids["anonymous_id"]}
        return HttpRequest("POST", base + m.ANONYMOUS_EVENTS, headers, json=body)
    customer = f"{base}{m.CUSTOMERS}/{calls.person_segment(ids)}"
    if call.action == "identify":
        return HttpRequest("PUT", customer, headers, json=call.attributes)
    if call.action == "delete_device":
        token = calls.segment(call.token, "context.device.token")
        return HttpRequest("DELETE", f"{customer}/devices/{token}", headers)
    if call.action == "add_device":
        device = {**call.attributes, "id": call.token,
                  "last_used": None if call.timestamp is MISSING else call.timestamp}
        if call.platform:
            device["platform"] = call.platform
        return HttpRequest("PUT", f"{customer}/devices", headers, json={"device": device})
    return HttpRequest("POST", f"{customer}/events", headers, json=event_body(call))


def event_body(call: calls.Call) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if call.attributes is not None:
        body["data"] = call.attributes
    if call.name is not None:
        body["name"] = call.name
    body["type"] = "page" if call.action == "page" else "event"
    if call.timestamp is not MISSING:
        body["timestamp"] = call.timestamp
    return body


def delete_users(settings: Mapping[str, Any], users: Sequence[Mapping[str, Any]],
                 send: Lookup) -> None:
    """A regulation's deletion: `DELETE /api/v1/customers/{identifier}` (Track API v1, as
    RudderStack's deletion does) for each userId — or each email when the person has no userId
    (workspaces that identify people by email). 200 and 404 both mean gone."""
    headers = calls.credentials(settings)
    field = "userId" if any(u.get("userId") for u in users) else "email"
    identifiers = [u[field] for u in users if u.get(field)]
    if not identifiers:
        raise Unsupported("Customer.io deletes people by id or email; the profile has neither")
    urls = [f"{calls.host(settings)}{m.CUSTOMERS}/{calls.segment(identifier, field)}"
            for identifier in identifiers]
    delete_each(send, [HttpRequest("DELETE", url, dict(headers)) for url in urls],
                lambda response: response.text[:500] or f"HTTP {response.status}")
