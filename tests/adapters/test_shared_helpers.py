"""Helpers in adapters/base.py shared by destinations: router-mode conventions (grouping by
Config, job order, `dontBatch`, chunks within a byte limit) and a regulation's deletions."""

from __future__ import annotations

import orjson
import pytest

from adapters.base import (
    BatchItem,
    HttpRequest,
    InvalidEvent,
    LookupResponse,
    Retryable,
    by_settings,
    chunks_within,
    delete_each,
    dont_batch,
    job_id,
)


def test_items_are_grouped_by_settings_content_in_order_of_appearance() -> None:
    eu, us = {"siteID": "s", "datacenter": "EU"}, {"siteID": "s"}
    items = [BatchItem({}, eu, key=1), BatchItem({}, us, key=2),
             BatchItem({}, {"datacenter": "EU", "siteID": "s"}, key=3),  # equal, another object
             BatchItem({}, us, key=4)]
    assert [[i.key for i in group] for group in by_settings(items)] == [[1, 3], [2, 4]]
    assert by_settings([]) == []


def test_job_id_reads_the_workers_int_keys_and_the_fixtures_metadata() -> None:
    assert [job_id(k) for k in (7, {"jobId": 3}, {}, 2.5, "text", None)] == [7, 3, 0, 2.5, 0, 0]


def test_only_a_true_dont_batch_sends_an_item_alone() -> None:
    keys = ({"dontBatch": True}, {"dontBatch": "true"}, {"dontBatch": 1}, {}, 5, None)
    assert [dont_batch(BatchItem({}, {}, key=k)) for k in keys] == [
        True, False, False, False, False, False]


def test_chunks_stay_within_the_limit_counting_envelope_and_separators() -> None:
    envelope = len(b'{"batch":[]}')
    values = [b'"' + b"x" * n + b'"' for n in (10, 20, 5, 40, 1)]
    limit = envelope + len(values[0]) + 1 + len(values[1])  # exactly the first two
    chunks = chunks_within(values, [len(v) for v in values], limit, envelope)
    assert chunks == [values[:2], values[2:3], values[3:4], values[4:]]
    for chunk in (chunks[0], chunks[1], chunks[3]):  # chunks[2] is one item over the limit
        body = b'{"batch":[' + b",".join(chunk) + b"]}"
        assert len(body) <= limit and orjson.loads(body)["batch"]
    assert chunks_within(values, [len(v) for v in values], 10_000, envelope) == [values]
    assert chunks_within([b"x" * 50], [50], 10, envelope) == [[b"x" * 50]]  # too big: alone
    assert chunks_within([], [], 10, envelope) == []


@pytest.mark.parametrize("failing,error", [(None, None), (503, Retryable), (403, InvalidEvent)])
def test_deletions_go_in_turn_and_stop_at_the_first_answer_not_200_or_404(failing, error) -> None:
    requests = [HttpRequest("DELETE", f"https://x.io/{n}") for n in range(4)]
    statuses = iter((200, 404, failing or 200, 200))
    sent: list[str] = []

    def send(request: HttpRequest) -> LookupResponse:
        sent.append(request.url)
        return LookupResponse(next(statuses), None, "body text")

    if error is None:
        delete_each(send, requests, lambda response: response.text)
        assert sent == [r.url for r in requests]
        return
    with pytest.raises(error) as raised:
        delete_each(send, requests, lambda response: f"{response.status}: {response.text}")
    assert raised.value.reason == f"{failing}: body text" and raised.value.status == failing
    assert sent == [r.url for r in requests[:3]]  # the fourth is never sent
