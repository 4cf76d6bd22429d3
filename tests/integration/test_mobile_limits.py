"""The default limits against what the mobile SDKs build (README "Limits: which SDK needs
what"), and the answer each SDK family gets for a message that can never be stored (README
"What each SDK does with each answer"): one it drops, never one it sends again forever.

Requests are built as each SDK builds them (auth, compression, envelope, escapes); the sizes are
the SDKs' own caps. The per-family request-shape tests are in test_mobile_sdks.py.
"""

from __future__ import annotations

import base64
import gzip
import json
import uuid
from typing import Any

import orjson
import pytest
import requests

from gateway import rejections
from gateway.config import Limits
from gateway.store.db import make_engine
from tests.conftest import WRITE_KEY
from tests.helpers import basic, stored_events, stored_payloads

REQUEST_CAP = 1_048_576  # the defaults (README "Limits: which SDK needs what")
MESSAGE_CAP = 131_072
ANONYMOUS_ID = "6f1c1d5e-2b0a-4c8e-9d57-0d3f2a1b9c11"
SENT_AT = "2026-12-06T04:00:01.000Z"

RUDDER_ANDROID_1X = "com.rudderstack.android.sdk.core"
RUDDER_IOS_1X = "rudder-ios-library"
RUDDER_KOTLIN = "com.rudderstack.android.sdk"
RUDDER_SWIFT = "com.rudderstack.ios.sdk"
SEGMENT_KOTLIN = "analytics-kotlin"
SEGMENT_SWIFT = "analytics-swift"
SEGMENT_REACT_NATIVE = "analytics-react-native"
SEGMENT_FLUTTER = "analytics_flutter"


def test_the_defaults_are_the_documented_ones() -> None:
    limits = Limits()
    assert (limits.max_request_bytes, limits.max_message_bytes) == (REQUEST_CAP, MESSAGE_CAP)


# builders ---------------------------------------------------------------------------------


def event(library: str | None, n: int = 0, **fields: Any) -> dict[str, Any]:
    """A track event with the context every mobile SDK sets (library name and version; None:
    no library named)."""
    message = {
        "type": "track",
        "event": "Product Viewed",
        "messageId": str(uuid.uuid4()),
        "anonymousId": ANONYMOUS_ID,
        "channel": "mobile",
        "originalTimestamp": "2026-12-06T03:59:59.500Z",
        "context": {
            "library": {"name": library, "version": "1.0.0"},
            "app": {"name": "Shop", "version": "4.2", "build": "42"},
            "os": {"name": "Android", "version": "14"},
            "locale": "en-US",
        },
        "properties": {"n": n, "query": "size=42&colour=blue"},
        **fields,
    }
    if library is None:
        del message["context"]["library"]
    return message


def sized(message: dict[str, Any], size: int) -> dict[str, Any]:
    """The message grown to exactly `size` bytes as the gateway measures one (compact JSON)."""
    message = {**message, "properties": {**message["properties"], "blob": ""}}
    gap = size - len(orjson.dumps(message))
    assert gap >= 0
    message["properties"]["blob"] = "x" * gap
    assert len(orjson.dumps(message)) == size
    return message


def rudder_1x_request(messages: list[dict[str, Any]]) -> tuple[bytes, dict[str, str]]:
    """rudder-sdk-android/ios 1.x: Basic auth, a base64 `AnonymousId` header, gzip, `sentAt`
    appended to every message, Gson's `\\u003d` escapes."""
    batch = [{**m, "sentAt": SENT_AT} for m in messages]
    raw = json.dumps({"sentAt": SENT_AT, "batch": batch}, separators=(",", ":"))
    raw = raw.replace("=", "\\u003d")
    headers = {
        **basic(WRITE_KEY),
        "Content-Type": "application/json; charset=utf-8",
        "AnonymousId": base64.b64encode(ANONYMOUS_ID.encode()).decode(),
        "Content-Encoding": "gzip",
    }
    return gzip.compress(raw.encode()), headers


def segment_mobile_request(messages: list[dict[str, Any]]) -> tuple[bytes, dict[str, str]]:
    """Segment's mobile SDKs: the write key in the body, no Authorization header."""
    body = {"batch": messages, "sentAt": SENT_AT, "writeKey": WRITE_KEY}
    return orjson.dumps(body), {"Content-Type": "text/plain"}


def post(client: Any, path: str, request: tuple[bytes, dict[str, str]]) -> Any:
    data, headers = request
    return client.post(path, data=data, headers=headers)


def too_large(index: int, message_id: str) -> dict[str, Any]:
    """The `rejected` entry of a message over the cap."""
    return {
        "index": index,
        "code": "message_too_large",
        "messageId": message_id,
        "message": f"a message may hold at most {MESSAGE_CAP} bytes",
    }


def refusals(engine: Any) -> list[dict[str, Any]]:
    assert rejections.flush(engine)
    with engine.connect() as connection:
        return rejections.recent(connection)


# RudderStack Android/iOS 1.x: 64 KiB per event ----------------------------------------------


def test_a_60_kb_rudderstack_1x_event_is_stored_from_a_batch(client, engine) -> None:
    big = sized(event(RUDDER_ANDROID_1X), 60 * 1024)
    small = event(RUDDER_ANDROID_1X, n=1)
    response = post(client, "/v1/batch", rudder_1x_request([small, big]))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json() == {"success": True}
    stored = stored_payloads(engine)
    assert [p["messageId"] for p in stored] == [small["messageId"], big["messageId"]]
    assert stored[1]["properties"] == big["properties"]  # every byte of it, `=` unescaped
    assert stored[1]["properties"]["query"] == "size=42&colour=blue"


def test_a_60_kb_rudderstack_1x_event_alone_is_stored(client, engine) -> None:
    big = sized(event(RUDDER_IOS_1X), 60 * 1024)
    response = post(client, "/v1/batch", rudder_1x_request([big]))
    assert response.status_code == 200 and response.get_json() == {"success": True}
    assert [p["messageId"] for p in stored_payloads(engine)] == [big["messageId"]]


def test_a_60_kb_event_on_the_single_track_call_is_stored(client, engine) -> None:
    big = sized(event(RUDDER_ANDROID_1X), 60 * 1024)
    response = client.post("/v1/track", data=orjson.dumps(big), headers=basic(WRITE_KEY))
    assert response.status_code == 200 and response.get_json() == {"success": True}
    [payload] = stored_payloads(engine)
    assert payload["properties"]["blob"] == big["properties"]["blob"]


def test_the_message_cap_is_exact(client, engine) -> None:
    at = sized(event(SEGMENT_KOTLIN, n=1), MESSAGE_CAP)
    over = sized(event(SEGMENT_KOTLIN, n=2), MESSAGE_CAP + 1)
    response = post(client, "/v1/b", segment_mobile_request([at, over]))
    assert response.status_code == 200
    assert response.get_json()["rejected"] == [too_large(1, over["messageId"])]
    assert [p["messageId"] for p in stored_payloads(engine)] == [at["messageId"]]


# rudder-sdk-kotlin / -swift: batch files roll over past 500 KiB --------------------------------


def rudder_kotlin_rollover_batch() -> tuple[list[dict[str, Any]], bytes]:
    """Pretty-printed events with sorted keys, just under its 32 KiB cap; the file stands one
    byte short of 500 KiB when one more full event arrives: the request that rolls it over."""

    def encode(messages: list[dict[str, Any]]) -> bytes:
        return json.dumps({"batch": messages, "sentAt": SENT_AT}, indent=2, sort_keys=True).encode()

    full = 32 * 1024 - 600
    messages = [sized(event(RUDDER_KOTLIN, n=i), full) for i in range(15)]
    filler = sized(event(RUDDER_KOTLIN, n=15), 1_000)
    filler["properties"]["blob"] += "x" * (500 * 1024 - 1 - len(encode([*messages, filler])))
    messages += [filler, sized(event(RUDDER_KOTLIN, n=16), full)]
    body = encode(messages)
    assert 544_000 < len(body) < 546_000
    return messages, body


RUDDER_KOTLIN_HEADERS = {
    **basic(WRITE_KEY),
    "Content-Type": "application/json",
    "AnonymousId": base64.b64encode(ANONYMOUS_ID.encode()).decode(),
    "Content-Encoding": "gzip",
}


def test_a_545_kb_rudder_sdk_kotlin_batch_is_stored(client, engine) -> None:
    messages, body = rudder_kotlin_rollover_batch()
    response = client.post("/v1/batch", data=gzip.compress(body), headers=RUDDER_KOTLIN_HEADERS)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json() == {"success": True}
    assert [p["messageId"] for p in stored_payloads(engine)] == [m["messageId"] for m in messages]


# analytics_flutter: 500 KiB of events, the envelope not counted --------------------------------


def flutter_full_batch() -> tuple[list[dict[str, Any]], bytes]:
    """100 events, `"userId": null`, microsecond timestamps, the write key in the body: 512 180
    bytes, as that SDK's code builds them."""
    messages = [
        event(SEGMENT_FLUTTER, n=i, userId=None, originalTimestamp="2026-12-06T03:59:59.123456Z")
        for i in range(100)
    ]
    messages = [sized(m, 5_000) for m in messages]

    def encode() -> bytes:
        return json.dumps(
            {"batch": messages, "sentAt": "2026-12-06T04:00:01.654321Z", "writeKey": WRITE_KEY},
            separators=(",", ":"),
        ).encode()

    messages[-1]["properties"]["blob"] += "x" * (512_180 - len(encode()))
    data = encode()
    assert len(data) == 512_180
    return messages, data


FLUTTER_HEADERS = {"Content-Type": "application/json; charset=utf-8"}


def test_a_512_180_byte_analytics_flutter_batch_is_stored(client, engine) -> None:
    messages, data = flutter_full_batch()
    response = client.post("/v1/b", data=data, headers=FLUTTER_HEADERS)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json() == {"success": True}
    stored = stored_payloads(engine)
    assert [p["messageId"] for p in stored] == [m["messageId"] for m in messages]
    assert all("userId" not in p for p in stored)


@pytest.mark.slow
def test_the_full_batches_pass_the_real_server(live_gateway) -> None:
    """Through `gateway serve` (gunicorn, the body deadline, chunked transfer as analytics-kotlin
    sends it): nothing between the socket and the app caps them lower."""
    engine = make_engine(live_gateway.database_url)
    kotlin, kotlin_body = rudder_kotlin_rollover_batch()
    response = requests.post(
        live_gateway.url + "/v1/batch",
        data=gzip.compress(kotlin_body),
        headers=RUDDER_KOTLIN_HEADERS,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    flutter, flutter_body = flutter_full_batch()
    chunks = (flutter_body[i : i + 65_536] for i in range(0, len(flutter_body), 65_536))
    response = requests.post(  # a generator body goes out chunked, without Content-Length
        live_gateway.url + "/v1/b", data=chunks, headers=FLUTTER_HEADERS, timeout=30
    )
    assert response.status_code == 200, response.text
    stored = [p["messageId"] for p in stored_payloads(engine)]
    assert stored == [m["messageId"] for m in kotlin + flutter]
    engine.dispose()


# the request cap ------------------------------------------------------------------------------


def test_the_request_cap_is_exact(client, engine) -> None:
    messages = [sized(event(RUDDER_ANDROID_1X, n=i), 100_000) for i in range(10)]

    def body(size: int) -> bytes:
        data = orjson.dumps({"batch": messages, "sentAt": SENT_AT})
        return data[:-1] + b" " * (size - len(data)) + b"}"  # JSON whitespace up to `size`

    at = client.post(
        "/v1/batch",
        data=gzip.compress(body(REQUEST_CAP)),
        headers={**basic(WRITE_KEY), "Content-Encoding": "gzip"},
    )
    assert at.status_code == 200, at.get_data(as_text=True)
    assert len(stored_events(engine)) == 10
    over = client.post(
        "/v1/batch",
        data=gzip.compress(body(REQUEST_CAP + 1)),
        headers={**basic(WRITE_KEY), "Content-Encoding": "gzip"},
    )
    assert over.status_code == 413 and over.get_json()["code"] == "request_too_large"
    plain = client.post("/v1/batch", data=body(REQUEST_CAP + 1), headers=basic(WRITE_KEY))
    assert plain.status_code == 413 and plain.get_json()["code"] == "request_too_large"
    assert len(stored_events(engine)) == 10
    assert [r["reason"] for r in refusals(engine)] == ["request_too_large"] * 2


# a message that can never be stored: each family gets the answer it drops ----------------------


@pytest.mark.parametrize(
    "library,status",
    [
        (RUDDER_ANDROID_1X, 200),  # resends every non-200 answer, forever
        (RUDDER_IOS_1X, 200),
        (SEGMENT_REACT_NATIVE, 200),  # keeps a batch in its queue after any non-2xx
        (SEGMENT_FLUTTER, 200),
        (SEGMENT_KOTLIN, 400),  # deletes the batch on a 4xx other than 429
        (SEGMENT_SWIFT, 400),  # deletes the batch on 400
        (RUDDER_KOTLIN, 400),  # deletes the batch on 400 and 413
        (RUDDER_SWIFT, 400),
        (None, 400),  # no library named: the documented answer
    ],
)
def test_an_oversize_event_alone_gets_the_answer_its_sdk_drops(
    client, engine, library: str | None, status: int
) -> None:
    over = sized(event(library), MESSAGE_CAP + 1)
    request = (
        rudder_1x_request
        if library in (RUDDER_ANDROID_1X, RUDDER_IOS_1X)
        else segment_mobile_request
    )([over])
    response = post(client, "/v1/batch", request)
    assert response.status_code == status, response.get_data(as_text=True)
    rejected = [too_large(0, over["messageId"])]
    if status == 200:
        assert response.get_json() == {"success": True, "rejected": rejected}
    else:
        assert response.get_json() == {
            "code": "message_too_large",
            "message": rejected[0]["message"],
            "rejected": rejected,
        }
    assert stored_events(engine) == []
    [entry] = refusals(engine)
    assert (entry["source"], entry["message_id"], entry["type"], entry["reason"]) == (
        "web",
        over["messageId"],
        "track",
        "message_too_large",
    )


def test_a_malformed_rudderstack_1x_batch_is_answered_200_and_recorded(client, engine) -> None:
    nobody = {**event(RUDDER_ANDROID_1X), "anonymousId": None}  # neither id
    response = post(client, "/v1/batch", rudder_1x_request([nobody]))
    assert response.status_code == 200
    assert [r["code"] for r in response.get_json()["rejected"]] == ["no_user_anon_id"]
    assert stored_events(engine) == []
    assert [(r["reason"], r["message_id"]) for r in refusals(engine)] == [
        ("no_user_anon_id", nobody["messageId"])
    ]


def test_the_library_may_be_named_in_the_batch_context(client, engine) -> None:
    over = sized(event(None), MESSAGE_CAP + 1)
    body = {"batch": [over], "context": {"library": {"name": RUDDER_ANDROID_1X}}}
    response = client.post("/v1/batch", data=orjson.dumps(body), headers=basic(WRITE_KEY))
    assert response.status_code == 200
    assert response.get_json()["rejected"][0]["code"] == "message_too_large"


def test_a_single_call_from_rudderstack_1x_is_answered_200_too(client, engine) -> None:
    over = sized(event(RUDDER_ANDROID_1X), MESSAGE_CAP + 1)
    response = client.post("/v1/track", data=orjson.dumps(over), headers=basic(WRITE_KEY))
    assert response.status_code == 200
    assert response.get_json()["rejected"][0]["code"] == "message_too_large"
    assert stored_events(engine) == []
    assert [r["reason"] for r in refusals(engine)] == ["message_too_large"]


def test_a_bad_write_key_still_stops_rudderstack_1x(client) -> None:
    # the 1.x SDKs stop sending on an error body containing "invalid write key"
    data, headers = rudder_1x_request([event(RUDDER_ANDROID_1X)])
    response = client.post("/v1/batch", data=data, headers={**headers, **basic("wk_nobody")})
    assert response.status_code == 401
    assert "invalid write key" in response.get_data(as_text=True).lower()


def nested(depth: int) -> dict[str, Any]:
    """An object `depth` levels deep (itself level 1)."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"d": value}
    return value


def test_a_message_nested_too_deep_is_refused_alone(client, engine) -> None:
    # the body is level 1, `batch` 2, a message 3, its `properties` 4: 64 levels in all
    fits = event(RUDDER_ANDROID_1X, n=1, properties=nested(61))
    deep = event(RUDDER_ANDROID_1X, n=2, properties=nested(62))
    response = post(client, "/v1/batch", rudder_1x_request([fits, deep]))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["rejected"] == [
        {
            "index": 1,
            "code": "too_deep",
            "messageId": deep["messageId"],
            "message": "JSON nesting may be at most 64 levels deep",
        }
    ]
    assert [p["messageId"] for p in stored_payloads(engine)] == [fits["messageId"]]
    assert [(r["reason"], r["message_id"]) for r in refusals(engine)] == [
        ("too_deep", deep["messageId"])
    ]


def test_a_rudderstack_1x_batch_of_one_deep_message_is_answered_200(client, engine) -> None:
    deep = event(RUDDER_IOS_1X, properties=nested(62))
    response = post(client, "/v1/batch", rudder_1x_request([deep]))
    assert response.status_code == 200
    assert [r["code"] for r in response.get_json()["rejected"]] == ["too_deep"]
    assert stored_events(engine) == []


def test_a_message_nested_past_what_orjson_writes_is_refused_alone(client, engine) -> None:
    # orjson reads 1024 levels but writes only 255: the depth is checked before the size
    fits = event(SEGMENT_KOTLIN, n=1)
    deep = event(SEGMENT_KOTLIN, n=2, properties={"d": "DEEP"})
    data, headers = segment_mobile_request([fits, deep])
    data = data.replace(b'"DEEP"', b'{"d":' * 499 + b"{}" + b"}" * 499)  # 501 levels in all
    response = client.post("/v1/b", data=data, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert [r["code"] for r in response.get_json()["rejected"]] == ["too_deep"]
    assert [p["messageId"] for p in stored_payloads(engine)] == [fits["messageId"]]
