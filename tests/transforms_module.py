"""A real module of transformations the tests attach by `tests.transforms_module:NAME`."""

from __future__ import annotations

import time
from typing import Any

SEEN_CONTEXTS: list[dict[str, Any]] = []


def mask_email(event: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Replace traits.email and properties.email with a mask."""
    for part in ("traits", "properties"):
        if isinstance(event.get(part), dict) and "email" in event[part]:
            event[part]["email"] = "***"
    return event


def drop_tests(event: dict[str, Any], ctx: Any) -> dict[str, Any] | None:
    """Drop track events named "Test Event"."""
    return None if event.get("event") == "Test Event" else event


def explode(event: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Raise on a `boom` property: the failure paths."""
    if (event.get("properties") or {}).get("boom"):
        raise ValueError("boom requested")
    return event


def split_items(event: dict[str, Any], ctx: Any) -> list[dict[str, Any]] | dict[str, Any]:
    """One "Item Bought" event per properties.items entry."""
    items = (event.get("properties") or {}).get("items")
    if event.get("event") != "Order Completed" or not isinstance(items, list):
        return event
    out = []
    for item in items:
        one = {**event, "event": "Item Bought", "properties": dict(item)}
        out.append(one)
    return out


def remember_context(event: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Keep what the context held, for the test to read (same process only)."""
    SEEN_CONTEXTS.append({"transformation": ctx.transformation, "source": ctx.source,
                          "destination": ctx.destination, "settings": dict(ctx.settings)})
    ctx.logger.info("seen %s", event.get("messageId"))
    event.setdefault("properties", {})["seen"] = True
    return event


def slow(event: dict[str, Any], ctx: Any) -> dict[str, Any]:
    time.sleep(0.02)
    return event


def not_an_event(event: dict[str, Any], ctx: Any) -> Any:
    return "nope"


def one_parameter(event: dict[str, Any]) -> dict[str, Any]:
    return event


NOT_CALLABLE = 3
