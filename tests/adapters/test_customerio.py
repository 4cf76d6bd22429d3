"""Customer.io rules that hold across both API modes (v1 per event, v2 batch items)."""

from __future__ import annotations

from adapters.base import BatchItem, no_lookups
from adapters.customerio import ADAPTER

EU = {"siteID": "site", "apiKey": "key", "datacenter": "EU"}


def test_without_v2_batching_router_mode_sends_each_event_as_the_worker_does() -> None:
    """No v1 router batching: an EU workspace's group objects stay on the EU host, one request
    per event, exactly what `transform` gives for each."""
    events = [{"type": "group", "userId": "u1", "groupId": "g1", "traits": {"name": "A"}},
              {"type": "identify", "userId": "u1", "traits": {"plan": "x"}},
              {"type": "group", "userId": "u2", "groupId": "g2", "traits": {"name": "B"}}]
    items = [BatchItem(event, EU, key=index) for index, event in enumerate(events)]
    outputs = ADAPTER.transform_batch(items, no_lookups)
    assert [list(o.keys) for o in outputs] == [[0], [1], [2]]
    assert not ADAPTER.batches(EU)
    for output, event in zip(outputs, events, strict=True):
        assert output.error is None and not output.batched
        assert list(output.requests) == ADAPTER.transform(event, EU, no_lookups)
        assert output.requests[0].url.startswith("https://track-eu.customer.io/")


def v2_items(event: dict, settings: dict) -> list[dict]:
    """The v2 batch items of one event (router mode with `v2Batching`)."""
    outputs = ADAPTER.transform_batch([BatchItem(event, {**settings, "v2Batching": True},
                                                 key=1)], no_lookups)
    assert outputs[0].error is None, outputs[0].error
    return outputs[0].requests[0].json["batch"]


def test_one_identify_description_two_renderings() -> None:
    """The address, traits, created_at, _timestamp and anonymous_id rows are one table: v1 PUTs
    them (with user_properties), v2 makes them an item's attributes (without)."""
    event = {"type": "identify", "userId": "u1", "anonymousId": "a1", "user_properties": {"x": 1},
             "timestamp": "2026-01-01T00:00:00Z",
             "traits": {"plan": "pro", "createdAt": "not a date", "userId": "dropped",
                        "address": {"city": "Oslo", "street": "", "state": None}}}
    shared = {"city": "Oslo", "street": "", "plan": "pro", "created_at": None,
              "_timestamp": 1767225600, "anonymous_id": "a1"}
    [request] = ADAPTER.transform(event, EU, no_lookups)
    assert (request.method, request.url) == (
        "PUT", "https://track-eu.customer.io/api/v1/customers/u1")
    assert request.json == {**shared, "x": 1}
    assert v2_items(event, EU) == [{"type": "person", "action": "identify",
                                    "identifiers": {"id": "u1"}, "attributes": shared}]


def test_a_registered_devices_properties_that_are_no_object_add_nothing() -> None:
    """v1 spreads the properties into the device as v2 spreads them into its attributes; a
    list or a string adds nothing in either mode (v1 used to fail with a TypeError)."""
    for properties in (["a"], "text"):
        event = {"type": "track", "event": "Application Opened", "userId": "u1",
                 "properties": properties, "context": {"device": {"token": "t1", "type": "iOS"}}}
        [request] = ADAPTER.transform(event, EU, no_lookups)
        assert request.json == {"device": {"id": "t1", "last_used": None, "platform": "ios"}}
        assert v2_items(event, EU)[0]["device"] == {"token": "t1", "attributes": {},
                                                    "platform": "ios"}


def test_v2_orders_the_workers_int_keys_and_sends_dont_batch_alone() -> None:
    """The worker keys items by delivery id (an int); fixtures by metadata. Successes are
    ordered by their smallest key, a `dontBatch` input goes alone, errors come last."""
    settings = {**EU, "v2Batching": True}
    track = {"type": "track", "event": "Order", "userId": "u1"}
    items = [BatchItem(track, settings, key=9), BatchItem({"type": "track"}, settings, key=3),
             BatchItem(track, settings, key={"jobId": 1, "dontBatch": True}),
             BatchItem(track, dict(settings), key=5)]
    outputs = ADAPTER.transform_batch(items, no_lookups)
    assert [(list(o.keys), o.batched, o.error is None) for o in outputs] == [
        ([{"jobId": 1, "dontBatch": True}], True, True), ([9, 5], True, True),
        ([3], False, False)]
    assert outputs[1].requests[0].url == "https://track-eu.customer.io/api/v2/batch"


def test_v2_a_config_without_credentials_fails_every_input_in_stage_1() -> None:
    """Stage 1 refuses a Config whose siteID or apiKey is missing, empty or no string, so stage
    2 (which makes the Authorization header once per group) is never reached with none."""
    events = [{"type": "track", "event": "Order", "userId": "u1"},
              {"type": "record", "action": "insert", "identifiers": {"id": "r1"}}]
    for broken in ({"apiKey": "key"}, {"siteID": "", "apiKey": "key"},
                   {"siteID": "site", "apiKey": 5}, {"siteID": "site", "apiKey": None}):
        settings = {**broken, "v2Batching": True}
        items = [BatchItem(event, settings, key=index) for index, event in enumerate(events)]
        outputs = ADAPTER.transform_batch(items, no_lookups)
        assert [list(o.keys) for o in outputs] == [[0], [1]]
        for output in outputs:
            assert output.error is not None and not output.requests
            assert "destination.Config." in output.error.reason
