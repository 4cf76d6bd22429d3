"""Example transformations, ready to attach (README "Transformations"):

    [[transformations]]
    name = "mask-cards"
    function = "examples.transforms:mask_card_numbers"

Each takes `(event, ctx)` and returns the event, a list of events or None (dropped). They are
plain functions: test them with pytest (tests/unit/test_example_transforms.py does).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

# --- mask card numbers: anything that looks like a payment card number, anywhere ----------

# 13 to 19 digits, optionally grouped by spaces or dashes (4111 1111 1111 1111)
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
MAX_DEPTH = 32  # events are bounded by the gateway's max_json_depth; stop well before


def mask_card_numbers(event: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Every string value holding a number that passes the Luhn check keeps its last four
    digits only (`************1111`): PCI DSS's display rule. Keys are left as they are."""
    masked: dict[str, Any] = _mask(event, 0)
    return masked


def _mask(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return _CARD.sub(_masked_match, value)
    if depth >= MAX_DEPTH:
        return value
    if isinstance(value, dict):
        return {key: _mask(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        return [_mask(item, depth + 1) for item in value]
    return value


def _masked_match(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    return "*" * (len(digits) - 4) + digits[-4:] if luhn_valid(digits) else match.group()


def luhn_valid(digits: str) -> bool:
    """The card-number checksum: cuts false positives (order numbers, phone numbers)."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        n = int(char)
        if index % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


# --- rename an event ----------------------------------------------------------------------

RENAMES = {"Order Done": "Order Completed", "checkout_finished": "Order Completed",
           "Signed Up": "Signup Completed"}


def rename_event(event: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Track events named differently by different apps become one name (Segment's spec
    names where one exists); the old name is kept in `properties.original_event`."""
    name = event.get("event")
    if event.get("type") == "track" and isinstance(name, str) and name in RENAMES:
        event["event"] = RENAMES[name]
        properties = event.get("properties")
        event["properties"] = {**(properties if isinstance(properties, dict) else {}),
                               "original_event": name}
    return event


# --- split an order into one event per product --------------------------------------------

MAX_PRODUCTS = 50  # a transformation may return at most 100 events


def split_order(event: dict[str, Any], ctx: Any) -> list[dict[str, Any]] | dict[str, Any]:
    """"Order Completed" with `properties.products` → the order itself, then one "Product
    Purchased" per product (Segment's e-commerce spec names) carrying the order's id and
    currency. Anything else passes unchanged. Each part is sent as its own request, in order;
    at a source each part is stored with its own messageId (`<id>-1`, `<id>-2`, …)."""
    properties = event.get("properties")
    if event.get("type") != "track" or event.get("event") != "Order Completed" \
            or not isinstance(properties, dict):
        return event
    products = properties.get("products")
    if not isinstance(products, list) or not products:
        return event
    order = {key: properties[key] for key in ("order_id", "currency") if key in properties}
    parts = [event]
    for product in products[:MAX_PRODUCTS]:
        if isinstance(product, dict):
            parts.append({**event, "event": "Product Purchased",
                          "properties": {**order, **product}})
    return parts


# --- drop internal traffic by IP ----------------------------------------------------------

INTERNAL_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "::1/128", "fc00::/7"))


def drop_internal_traffic(event: dict[str, Any], ctx: Any) -> dict[str, Any] | None:
    """Events sent from the office or the VPN (`context.ip`, which the gateway sets from the
    request when the SDK did not) are dropped; a missing or malformed IP is kept."""
    context = event.get("context")
    ip = context.get("ip") if isinstance(context, dict) else None
    if not isinstance(ip, str):
        return event
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return event
    if any(address in network for network in INTERNAL_NETWORKS):
        ctx.logger.debug("dropped internal traffic")
        return None
    return event
