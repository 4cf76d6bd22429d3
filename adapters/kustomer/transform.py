"""Kustomer's behaviour beyond its tables: the customer lookups that decide create or update,
derived customer fields, page/screen names, and the typed-attribute advanced transformation."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from typing import Any

from adapters.base import (
    AdapterError,
    ConfigError,
    Handler,
    HttpRequest,
    InvalidEvent,
    Lookup,
    Unsupported,
    error_for_status,
    message_type,
)
from adapters.kustomer import mappings as m
from adapters.mapping import (
    ADDRESS,
    EMAIL,
    FIRST_NAME,
    LAST_NAME,
    MISSING,
    PHONE,
    USER_ID,
    USER_ID_ONLY,
    WEBSITE,
    construct,
    drop_empty,
    first_present,
    js_string,
    resolve,
    truthy,
)
from adapters.urls import path_segment

ORG_POD = re.compile(r"^prod(\d+)$")
ISO_DATE = re.compile(r"^\d{4}(-\d{2}(-\d{2}([T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?"
                      r"(Z|[+-]\d{2}:\d{2})?)?)?)?$", re.IGNORECASE)
WHITESPACE = re.compile(r"\s+")
LOOKUP_FAILED = "Error while lookingUp Kustomer"


def base_url(settings: Mapping[str, Any]) -> str:
    """`baseEndpoint` wins; else Segment's `orgPod` picks the pod (docs/design.md §7)."""
    endpoint = settings.get("baseEndpoint")
    if isinstance(endpoint, str) and endpoint.strip():
        return endpoint.strip().rstrip("/")
    pod = (settings.get("orgPod") or "").strip()
    if pod in ("", "prod1"):
        return m.DEFAULT_BASE
    match = ORG_POD.match(pod)
    if match is None:
        raise ConfigError(f"orgPod {pod!r} is not a Kustomer pod (prod1, prod2, …)")
    return f"https://api.prod{match.group(1)}.kustomerapp.com"


def check(event: Mapping[str, Any], settings: Mapping[str, Any]) -> str:
    """The type first, then the API key (the reference's order)."""
    kind = message_type(event)
    if kind is None:
        raise InvalidEvent("Event type is required")
    if not settings.get("apiKey"):
        raise ConfigError("apiKey is required (Kustomer's Bearer token)")
    return kind


def unsupported(event: Mapping[str, Any], kind: str) -> AdapterError:
    return Unsupported(f"Event type {event.get('type')} is not supported")


def _auth(settings: Mapping[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {settings['apiKey']}"}


def identify(event: Mapping[str, Any], settings: Mapping[str, Any],
             lookup: Lookup) -> list[HttpRequest]:
    return [_identify(event, base_url(settings), _auth(settings), lookup)]


def tracking(kind: str) -> Handler:
    """track, page and screen: one tracking event for the customer's identity."""
    def run(event: Mapping[str, Any], settings: Mapping[str, Any],
            lookup: Lookup) -> list[HttpRequest]:
        base = base_url(settings)
        body = {"identity": _identity(event, settings), "event": _tracking_event(event, kind,
                                                                                 settings)}
        if truthy(settings.get("setIdentityEmail")) and truthy(
                settings.get("disableEmailAsTrackingProperty")):
            meta = body["event"].get("meta")
            if isinstance(meta, dict):
                meta.pop("email", None)
        return [_json_request("POST", f"{base}/v1/tracking/identityEvent", _auth(settings),
                              body)]
    return run


def _identify(event: Mapping[str, Any], base: str, auth: dict[str, str],
              lookup: Lookup) -> HttpRequest:
    email = first_present(event, EMAIL)
    update_url = _existing_customer(event, email, base, auth, lookup)
    external_id = first_present(event, USER_ID)
    if external_id is MISSING:
        raise InvalidEvent('Missing required value from "userId"')
    payload = construct(event, m.CUSTOMER)
    payload = {"externalId": external_id, **payload}
    _derived_fields(event, payload, email)
    payload = drop_empty(payload)
    if update_url is None:
        return _json_request("POST", f"{base}/v1/customers", auth, payload)
    return _json_request("PUT", update_url, auth, payload)


def _existing_customer(event: Mapping[str, Any], email: Any, base: str, auth: dict[str, str],
                       lookup: Lookup) -> str | None:
    """The update URL of the customer the event names, or None to create one."""
    for entry in event.get("context", {}).get("externalId") or []:
        if isinstance(entry, Mapping) and entry.get("type") == "kustomerId":
            customer = path_segment(entry.get("id"), "context.externalId kustomerId")
            return f"{base}/v1/customers/{customer}?replace=false"
    # every value checked before the first lookup: a refused one sends nothing
    searches = []
    if email is not MISSING:
        searches.append("email=" + path_segment(email, "email"))
    user_id = first_present(event, USER_ID_ONLY)
    if user_id is not MISSING:
        searches.append("externalId=" + path_segment(user_id, "userId"))
    if truthy(event.get("anonymousId")):
        searches.append("externalId=" + path_segment(event["anonymousId"], "anonymousId"))
    for search in searches:
        found = _search(f"{base}/v1/customers/{search}", auth, lookup)
        if found is not None:
            # as the reference does: the update goes to the default (US) host
            customer = path_segment(found, "the customer id Kustomer's lookup answered")
            return f"{m.DEFAULT_BASE}/v1/customers/{customer}?replace=false"
    return None


def _search(url: str, auth: dict[str, str], lookup: Lookup) -> str | None:
    response = lookup(HttpRequest("GET", url, dict(auth)))
    if response.status == 404:
        return None
    body = response.body
    if response.status == 200:
        data = body.get("data") if isinstance(body, Mapping) else None
        if isinstance(data, Mapping) and data.get("id"):
            return js_string(data["id"])
        detail = json.dumps(data, separators=(",", ":")) if data is not None else ""
        raise InvalidEvent(f"{LOOKUP_FAILED} {detail}", 200)
    detail = json.dumps(body, separators=(",", ":")) if body is not None else LOOKUP_FAILED
    raise error_for_status(response.status or 400, detail)


def _derived_fields(event: Mapping[str, Any], payload: dict[str, Any], email: Any) -> None:
    first, last = first_present(event, FIRST_NAME), first_present(event, LAST_NAME)
    if "name" not in payload and truthy(first) and truthy(last):
        payload["name"] = f"{js_string(first)} {js_string(last)}"
    if "emails" not in payload and truthy(email):
        payload["emails"] = [{"type": "home", "email": email}]
    phone = first_present(event, PHONE)
    if "phones" not in payload and truthy(phone):
        payload["phones"] = [{"type": "home", "phone": phone}]
    website = first_present(event, WEBSITE)
    if truthy(website):
        payload["urls"] = [{"url": website}]
    address = _address(first_present(event, ADDRESS))
    if address is not None:
        payload["locations"] = [{"type": "home", "address": address}]


def _address(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        parts = ("street", "city", "state", "postalCode")
        if any(truthy(value.get(p)) for p in parts):
            return " ".join(js_string(value[p]) if value.get(p) is not None else ""
                            for p in parts)
    return None


def _identity(event: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    identity: dict[str, Any] = {}
    external_id = first_present(event, USER_ID)
    if external_id is not MISSING:
        identity["externalId"] = external_id
    if truthy(settings.get("setIdentityEmail")):
        email = first_present(event, EMAIL)
        if email is not MISSING:
            identity["email"] = email
    return identity


def _tracking_event(event: Mapping[str, Any], kind: str,
                    settings: Mapping[str, Any]) -> dict[str, Any]:
    if kind == "track":
        name = resolve(event, "event")
        if name is MISSING:
            raise InvalidEvent('Missing required value from "event"')
    elif truthy(settings.get(m.GENERIC_SETTING[kind])):
        name = m.VIEW_PREFIX[kind]
    else:
        value = first_present(event, m.VIEW_NAME_SOURCES)
        suffix = "" if value is MISSING else "-" + _handlebars_escape(js_string(value))
        name = (m.VIEW_PREFIX[kind] + suffix).strip()
    payload = drop_empty({"name": name, **construct(event, m.TRACKING_EVENT)})
    if truthy(settings.get("advancedTransform")):
        payload = advanced_transform(payload)
    return payload


def _handlebars_escape(text: str) -> str:
    """Handlebars' HTML escaping: & < > " ' ` = become entities."""
    return html.escape(text, quote=True).replace("`", "&#x60;").replace("=", "&#x3D;")


def advanced_transform(payload: dict[str, Any]) -> dict[str, Any]:
    """Kustomer's typed custom attributes: numbers end in Num, dates in At, and booleans,
    arrays and objects become strings."""
    out = dict(payload)
    if isinstance(out.get("name"), str):
        out["name"] = WHITESPACE.sub("-", out["name"].strip())
    meta: dict[str, Any] = {}
    for key, value in (payload.get("meta") or {}).items():
        key = WHITESPACE.sub("-", str(key).strip())
        if isinstance(value, int | float) and not isinstance(value, bool):
            meta[key if key.endswith("Num") else key + "Num"] = value
        elif ISO_DATE.match(_js_string_of(value)):
            meta[key if key.endswith("At") else key + "At"] = value
        elif isinstance(value, bool):
            meta[key] = "true" if value else "false"
        elif isinstance(value, list):
            meta[key] = ",".join(_json(v) for v in value)
        elif isinstance(value, Mapping):
            meta[key] = _json(value)
        else:
            meta[key] = value
    out["meta"] = meta
    return out


def _js_string_of(value: Any) -> str:
    """String(value) in JavaScript, enough to test it against the date pattern."""
    if isinstance(value, list):
        return ",".join("" if v is None else _js_string_of(v) for v in value)
    if isinstance(value, Mapping):
        return "[object Object]"
    return js_string(value)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _json_request(method: str, url: str, auth: dict[str, str], body: Any) -> HttpRequest:
    return HttpRequest(method, url, {"Content-Type": "application/json", **auth}, json=body)


HANDLERS: dict[str, Handler] = {"identify": identify, "track": tracking("track"),
                                 "page": tracking("page"), "screen": tracking("screen")}
