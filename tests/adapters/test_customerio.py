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
