"""The README's example transformations (examples/transforms.py): each one's promise, and the
gateway loading them by name as an operator would."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

from examples import transforms as examples
from gateway.config import from_mapping
from gateway.transforms import run
from tests.conftest import base_config

CTX = SimpleNamespace(logger=logging.getLogger("test"), settings={}, source="web",
                      destination=None, transformation="t")


def test_card_numbers_are_masked_anywhere_luhn_checked() -> None:
    event = {"type": "track", "event": "Paid", "properties": {
        "card": "4111 1111 1111 1111", "note": "paid with 5500-0000-0000-0004 today",
        "order_number": "1234567890123", "nested": [{"pan": "4012888888881881"}]}}
    out = examples.mask_card_numbers(event, CTX)["properties"]
    assert out["card"] == "************1111"
    assert out["note"] == "paid with ************0004 today"
    assert out["order_number"] == "1234567890123"  # fails the Luhn check: not a card
    assert out["nested"] == [{"pan": "************1881"}]


def test_events_are_renamed_keeping_the_old_name() -> None:
    out = examples.rename_event({"type": "track", "event": "Order Done"}, CTX)
    assert out == {"type": "track", "event": "Order Completed",
                   "properties": {"original_event": "Order Done"}}
    page = {"type": "page", "event": "Order Done"}
    assert examples.rename_event(dict(page), CTX) == page


def test_an_order_is_split_into_one_event_per_product() -> None:
    order = {"type": "track", "event": "Order Completed", "userId": "u1", "properties": {
        "order_id": "o-1", "currency": "EUR", "total": 30,
        "products": [{"sku": "A", "price": 10}, {"sku": "B", "price": 20}]}}
    parts = examples.split_order(order, CTX)
    assert isinstance(parts, list) and parts[0] is order
    assert [(p["event"], p["properties"]) for p in parts[1:]] == [
        ("Product Purchased", {"order_id": "o-1", "currency": "EUR", "sku": "A", "price": 10}),
        ("Product Purchased", {"order_id": "o-1", "currency": "EUR", "sku": "B", "price": 20})]
    assert all(p["userId"] == "u1" for p in parts)
    plain = {"type": "track", "event": "Order Completed", "properties": {}}
    assert examples.split_order(plain, CTX) is plain


def test_internal_traffic_is_dropped_by_ip() -> None:
    def event(ip: Any) -> dict[str, Any]:
        return {"type": "track", "event": "x", "context": {"ip": ip}}

    assert examples.drop_internal_traffic(event("10.1.2.3"), CTX) is None
    assert examples.drop_internal_traffic(event("fd00::1"), CTX) is None
    assert examples.drop_internal_traffic(event("203.0.113.9"), CTX) == event("203.0.113.9")
    assert examples.drop_internal_traffic(event("not an ip"), CTX) == event("not an ip")
    assert examples.drop_internal_traffic(event(None), CTX) == event(None)


def test_the_examples_load_and_chain_as_configured() -> None:
    names = {"mask-cards": "mask_card_numbers", "rename": "rename_event",
             "split-order": "split_order", "drop-internal": "drop_internal_traffic"}
    raw = base_config("sqlite:///unused.db", transformations=[
        {"name": n, "function": f"examples.transforms:{f}"} for n, f in names.items()])
    raw["destinations"][0]["transformations"] = list(names)
    chain = from_mapping(raw).destinations[0].transformations
    order = {"type": "track", "event": "Order Done", "context": {"ip": "203.0.113.9"},
             "properties": {"card": "4111111111111111", "products": [{"sku": "A"}]}}
    out = run.run_chain(chain, order, source=None, destination="cio")
    assert [e["event"] for e in out] == ["Order Completed", "Product Purchased"]
    assert out[0]["properties"]["card"] == "************1111"
    office = {**order, "context": {"ip": "192.168.1.10"}}
    try:
        run.run_chain(chain, office, source=None, destination="cio")
    except run.Dropped as dropped:
        assert dropped.name == "drop-internal"
    else:
        raise AssertionError("internal traffic was not dropped")
