"""Normalisation rules of gateway.messages that need no HTTP request."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.config import Limits
from gateway.messages import (
    MessageError,
    RequestInfo,
    format_time,
    nesting_exceeds,
    normalise,
    normalise_batch,
    parse_time,
)

NOW = datetime(2026, 11, 24, 12, 0, 0, 250_000, tzinfo=UTC)
INFO = RequestInfo(received_at=NOW)


@pytest.mark.parametrize("text,expected", [
    ("2026-11-22T15:37:31.857+00:00", datetime(2026, 11, 22, 15, 37, 31, 857_000, tzinfo=UTC)),
    ("2026-11-22T15:37:49.471Z", datetime(2026, 11, 22, 15, 37, 49, 471_000, tzinfo=UTC)),
    ("2026-11-22T15:37:49Z", datetime(2026, 11, 22, 15, 37, 49, tzinfo=UTC)),
    ("2026-11-22T16:37:49.123456+01:00", datetime(2026, 11, 22, 15, 37, 49, 123_456, tzinfo=UTC)),
    ("2026-11-22T15:37:49", datetime(2026, 11, 22, 15, 37, 49, tzinfo=UTC)),  # naive = UTC
    ("not a date", None), ("", None), (1732000000, None), (None, None),
])
def test_parse_time(text, expected) -> None:
    assert parse_time(text) == expected


def test_format_time_is_rfc3339_milliseconds_z() -> None:
    assert format_time(datetime(2026, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC)) == (
        "2026-01-02T03:04:05.678Z")


def test_clock_skew_correction() -> None:
    # device clock 1 h fast: the event happened 2 s before the request left the device
    message = {"type": "track", "event": "e", "userId": "u",
               "timestamp": "2026-11-24T13:00:00.000Z"}
    info = RequestInfo(received_at=NOW, sent_at="2026-11-24T13:00:02.000Z")
    result = normalise(message, info, Limits())
    assert result.timestamp == NOW - timedelta(seconds=2)
    assert result.payload["originalTimestamp"] == "2026-11-24T13:00:00.000Z"


def test_message_sent_at_wins_over_batch_sent_at() -> None:
    message = {"type": "track", "event": "e", "userId": "u", "sentAt": "2026-01-01T00:00:05Z",
               "originalTimestamp": "2026-01-01T00:00:00Z"}
    info = RequestInfo(received_at=NOW, sent_at="2026-01-01T00:00:01Z")
    assert normalise(message, info, Limits()).timestamp == NOW - timedelta(seconds=5)


def test_explicit_timestamp_beside_original_timestamp_is_kept() -> None:
    # rudder-sdk-node: originalTimestamp = call time, timestamp = the caller's event time
    message = {"type": "track", "event": "e", "userId": "u", "sentAt": "2026-01-01T00:00:05Z",
               "originalTimestamp": "2026-01-01T00:00:00Z", "timestamp": "2025-12-24T18:00:00Z"}
    result = normalise(message, INFO, Limits())
    assert result.timestamp == datetime(2025, 12, 24, 18, tzinfo=UTC)
    assert result.payload["originalTimestamp"] == "2026-01-01T00:00:00Z"


def test_unparseable_timestamp_beside_original_timestamp_uses_the_formula() -> None:
    message = {"type": "track", "event": "e", "userId": "u", "sentAt": "2026-01-01T00:00:05Z",
               "originalTimestamp": "2026-01-01T00:00:00Z", "timestamp": "soon"}
    assert normalise(message, INFO, Limits()).timestamp == NOW - timedelta(seconds=5)


@pytest.mark.parametrize("value,expected", [(42, "42"), (4.0, "4"), (4.5, "4.5"),
                                            ("  u1 ", "u1")])
def test_ids_are_strings(value, expected) -> None:
    message = normalise({"type": "identify", "userId": value}, INFO, Limits())
    assert message.user_id == expected == message.payload["userId"]


def test_path_type_overrides_body_type() -> None:
    assert normalise({"type": "identify", "userId": "u", "event": "e"}, INFO, Limits(),
                     path_type="track").type == "track"


def test_message_size_limit_can_be_switched_off() -> None:
    big = {"type": "track", "event": "e", "userId": "u", "properties": {"x": "y" * 140_000}}
    with pytest.raises(MessageError) as caught:
        normalise(big, INFO, Limits())
    assert caught.value.code == "message_too_large"
    assert normalise(big, INFO, Limits(max_message_bytes=0)).type == "track"


def test_batch_limit_and_in_request_duplicates() -> None:
    elements = [{"type": "track", "event": "e", "userId": "u", "messageId": f"m{i % 3}"}
                for i in range(6)]
    accepted, rejected = normalise_batch(elements, INFO, Limits(max_batch_messages=5))
    assert [m.message_id for m in accepted] == ["m0", "m1", "m2"]
    assert [(r.index, r.code) for r in rejected] == [(5, "batch_too_long")]


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value] if depth % 2 else {"k": value}
    return value


@pytest.mark.parametrize("depth", [1, 2, 63, 64, 65, 200])
@pytest.mark.parametrize("start", [1, 3])
def test_nesting_is_counted_from_the_given_level(depth: int, start: int) -> None:
    assert nesting_exceeds(_nested(depth), 64, start) is (depth + start - 1 > 64)
    wide = {"a": [1, {"b": "x"}], "c": _nested(depth), "d": [[]]}  # the deepest branch counts
    assert nesting_exceeds(wide, 64, start) is (max(depth + 1, 3) + start - 1 > 64)
    assert nesting_exceeds("scalar", 0) is False
