"""Mode B: CustomFit's native events API (`POST /v1/cfe?cfenc=<key>`), mapped as customfit.md
§4 proposes. The table says what each Segment call becomes; the code only builds the envelope."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.base import HttpRequest
from adapters.mapping import parse_date
from adapters.urls import encode_query_value

EVENTS_URL = "https://api.customfit.ai/v1/cfe"

# Segment call → the `event_customer_id` CustomFit records; None: a user-only payload.
EVENT_NAME = {"identify": None, "track": "event", "page": "pageview", "screen": "screenview"}


def native_request(event: Mapping[str, Any], kind: str, key: str) -> HttpRequest:
    body = {"events": _events(event, kind), "user": _user(event, kind)}
    return HttpRequest("POST", f"{EVENTS_URL}?cfenc={encode_query_value(key)}",
                       {"Content-Type": "application/json"}, json=body)


def _user(event: Mapping[str, Any], kind: str) -> dict[str, Any]:
    user_id = event.get("userId")
    user: dict[str, Any] = {"user_customer_id": user_id or event.get("anonymousId"),
                            "anonymous": not user_id}
    if kind == "identify":
        traits = event.get("traits") or (event.get("context") or {}).get("traits") or {}
        user["properties"] = dict(traits)
    return user


def _events(event: Mapping[str, Any], kind: str) -> list[dict[str, Any]]:
    if EVENT_NAME[kind] is None:
        return []
    properties = dict(event.get("properties") or {})
    if kind == "track":
        name = event.get("event")
    else:
        name = EVENT_NAME[kind]
        properties = {"name": event.get("name"), **properties}
    entry = {
        "event_customer_id": name,
        "event_type": "TRACK",
        "properties": properties,
        "insert_id": event.get("messageId"),
        "session_id": (event.get("context") or {}).get("sessionId")
        or event.get("userId") or event.get("anonymousId"),
    }
    when = parse_date(event.get("timestamp"))
    if when is not None:
        entry["event_timestamp"] = when.strftime("%Y-%m-%d %H:%M:%S.") + (
            f"{when.microsecond // 1000:03d}+0000")
    return [entry]
