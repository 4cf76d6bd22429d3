"""Segment's partner-webhook wire format, shared by the webhook and CustomFit (mode A) adapters.

Segment POSTs each raw spec event as JSON to the partner's URL with the user's key as the Basic
username (empty password, colon always present), `User-Agent: Segment.io/1.0`, and the other
settings as base64 JSON in `X-Segment-Settings` (customfit.md §2).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import orjson

from adapters.base import HttpRequest, basic_auth

SEGMENT_HEADERS = {
    "Content-Type": "application/json",
    "User-Agent": "Segment.io/1.0",
    "Accept": "*/*",
    "Cache-Control": "no-cache",
}
# Gateway-side fields of a stored event that are not part of Segment's spec shape.
NOT_SPEC = ("request_ip",)


def spec_event(event: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k not in NOT_SPEC}


def encoded_settings(settings: Mapping[str, Any]) -> str:
    return base64.b64encode(orjson.dumps(dict(settings), option=orjson.OPT_SORT_KEYS)).decode()


def segment_post(url: str, event: Mapping[str, Any], key: str | None,
                 extra_headers: Mapping[str, str] | None = None) -> HttpRequest:
    """The request Segment sends a partner for one event; `data` is the exact body bytes."""
    body = spec_event(event)
    headers = dict(SEGMENT_HEADERS)
    if key:
        headers["Authorization"] = basic_auth(key)
    headers.update(extra_headers or {})
    return HttpRequest("POST", url, headers, json=body, data=orjson.dumps(body))
