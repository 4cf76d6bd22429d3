"""Prometheus metrics: counters the processes bump, gauges read from the database at scrape.

Under gunicorn every worker process counts for itself; `gateway serve` points
PROMETHEUS_MULTIPROC_DIR at a private directory so a scrape sums them all. Queue depth and the
age of the oldest pending delivery come from the database (the one shared state), so they are
right whichever process answers the scrape.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import Engine, func, select

from gateway.store import outbox
from gateway.store.models import deliveries

EVENTS_ACCEPTED = Counter("gateway_events_accepted_total", "Events stored",
                          ["source", "type"])
EVENTS_REJECTED = Counter("gateway_events_rejected_total", "Messages or requests refused",
                          ["source", "type"])
EVENTS_SUPPRESSED = Counter("gateway_events_suppressed_total",
                            "Messages answered 200 but dropped: their person is suppressed",
                            ["source", "type"])
SOURCE_RATE_LIMITED = Counter("gateway_source_rate_limited_total",
                              "Events refused with 429 over their source's rate limit "
                              "(gateway/http/source_guard.py)", ["source"])
# The identity graph's guardrails (gateway/identity/graph.py): merges refused by `[identity] limits`
# (reason "limit") or because an alias joined two identified profiles ("alias_identified"),
# labelled with the kind of the key that was not moved; blocked values left out of the graph.
IDENTITY_MERGES_REFUSED = Counter("gateway_identity_merges_refused_total",
                                  "Identity merges refused, by the kind of key not moved",
                                  ["kind", "reason"])
REQUESTS_NOT_STORED = Counter("gateway_requests_not_stored_total",
                              "Requests whose rows the database refused (a gateway bug): "
                              "answered 500 not_stored", ["kind"])
IDENTITY_BLOCKED_VALUES = Counter("gateway_identity_blocked_values_total",
                                  "Ids and emails left out of the identity graph as blocked "
                                  "values (undefined, null, …)", ["kind"])
DELIVERIES = Counter("gateway_deliveries_total", "Finished delivery attempts by outcome",
                     ["destination", "outcome"])
ATTEMPT_SECONDS = Histogram("gateway_delivery_attempt_seconds", "Time to send one delivery",
                            ["destination"],
                            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
TRANSFORMATION_SECONDS = Histogram("gateway_transformation_seconds",
                                   "Time of one call of a transformation (gateway/transforms)",
                                   ["transformation"],
                                   buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25,
                                            0.5, 1, 5))

# The delivery worker's per-destination sending state (lanes.py), set once per loop turn. Under
# `gateway serve` the worker is one process: the most recent value is the current one.
CIRCUIT_OPEN = Gauge("gateway_destination_circuit_open",
                     "1 while the destination's circuit is open, 0.5 half-open, 0 closed",
                     ["destination"], multiprocess_mode="mostrecent")
IN_FLIGHT = Gauge("gateway_destination_in_flight", "Deliveries being sent",
                  ["destination"], multiprocess_mode="mostrecent")
RATE_TOKENS = Gauge("gateway_destination_rate_tokens",
                    "Requests the destination's rate limit lets out now",
                    ["destination"], multiprocess_mode="mostrecent")
# The circuit's states (lanes.py) as the gauge holds them, and back: the one mapping.
CIRCUIT_VALUE = {"closed": 0.0, "half-open": 0.5, "open": 1.0}
CIRCUIT_STATE = {value: state for state, value in CIRCUIT_VALUE.items()}


def publish_lane(destination: str, status: dict) -> None:
    """Mirror one lane's `status()` into the gauges above."""
    CIRCUIT_OPEN.labels(destination).set(CIRCUIT_VALUE.get(status["circuit"], 1.0))
    IN_FLIGHT.labels(destination).set(status["in_flight"])
    RATE_TOKENS.labels(destination).set(status["tokens"])


_LANE_GAUGES = {"gateway_destination_circuit_open": "circuit_open",
                "gateway_destination_in_flight": "in_flight",
                "gateway_destination_rate_tokens": "rate_tokens"}


def destination_status() -> dict[str, dict[str, float]]:
    """The delivery worker's per-destination sending state as the gauges above hold it,
    readable from any process of `gateway serve` (the console's view; the worker itself has
    `Worker.status()`): {destination: {"circuit_open": 0|0.5|1, "in_flight", "rate_tokens"}}."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    status: dict[str, dict[str, float]] = {}
    for metric in registry.collect():
        short = _LANE_GAUGES.get(metric.name)
        if short is None:
            continue
        for sample in metric.samples:
            status.setdefault(sample.labels["destination"], {})[short] = sample.value
    return status


class QueueCollector:
    """Pending work per destination, read from the database at scrape time."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily("gateway_delivery_queue_depth",
                                  "Unfinished deliveries (pending, delivering, retrying)",
                                  labels=["destination"])
        age = GaugeMetricFamily("gateway_delivery_oldest_pending_seconds",
                                "Age of the oldest unfinished delivery", labels=["destination"])
        query = (select(deliveries.c.destination, func.count(), func.min(deliveries.c.created_at))
                 .where(deliveries.c.state.in_(outbox.UNFINISHED))
                 .group_by(deliveries.c.destination))
        now = datetime.now(UTC)
        with self.engine.connect() as connection:
            for destination, count, oldest in connection.execute(query):
                depth.add_metric([destination], count)
                seconds = (now - oldest).total_seconds() if oldest else 0.0
                age.add_metric([destination], max(0.0, seconds))
        yield depth
        yield age


def render(engine: Engine) -> tuple[bytes, str]:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
        output = generate_latest(registry)
    else:
        output = generate_latest(REGISTRY)
    queue = CollectorRegistry()
    queue.register(QueueCollector(engine))
    return output + generate_latest(queue), CONTENT_TYPE_LATEST
