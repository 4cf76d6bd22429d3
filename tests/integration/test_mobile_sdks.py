"""The mobile SDKs' own requests, byte for byte, against a live `gateway serve`.

The mobile SDKs cannot run here, so each request is built as that SDK's source builds it
(tests/mobile.py): its path, headers, framing (chunked, gzip), JSON writer (escapes, key order,
pretty printing) and clocks. Every test asserts the answer the SDK counts as success and every
stored field: what the SDK sent, minus the body's `writeKey`, plus what the gateway adds
(`receivedAt`, `timestamp` corrected for the device's clock to the millisecond, the request IP,
`originalTimestamp`/`sentAt` when the SDK put them elsewhere, an empty `integrations`).

Families: Segment analytics-kotlin, analytics-swift, analytics-react-native, analytics_flutter;
RudderStack 1.x Android and iOS (which the React Native and Flutter wrappers use); the new
rudder-sdk-kotlin and rudder-sdk-swift. Retries: Segment resends the same bytes (old `sentAt`),
the new RudderStack SDKs rebuild the body with a fresh `sentAt`.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine

from gateway.messages import format_time
from gateway.store.db import make_engine
from tests import mobile
from tests.conftest import WRITE_KEY, LiveGateway
from tests.helpers import stored_deliveries, stored_events

pytestmark = pytest.mark.slow  # every test drives a real SDK's requests against `gateway serve`

PEER = "127.0.0.1"
MS = timedelta(milliseconds=1)


@pytest.fixture
def db(live_gateway: LiveGateway) -> Iterator[Engine]:
    engine = make_engine(live_gateway.database_url)
    yield engine
    engine.dispose()


# assertions ---------------------------------------------------------------------------------


def assert_success(answer: mobile.Answer) -> None:
    """Every one of these SDKs counts 200 as delivered; the body is the gateway's promise."""
    assert answer.status == 200, answer
    assert orjson.loads(answer.body) == {"success": True}


def parse(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, value
    return parsed


def corrected(received_at: str, sent_at: str, original: str) -> str:
    """tracking-api.md §7: timestamp = receivedAt − (sentAt − originalTimestamp), in ms."""
    return format_time(parse(received_at) - (parse(sent_at) - parse(original)))


def expected_payload(sent: dict[str, Any], stored: dict[str, Any], sent_at: str) -> dict[str, Any]:
    """What the gateway must have stored for the message `sent` (`sent_at`: the `sentAt` that
    applied to it, its own or the batch's). `receivedAt` is taken from `stored`; every other
    field is derived from what the SDK sent."""
    expected = {k: v for k, v in sent.items() if v is not None}  # null = absent (§6.1)
    for name in ("userId", "anonymousId"):
        if expected.get(name) == "":  # an empty id is no id either
            del expected[name]
    original = expected.get("originalTimestamp", expected.get("timestamp"))
    expected.setdefault("originalTimestamp", original)
    expected.setdefault("sentAt", sent_at)
    expected.setdefault("integrations", {})
    expected["context"] = {**expected.get("context", {}), "ip": PEER}
    expected["request_ip"] = PEER
    expected["receivedAt"] = stored["receivedAt"]
    expected["timestamp"] = corrected(stored["receivedAt"], sent_at, original)
    return expected


def assert_stored(
    db: Engine, sent: list[dict[str, Any]], sent_at: str | list[str], source: str = "web"
) -> list[dict[str, Any]]:
    """One row per sent message, in order, every field as expected_payload says."""
    rows = stored_events(db)
    assert len(rows) == len(sent), [r["payload"] for r in rows]
    sent_ats = sent_at if isinstance(sent_at, list) else [sent_at] * len(sent)
    for row, message, when in zip(rows, sent, sent_ats, strict=True):
        payload = row["payload"]
        assert payload == expected_payload(message, payload, when)
        assert row["source"] == source
        assert row["message_id"] == message["messageId"]
        assert row["type"] == message["type"]
        assert row["event"] == (message["event"] if message["type"] == "track" else None)
        assert row["user_id"] == (message.get("userId") or None)
        assert row["anonymous_id"] == message.get("anonymousId")
        column = row["timestamp"]
        column = column if column.tzinfo else column.replace(tzinfo=UTC)
        assert format_time(column) == payload["timestamp"]
    return [row["payload"] for row in rows]


def assert_skew_corrected(
    payloads: list[dict[str, Any]], device: mobile.DeviceClock, calls: list[float]
) -> None:
    """The device clock is hours off: the stored time is the call's real time (give or take the
    request's transit), never the device's."""
    for payload, called in zip(payloads, calls, strict=True):
        late = parse(payload["timestamp"]) - device.real(called)
        assert -2 * MS <= late < timedelta(seconds=5), payload


# Segment mobile -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/b", "/b"])
def test_analytics_kotlin_chunked_gzip_text_plain(live_gateway, db, path) -> None:
    """analytics-kotlin: the batch file, gzipped straight into a chunked stream, as
    `text/plain`, the write key only in the body. `apiHost` = "host/v1" posts to /v1/b,
    `apiHost` = "host" to /b."""
    device = mobile.DeviceClock()
    events = [
        mobile.kotlin_event(
            "identify",
            device.at(-40),
            userId="user-1",
            traits={"email": "ada@example.com", "plan": "pro"},
        ),
        mobile.kotlin_event(
            "track",
            device.at(-20),
            userId="user-1",
            event="Order Completed",
            properties={"revenue": 9.99, "currency": "EUR", "note": "Café ☕ a/b"},
        ),
        mobile.kotlin_event("screen", device.at(-5), name="Home", properties={"from": "launcher"}),
    ]
    body, sent_at = mobile.kotlin_batch_file(events, WRITE_KEY, device)
    answer = mobile.send(
        live_gateway.port, path, mobile.gzip(body), mobile.KOTLIN_HEADERS, chunks=mobile.JAVA_CHUNKS
    )
    assert_success(answer)
    payloads = assert_stored(db, events, sent_at)
    assert_skew_corrected(payloads, device, [-40, -20, -5])
    assert payloads[1]["properties"]["note"] == "Café ☕ a/b"
    assert "userId" not in payloads[2]  # kotlin's empty default: no id
    assert payloads[0]["context"]["library"] == {"name": "analytics-kotlin", "version": "1.24.1"}


def test_analytics_kotlin_files_on_one_pooled_connection(live_gateway, db) -> None:
    """OkHttp keeps the connection for the next upload: every chunked gzip body must be read to
    its last chunk, or the next request on the socket is garbage."""
    device = mobile.DeviceClock()
    connection = http.client.HTTPConnection("127.0.0.1", live_gateway.port, timeout=15)
    sent, sent_ats = [], []
    try:
        for n in range(3):
            events = [mobile.kotlin_event("track", device.at(-n), event=f"Step {n}")]
            body, sent_at = mobile.kotlin_batch_file(events, WRITE_KEY, device)
            answer = mobile.send(
                live_gateway.port,
                "/v1/b",
                mobile.gzip(body),
                mobile.KOTLIN_HEADERS,
                chunks=mobile.JAVA_CHUNKS,
                connection=connection,
            )
            assert_success(answer)
            assert answer.headers.get("Connection", "keep-alive").lower() != "close"
            sent += events
            sent_ats.append(sent_at)
    finally:
        connection.close()
    assert_stored(db, sent, sent_ats)


def test_analytics_kotlin_retry_keeps_the_first_corrected_time(live_gateway, db) -> None:
    """analytics-kotlin resends the very same file (its old `sentAt`) when the answer did not
    arrive: one row, its time corrected with the FIRST arrival's receivedAt, not the retry's
    (which would shift the event by the retry delay)."""
    device = mobile.DeviceClock()
    events = [mobile.kotlin_event("track", device.at(-30), event="Viewed", userId="user-2")]
    raw, sent_at = mobile.kotlin_batch_file(events, WRITE_KEY, device)
    body = mobile.gzip(raw)
    assert_success(
        mobile.send(
            live_gateway.port, "/v1/b", body, mobile.KOTLIN_HEADERS, chunks=mobile.JAVA_CHUNKS
        )
    )
    between = datetime.now(UTC)
    deliveries = len(stored_deliveries(db))
    time.sleep(1.2)
    assert_success(
        mobile.send(
            live_gateway.port, "/v1/b", body, mobile.KOTLIN_HEADERS, chunks=mobile.JAVA_CHUNKS
        )
    )
    [payload] = assert_stored(db, events, sent_at)
    assert len(stored_deliveries(db)) == deliveries > 0  # nothing routed twice
    assert parse(payload["receivedAt"]) <= between  # the first arrival's row and time
    assert parse(payload["timestamp"]) <= between - timedelta(seconds=30) + MS


def test_analytics_swift_batch_file(live_gateway, db) -> None:
    """analytics-swift uploads its batch file as it is on disk: `{ "batch": [`, one event a
    line (JSONEncoder: `\\/` escapes, upper-case UUIDs), then `sentAt` and `writeKey`."""
    device = mobile.DeviceClock()
    events = [
        mobile.swift_event(
            "identify",
            device.at(-12),
            userId="user-3",
            traits={"website": "https://example.com/ada"},
        ),
        mobile.swift_event(
            "track",
            device.at(-8),
            event="Song Played",
            properties={"path": "/music/a/b", "title": "Ünïcødé"},
        ),
        mobile.swift_event("screen", device.at(-1), name="Now Playing", properties={}),
    ]
    body, sent_at = mobile.swift_batch_file(events, WRITE_KEY, device)
    assert b"\\/music\\/a\\/b" in body and body.count(b"\n") == len(events) + 2
    answer = mobile.send(live_gateway.port, "/b", body, mobile.SWIFT_HEADERS)
    assert_success(answer)
    payloads = assert_stored(db, events, sent_at)
    assert_skew_corrected(payloads, device, [-12, -8, -1])
    assert payloads[1]["properties"]["path"] == "/music/a/b"
    assert all(p["messageId"] == p["messageId"].upper() for p in payloads)


def test_analytics_react_native(live_gateway, db) -> None:
    """analytics-react-native: fetch with JSON.stringify({batch, sentAt, writeKey})."""
    device = mobile.DeviceClock()
    events = [
        mobile.react_native_event(
            "track", device.at(-3), event="Button Tapped", userId="user-4", properties={"id": 7}
        ),
        mobile.react_native_event(
            "group", device.at(-2), userId="user-4", groupId="org-1", traits={"name": "Acme"}
        ),
        mobile.react_native_event("alias", device.at(-1), userId="user-4", previousId="anon-rn"),
    ]
    body, sent_at = mobile.react_native_body(events, WRITE_KEY, device)
    assert_success(mobile.send(live_gateway.port, "/v1/b", body, mobile.REACT_NATIVE_HEADERS))
    payloads = assert_stored(db, events, sent_at)
    assert_skew_corrected(payloads, device, [-3, -2, -1])


def test_analytics_flutter_nulls_and_microseconds(live_gateway, db) -> None:
    """analytics_flutter: Dart's jsonEncode writes unset fields as null (`"userId": null`) and
    DateTime.toIso8601String() has microseconds; both clocks must count to the microsecond
    (a dropped fraction would move the event by up to a second)."""
    device = mobile.DeviceClock()
    events = [
        mobile.flutter_event("track", device.at(-7.5), event="Level Up", properties={"level": 3}),
        mobile.flutter_event("identify", device.at(-0.25), userId="user-5", traits={"name": "Ada"}),
    ]
    body, sent_at = mobile.flutter_body(events, WRITE_KEY, device)
    assert b'"userId":null' in body and len(sent_at) == len("2026-12-06T10:00:00.123456Z")
    assert_success(mobile.send(live_gateway.port, "/b", body, mobile.FLUTTER_HEADERS))
    payloads = assert_stored(db, events, sent_at)
    assert_skew_corrected(payloads, device, [-7.5, -0.25])
    assert "userId" not in payloads[0]
    assert payloads[0]["originalTimestamp"] == events[0]["timestamp"]  # kept as sent (µs)


# RudderStack 1.x ----------------------------------------------------------------------------


def test_rudderstack_android_1x(live_gateway, db) -> None:
    """rudder-sdk-android 1.x: Basic auth, base64 AnonymousId header, gzip, Gson's HTML-safe
    escapes (`\\u003d`, `\\u0026`, `\\u0027`), `sentAt` on the envelope and spliced into every
    message."""
    device = mobile.DeviceClock()
    events = [
        mobile.rudder_android_event(
            "track",
            device.at(-90),
            event="Checkout Started",
            properties={"url": "https://shop.example/?a=1&b=2", "quote": "it's <b>"},
        ),
        mobile.rudder_android_event(
            "identify", device.at(-2), userId="user-6", traits={"email": "x@example.com"}
        ),
    ]
    body, sent_at = mobile.rudder_1x_payload(events, device, android=True)
    assert b"\\u003d1\\u0026b\\u003d2" in body and b"\\u0027" in body
    answer = mobile.send(
        live_gateway.port,
        "/v1/batch",
        mobile.gzip(body),
        mobile.rudder_1x_headers(WRITE_KEY, mobile.RUDDER_ANON, android=True),
    )
    assert_success(answer)
    payloads = assert_stored(db, [{**e, "sentAt": sent_at} for e in events], sent_at)
    assert_skew_corrected(payloads, device, [-90, -2])
    assert payloads[0]["properties"] == {
        "url": "https://shop.example/?a=1&b=2",
        "quote": "it's <b>",
    }
    assert payloads[0]["channel"] == "mobile"
    assert payloads[0]["context"]["library"]["name"] == "com.rudderstack.android.sdk.core"


def test_rudderstack_ios_1x(live_gateway, db) -> None:
    """rudder-sdk-ios 1.x: the same envelope, NSJSONSerialization's `\\/` escapes."""
    device = mobile.DeviceClock()
    events = [
        mobile.rudder_ios_event(
            "screen", device.at(-15), name="Settings", properties={"path": "/settings/privacy"}
        ),
        mobile.rudder_ios_event(
            "track", device.at(-4), event="Toggle", userId="user-7", properties={"on": True}
        ),
    ]
    body, sent_at = mobile.rudder_1x_payload(events, device, android=False)
    assert b"\\/settings\\/privacy" in body
    answer = mobile.send(
        live_gateway.port,
        "/v1/batch",
        mobile.gzip(body),
        mobile.rudder_1x_headers(WRITE_KEY, mobile.RUDDER_ANON, android=False),
    )
    assert_success(answer)
    payloads = assert_stored(db, [{**e, "sentAt": sent_at} for e in events], sent_at)
    assert_skew_corrected(payloads, device, [-15, -4])
    assert payloads[0]["properties"]["path"] == "/settings/privacy"


# the new RudderStack SDKs -------------------------------------------------------------------


def test_rudder_sdk_kotlin(live_gateway, db) -> None:
    """rudder-sdk-kotlin: gzip, Basic auth, base64 AnonymousId header, `sentAt` in every
    message and on the envelope, stamped when the upload starts."""
    device = mobile.DeviceClock()
    events = [
        mobile.rudder_new_event("track", device.at(-6), "kotlin", event="Opened"),
        mobile.rudder_new_event("page", device.at(-1), "kotlin", name="Pricing"),
    ]
    body, sent_at = mobile.rudder_new_body(events, device, pretty=False)
    answer = mobile.send(
        live_gateway.port,
        "/v1/batch",
        mobile.gzip(body),
        mobile.rudder_new_headers(WRITE_KEY, mobile.RUDDER_ANON, swift=False),
    )
    assert_success(answer)
    sent = orjson.loads(body)["batch"]
    payloads = assert_stored(db, sent, sent_at)
    assert_skew_corrected(payloads, device, [-6, -1])


def test_rudder_sdk_swift_pretty_sorted_raw_anonymous_id(live_gateway, db) -> None:
    """rudder-sdk-swift: JSONEncoder with .prettyPrinted and .sortedKeys (`"key" : value`,
    `\\/`), and the AnonymousId header raw, not base64 (the gateway must not try to decode
    it or refuse the request over it)."""
    device = mobile.DeviceClock()
    events = [
        mobile.rudder_new_event(
            "identify",
            device.at(-9),
            "swift",
            userId="user-8",
            traits={"site": "https://example.com/u/8"},
        ),
        mobile.rudder_new_event(
            "group",
            device.at(-3),
            "swift",
            userId="user-8",
            groupId="team/9",
            traits={"name": "Blue"},
        ),
    ]
    body, sent_at = mobile.rudder_new_body(events, device, pretty=True)
    assert body.startswith(b'{\n  "batch" : [\n    {\n') and b"team\\/9" in body
    headers = mobile.rudder_new_headers(WRITE_KEY, mobile.RUDDER_ANON, swift=True)
    assert headers["AnonymousId"] == mobile.RUDDER_ANON
    assert_success(mobile.send(live_gateway.port, "/v1/batch", mobile.gzip(body), headers))
    sent = orjson.loads(body)["batch"]
    payloads = assert_stored(db, sent, sent_at)
    assert_skew_corrected(payloads, device, [-9, -3])
    assert payloads[1]["groupId"] == "team/9"


def _rudder_attempt(
    sdk: str, events: list[dict[str, Any]], device: mobile.DeviceClock, attempt: int
) -> tuple[bytes, str, dict[str, str]]:
    """One upload attempt of `events` by `sdk`: the gzipped body, its sentAt, the headers.
    1.x rebuilds the payload from its database on every flush; the new SDKs replace their
    sentAt placeholder on every attempt and say it is a retry."""
    if sdk == "android-1x":
        body, sent_at = mobile.rudder_1x_payload(events, device, android=True)
        headers = mobile.rudder_1x_headers(WRITE_KEY, mobile.RUDDER_ANON, android=True)
        return mobile.gzip(body), sent_at, headers
    swift = sdk == "swift"
    body, sent_at = mobile.rudder_new_body(events, device, pretty=swift)
    headers = {
        **mobile.rudder_new_headers(WRITE_KEY, mobile.RUDDER_ANON, swift=swift),
        **mobile.rudder_retry_headers(attempt, 1000 * attempt, "server-503"),
    }
    return mobile.gzip(body), sent_at, headers


@pytest.mark.parametrize("sdk", ["android-1x", "kotlin", "swift"])
def test_rudderstack_retry_with_fresh_sent_at(live_gateway, db, sdk) -> None:
    """RudderStack SDKs rebuild the body on every attempt: the events' old
    `originalTimestamp`s, a FRESH `sentAt`. The first attempt was lost (it never arrived): the
    retry is stored and corrected with its own sentAt, so the event keeps its real time, the
    minute it waited in the queue included. The next attempt (the retry's answer lost) leaves
    that row and its time as they are."""
    device = mobile.DeviceClock()
    if sdk == "android-1x":
        events = [mobile.rudder_android_event("track", device.at(-65), event="Queued")]
    else:
        events = [mobile.rudder_new_event("track", device.at(-65), sdk, event="Queued")]
    body, sent_at, headers = _rudder_attempt(sdk, events, device, 1)
    assert_success(mobile.send(live_gateway.port, "/v1/batch", body, headers))
    as_sent = [{**e, "sentAt": sent_at} for e in events]
    [payload] = assert_stored(db, as_sent, sent_at)
    assert_skew_corrected([payload], device, [-65])
    deliveries = len(stored_deliveries(db))

    time.sleep(1.1)
    body, sent_at_2, headers = _rudder_attempt(sdk, events, device, 2)
    assert sent_at_2 != sent_at
    assert_success(mobile.send(live_gateway.port, "/v1/batch", body, headers))
    assert assert_stored(db, as_sent, sent_at) == [payload]
    assert len(stored_deliveries(db)) == deliveries > 0


def test_b_alias_answers_browsers_with_cors(client) -> None:
    """analytics.js batching posts to `{apiHost}/b` too: `/b` is a tracking path, so its
    answers carry CORS headers like /v1/b's (without them the browser re-queues the batch)."""
    origin = {"Origin": "https://shop.example"}
    preflight = client.options("/b", headers={**origin, "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    body = orjson.dumps(
        {"batch": [{"type": "track", "event": "E", "anonymousId": "a"}], "writeKey": WRITE_KEY}
    )
    answer = client.post("/b", data=body, headers={**origin, "Content-Type": "text/plain"})
    assert answer.status_code == 200, answer.data
    assert answer.get_json() == {"success": True}
    assert answer.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert answer.headers["Access-Control-Allow-Credentials"] == "true"
