"""Custify's behaviour that a mapping table cannot say: the user post-processing, track
metadata, the company upsert before a group's person, Reverse-ETL bodies and user deletion."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from adapters.base import (
    ConfigError,
    Handler,
    HttpRequest,
    InvalidEvent,
    Lookup,
    Unsupported,
    delete_each,
    error_for_status,
    message_type,
)
from adapters.custify import mappings as m
from adapters.mapping import (
    FIRST_NAME,
    LAST_NAME,
    MISSING,
    TRAITS,
    construct,
    drop_empty,
    first_present,
    get_path,
    truthy,
)
from adapters.status import is_success
from adapters.urls import query_value

NO_ID = "Email or userId is mandatory"


def check(event: Mapping[str, Any], settings: Mapping[str, Any]) -> str:
    """The reference's order: the type, whether it is handled, then the API key."""
    kind = message_type(event)
    if kind is None:
        raise InvalidEvent("Message Type is not present. Ignoring message.")
    if kind not in HANDLERS:
        raise Unsupported("Message type not supported")
    if not settings.get("apiKey"):
        raise ConfigError("apiKey is required (Custify's Bearer token)")
    return kind


def _one(handler: Callable[[Mapping[str, Any], Mapping[str, Any], str, Lookup], HttpRequest]
         ) -> Handler:
    """A handler that sends one request with the API key `check` made sure of."""
    def run(event: Mapping[str, Any], settings: Mapping[str, Any],
            lookup: Lookup) -> list[HttpRequest]:
        return [handler(event, settings, settings["apiKey"], lookup)]
    return run


def _identify(event: Mapping[str, Any], settings: Mapping[str, Any], api_key: str,
              lookup: Lookup) -> HttpRequest:
    payload = construct(event, m.IDENTIFY)
    cleaned = _user(event, settings, payload)
    return _post("/people", api_key, _retl_body(event, cleaned) or payload)


def _track(event: Mapping[str, Any], settings: Mapping[str, Any], api_key: str,
           lookup: Lookup) -> HttpRequest:
    payload = construct(event, m.TRACK)
    _anonymous_fallback(event, settings, payload)
    if not truthy(payload.get("user_id")) and not truthy(payload.get("email")):
        raise InvalidEvent(NO_ID)
    metadata: dict[str, Any] = {}
    properties = event.get("properties")
    if isinstance(properties, Mapping) and properties:
        company_id = next((v for v in (get_path(event, p) for p in m.TRACK_COMPANY_ID)
                           if truthy(v)), MISSING)
        if company_id is not MISSING:
            payload["company_id"] = company_id
        metadata = {k: v for k, v in properties.items()
                    if truthy(v) and not isinstance(v, Mapping | list)}
    user_id = payload.get("user_id")
    if truthy(user_id) and not truthy(metadata.get("user_id")) \
            and not truthy(metadata.get("userId")):
        metadata["user_id"] = user_id
    if truthy(settings.get("enablededuplication")):
        field = settings.get("deduplicationField")
        value = get_path(event, field) if isinstance(field, str) and field else MISSING
        payload["deduplication_id"] = value if truthy(value) else event.get("messageId")
    body = drop_empty({**payload, "metadata": metadata})
    return _post("/event", api_key, _retl_body(event, None) or body)


def _group(event: Mapping[str, Any], settings: Mapping[str, Any], api_key: str,
           lookup: Lookup) -> HttpRequest:
    company = construct(event, m.COMPANY)
    if "company_id" not in company:
        raise InvalidEvent("groupId Id is mandatory")
    traits = event.get("traits")
    company_traits = _strip(traits, m.COMPANY_RESERVED) if isinstance(traits, Mapping) else None
    if company_traits is not None:
        company["custom_attributes"] = company_traits
    _upsert_company(drop_empty(company), api_key, lookup)
    payload = construct(event, m.GROUP_USER)
    cleaned = _user(event, settings, payload)
    retl_source = company_traits if company_traits is not None else cleaned
    return _post("/people", api_key, _retl_body(event, retl_source) or payload)


def _upsert_company(company: dict[str, Any], api_key: str, lookup: Lookup) -> None:
    """The company must exist before a person is attached to it (made during transform, as
    the reference does, through the injected client)."""
    response = lookup(HttpRequest("POST", f"{m.BASE_URL}/company",
                                  {"Content-Type": "application/json",
                                   "Authorization": f"Bearer {api_key}"}, json=company))
    if not is_success(response.status):
        detail = json.dumps(response.body, separators=(",", ":")) if response.body is not None \
            else response.text
        raise error_for_status(response.status or 500,
                               f"[Group]: failed create/update company details {detail}")


def _user(event: Mapping[str, Any], settings: Mapping[str, Any],
          payload: dict[str, Any]) -> dict[str, Any] | None:
    """The user post-processing of identify and group; returns the cleaned traits object."""
    _anonymous_fallback(event, settings, payload)
    if not truthy(payload.get("user_id")) and not truthy(payload.get("email")):
        raise InvalidEvent(NO_ID)
    if payload.get("name") in (None, ""):
        payload.pop("name", None)
        parts = [first_present(event, FIRST_NAME), first_present(event, LAST_NAME)]
        given = [str(p) for p in parts if p is not MISSING]
        if given:
            payload["name"] = " ".join(given)
    attributes = payload.get("custom_attributes")
    company = attributes.get("company") if isinstance(attributes, Mapping) else None
    company_id = company.get("id") if isinstance(company, Mapping) else None
    if not truthy(company_id):
        company_id = event.get("groupId")
    if truthy(company_id):
        remove = company.get("remove", False) if isinstance(company, Mapping) else False
        payload["companies"] = [{"company_id": company_id, "remove": remove}]
    cleaned = None
    if isinstance(attributes, Mapping):
        cleaned = _strip(attributes, m.USER_RESERVED)
        payload["custom_attributes"] = cleaned
    for key in [k for k, v in payload.items() if v is None]:  # drop null top-level keys
        del payload[key]
    return cleaned


def _strip(attributes: Mapping[str, Any], reserved: Sequence[str]) -> dict[str, Any]:
    """Reserved keys and object, array and null values leave custom attributes."""
    return {k: v for k, v in attributes.items()
            if k not in reserved and v is not None and not isinstance(v, Mapping | list)}


def _anonymous_fallback(event: Mapping[str, Any], settings: Mapping[str, Any],
                        payload: dict[str, Any]) -> None:
    if truthy(settings.get("sendAnonymousId")) and not truthy(payload.get("user_id")):
        payload["user_id"] = event.get("anonymousId")


def _retl_body(event: Mapping[str, Any], cleaned: dict[str, Any] | None) -> dict[str, Any] | None:
    """Reverse ETL (context.mappedToDestination): the traits object is the body, plus the
    first externalId under its identifierType."""
    if not truthy(get_path(event, "context.mappedToDestination")):
        return None
    traits = cleaned if cleaned is not None else first_present(event, TRAITS)
    body = dict(traits) if isinstance(traits, Mapping) else {}
    identifier_type = get_path(event, "context.externalId.0.identifierType")
    if isinstance(identifier_type, str) and identifier_type:
        body[identifier_type] = get_path(event, "context.externalId.0.id")
    return body


def _post(path: str, api_key: str, body: dict[str, Any]) -> HttpRequest:
    return HttpRequest("POST", f"{m.BASE_URL}{path}",
                       {"Content-Type": "application/json", "Authorization": f"Bearer {api_key}",
                        "Accept": "application/json"}, json=body)


def delete_users(settings: Mapping[str, Any] | None, users: Sequence[Mapping[str, Any]],
                 send: Lookup) -> None:
    """The regulation API: DELETE each user; 200 and 404 both mean gone."""
    if users and all(u.get("email") and not u.get("userId") for u in users):
        # a regulation for a person known by email alone: Custify deletes by user_id only
        raise Unsupported("Custify deletes people by user_id; the profile has none")
    if not settings:
        raise ConfigError("Config for deletion not present")
    api_key = settings.get("apiKey")
    if not api_key:
        raise ConfigError("api key for deletion not present")
    user_ids = []
    for user in users:
        user_id = user.get("userId")
        if not user_id:
            raise InvalidEvent("User id for deletion not present")
        # percent-encoded: an id with "&", "#" or a space must not change the query
        user_ids.append(query_value(user_id, "userId"))
    delete_each(send, [HttpRequest("DELETE", f"{m.BASE_URL}/people?user_id={user_id}",
                                   {"Authorization": f"Bearer {api_key}"}) for user_id in user_ids],
                lambda response: response.text if response.body is None
                else json.dumps(response.body, separators=(",", ":")))


HANDLERS: dict[str, Handler] = {"identify": _one(_identify), "track": _one(_track),
                                 "group": _one(_group)}
