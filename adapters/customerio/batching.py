"""Customer.io router mode, as pure functions over a list of events (the worker batches with
them): v1 batches group objects only; v2 (`v2Batching`) sends every event as an item of the
v2 batch API, grouped by data centre and credentials."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from adapters.base import AdapterError, BatchItem, BatchOutput, HttpRequest
from adapters.customerio import mappings as m
from adapters.customerio import transform as t
from adapters.customerio import v2

MAX_OBJECTS = 1000
MAX_BATCH_BYTES = 500_000
MAX_ITEM_BYTES = 32_000
NO_ID = "message: userId, email or anonymousId is required"


def batch_v1(items: Sequence[BatchItem]) -> list[BatchOutput]:
    """Singles in input order, then group objects in chunks (always to the US host, as the
    reference does), then the errors."""
    singles: list[BatchOutput] = []
    groups: list[tuple[BatchItem, HttpRequest]] = []
    errors: list[BatchOutput] = []
    for item in items:
        try:
            request = t.transform(item.event, item.settings)
        except AdapterError as error:
            errors.append(BatchOutput([item.key], error=error))
            continue
        if m.BATCH in request.url:
            groups.append((item, request))
        else:
            singles.append(BatchOutput([item.key], [request]))
    return singles + _group_chunks(groups) + errors


def _group_chunks(groups: list[tuple[BatchItem, HttpRequest]]) -> list[BatchOutput]:
    outputs: list[BatchOutput] = []
    for chunk in _chunks(groups, lambda pair: _size(pair[1]), MAX_OBJECTS):
        headers = {**chunk[0][1].headers, "Content-Type": "application/json"}
        request = HttpRequest("POST", m.US_HOST + m.BATCH, headers,
                              json={"batch": [r.json for _, r in chunk]})
        outputs.append(BatchOutput([item.key for item, _ in chunk], [request]))
    return outputs


def batch_v2(items: Sequence[BatchItem]) -> list[BatchOutput]:
    """Every event one item of POST …/api/v2/batch (v2.py)."""
    return v2.batch(items)


def rejected_items(status: int, body: Any) -> dict[int, str]:
    """A 207 names the items that failed by `batch_index`; they fail, the others succeed."""
    if status != 207 or not isinstance(body, Mapping):
        return {}
    failures: dict[int, str] = {}
    for error in body.get("errors") or []:
        if isinstance(error, Mapping) and isinstance(error.get("batch_index"), int):
            failures[error["batch_index"]] = (f"reason: {error.get('reason')}, field: "
                                              f"{error.get('field')}, message: "
                                              f"{error.get('message')}")
    return failures


def _size(request: HttpRequest) -> int:
    return len(json.dumps({"method": request.method, "endpoint": request.url,
                           "headers": dict(request.headers), "body": request.json}))


def _chunks(entries: list[Any], size: Callable[[Any], int],
            max_count: int | None) -> list[list[Any]]:
    """Cut in order: a new chunk when the count or the running byte size would overflow."""
    chunks: list[list[Any]] = []
    current: list[Any] = []
    total = 0
    for entry in entries:
        weight = size(entry)
        full = (max_count is not None and len(current) >= max_count) or (
            current and total + weight > MAX_BATCH_BYTES)
        if full:
            chunks.append(current)
            current, total = [], 0
        current.append(entry)
        total += weight
    if current:
        chunks.append(current)
    return chunks
