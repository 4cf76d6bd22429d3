"""Requests built as the mobile SDKs build them, for tests/integration/test_mobile_sdks.py.

The SDKs cannot be downloaded here; each builder follows that SDK's source (the README's "What
each SDK does with each answer" lists the versions read): the path it posts to, its headers, how
it frames the body (chunked, gzip, a batch file written line by line, strings spliced into JSON)
and its JSON writer's quirks:

- analytics-kotlin: kotlinx.serialization (compact, raw UTF-8), `"userId": ""` by default,
  the batch file `{"batch":[…],"sentAt":…,"writeKey":…}` gzipped into a chunked `text/plain` POST.
- analytics-swift: JSONEncoder (`/` escaped as `\\/`, upper-case UUIDs), its batch file on disk
  (`{ "batch": [` then one event a line, then `sentAt` and `writeKey`).
- analytics-react-native: JSON.stringify({batch, sentAt, writeKey}).
- analytics_flutter: jsonEncode with unset fields as null, DateTime.toIso8601String()
  (microseconds).
- rudder-sdk-android / -ios 1.x: Gson (`=`, `&`, `'`, `<`, `>` as `\\u003d`…) or
  NSJSONSerialization (`\\/`); `{"sentAt":…,"batch":[…]}` with `,"sentAt":…` spliced before
  every message's closing brace; Basic auth, base64 `AnonymousId`, gzip.
- rudder-sdk-kotlin / rudder-sdk-swift: `sentAt` in every message (a placeholder replaced at
  upload, so a retry carries a fresh one), Swift's `.prettyPrinted, .sortedKeys`, a raw
  `AnonymousId` from Swift, `Rsa-Retry-*` headers on a retry.
"""

from __future__ import annotations

import base64
import gzip as _gzip
import http.client
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.helpers import basic

# A device whose clock is hours off (the correction must undo it).
DEVICE_SKEW = timedelta(hours=2, minutes=13, seconds=7, milliseconds=250)
# Device times keep this sub-millisecond part, so that every (sentAt − originalTimestamp) is a
# whole number of milliseconds and the expected millisecond result is exact.
SUB_MS = 456
KOTLIN_ANON = "b7c2f0a4-6f7e-4c1b-9a0e-2f1d6c3e8a51"
SWIFT_ANON = "6C1D0E2A-9B4F-4E3A-8D7C-1A2B3C4D5E6F"
RN_ANON = "e4a1c9d2-3b5f-4a6e-8c7d-9f0a1b2c3d4e"
FLUTTER_ANON = "0a9b8c7d-6e5f-4a3b-2c1d-0e9f8a7b6c5d"
RUDDER_ANON = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"
# How Java's chunked output stream may cut a gzip stream: the 10-byte header on its own, then
# pieces that split the deflate data anywhere.
JAVA_CHUNKS = (10, 37)
PLACEHOLDER_SENT_AT = "{{_RSA_DEF_SENT_AT_TS_}}"  # rudder-sdk-kotlin/-swift, until upload

KOTLIN_HEADERS = {
    "Content-Type": "text/plain",
    "Content-Encoding": "gzip",
    "User-Agent": "analytics-kotlin/1.24.1",
    "Accept-Encoding": "gzip",
    "Connection": "Keep-Alive",
}
SWIFT_HEADERS = {
    "Content-Type": "application/json; charset=utf-8",
    "User-Agent": "analytics-ios/1.9.4",
    "Accept-Encoding": "gzip",
}
REACT_NATIVE_HEADERS = {
    "Content-Type": "application/json; charset=utf-8",
    "User-Agent": "Shop/321 CFNetwork/1494.0.7 Darwin/23.4.0",
}
FLUTTER_HEADERS = {
    "Content-Type": "application/json; charset=utf-8",
    "User-Agent": "Dart/3.5 (dart:io)",
    "Accept-Encoding": "gzip",
}

METADATA = {"bundled": [], "unbundled": [], "bundledIds": []}
APP = {"name": "Shop", "version": "3.2.1", "build": "321", "namespace": "com.example.shop"}
KOTLIN_CONTEXT = {
    "app": APP,
    "device": {
        "id": "5d1c0e5fa0b9c4e0b6b4f3f2d0e1a9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2",
        "manufacturer": "Google",
        "model": "Pixel 7",
        "name": "panther",
        "type": "android",
    },
    "os": {"name": "Android", "version": "14"},
    "screen": {"density": 2.625, "height": 2400, "width": 1080},
    "network": {"wifi": True, "bluetooth": False, "cellular": False},
    "locale": "en-US",
    "timezone": "Europe/Berlin",
    "userAgent": "Dalvik/2.1.0 (Linux; U; Android 14; Pixel 7 Build/UQ1A.240205.004)",
    "library": {"name": "analytics-kotlin", "version": "1.24.1"},
    "traits": {"plan": "pro"},
    "instanceId": "9f3c2a1b-8d7e-4f6a-b5c4-d3e2f1a0b9c8",
}
SWIFT_CONTEXT = {
    "app": APP,
    "device": {
        "manufacturer": "Apple",
        "type": "ios",
        "model": "iPhone15,2",
        "name": "iPhone",
        "id": "4B1C6A0E-2D3F-4E5A-9B8C-7D6E5F4A3B2C",
        "adTrackingEnabled": False,
    },
    "os": {"name": "iOS", "version": "17.4.1"},
    "screen": {"width": 393, "height": 852},
    "network": {"wifi": True, "cellular": False},
    "library": {"name": "analytics-swift", "version": "1.9.4"},
    "locale": "en-US",
    "timezone": "America/New_York",
    "traits": {},
    "instanceId": "0F1E2D3C-4B5A-4697-8877-66554433AA22",
}
RN_CONTEXT = {
    "app": APP,
    "device": {
        "id": "F0E1D2C3-B4A5-4697-8877-665544332211",
        "manufacturer": "Apple",
        "model": "iPhone14,5",
        "name": "iPhone",
        "type": "ios",
    },
    "library": {"name": "@segment/analytics-react-native", "version": "2.21.4"},
    "locale": "de-DE",
    "network": {"cellular": True, "wifi": False},
    "os": {"name": "iOS", "version": "17.2"},
    "screen": {"height": 844, "width": 390},
    "timezone": "Europe/Berlin",
    "traits": {"email": "rn@example.com"},
    "instanceId": "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f",
}
FLUTTER_CONTEXT = {
    "app": APP,
    "device": {
        "id": "a0b1c2d3e4f5",
        "manufacturer": "samsung",
        "model": "SM-S911B",
        "name": "dm1q",
        "type": "android",
    },
    "library": {"name": "analytics_flutter", "version": "1.1.10"},
    "locale": "fr-FR",
    "network": {"cellular": False, "wifi": True},
    "os": {"name": "Android", "version": "14"},
    "screen": {"height": 2340, "width": 1080, "density": 3.0},
    "timezone": "Europe/Paris",
    "traits": {},
    "instanceId": "7e6d5c4b-3a29-4817-9605-f4e3d2c1b0a9",
}
RUDDER_ANDROID_CONTEXT = {
    "app": {"build": "42", "name": "Shop", "namespace": "com.example.shop", "version": "3.2.1"},
    "traits": {"anonymousId": RUDDER_ANON},
    "library": {"name": "com.rudderstack.android.sdk.core", "version": "1.28.0"},
    "os": {"name": "Android", "version": "14"},
    "screen": {"density": 420, "width": 1080, "height": 2400},
    "userAgent": "Dalvik/2.1.0 (Linux; U; Android 14; Pixel 7 Build/UQ1A.240205.004)",
    "locale": "en-US",
    "device": {
        "id": "3f2e1d0c9b8a7f6e",
        "manufacturer": "Google",
        "model": "Pixel 7",
        "name": "panther",
        "type": "Android",
        "adTrackingEnabled": False,
    },
    "network": {"carrier": "T-Mobile", "wifi": True, "bluetooth": False, "cellular": True},
    "timezone": "Europe/Berlin",
    "sessionId": 1765015200,
}
RUDDER_IOS_CONTEXT = {
    "app": {"build": "42", "name": "Shop", "namespace": "com.example.shop", "version": "3.2.1"},
    "traits": {"anonymousId": RUDDER_ANON},
    "library": {"name": "rudder-ios-library", "version": "1.31.0"},
    "os": {"name": "iOS", "version": "17.4.1"},
    "screen": {"density": 3, "width": 393, "height": 852},
    "locale": "en-US",
    "device": {
        "id": "8D7C6B5A-4F3E-4D2C-9B1A-0F9E8D7C6B5A",
        "manufacturer": "Apple",
        "model": "iPhone",
        "name": "Ada's iPhone",
        "type": "iOS",
    },
    "network": {"carrier": "unavailable", "wifi": True, "cellular": False},
    "timezone": "America/New_York",
}
RUDDER_NEW_LIBRARY = {
    "kotlin": {"name": "com.rudderstack.android.sdk", "version": "1.0.0"},
    "swift": {"name": "rudder-ios-library", "version": "1.0.0"},
}


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class DeviceClock:
    """A phone's clock, DEVICE_SKEW ahead of ours. `at(s)`: the device time `s` seconds after
    the clock was made (when the SDK stamped a call); `now()`: the device time now (when it
    stamps `sentAt`)."""

    base: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def skew(self) -> timedelta:
        return DEVICE_SKEW

    def at(self, seconds: float) -> datetime:
        return _fixed_sub_ms(self.base + DEVICE_SKEW + timedelta(seconds=seconds))

    def real(self, seconds: float) -> datetime:
        """Our time when the device's clock read at(seconds)."""
        return self.at(seconds) - DEVICE_SKEW

    def now(self) -> datetime:
        return _fixed_sub_ms(datetime.now(UTC) + DEVICE_SKEW)


def _fixed_sub_ms(value: datetime) -> datetime:
    return value.replace(microsecond=value.microsecond // 1000 * 1000 + SUB_MS)


def iso_ms(value: datetime) -> str:
    """`yyyy-MM-dd'T'HH:mm:ss.SSS'Z'`: every SDK here but Flutter."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def iso_dart(value: datetime) -> str:
    """Dart's DateTime.toUtc().toIso8601String(): milliseconds, then microseconds if any."""
    micros = value.microsecond % 1000
    return iso_ms(value)[:-1] + (f"{micros:03d}" if micros else "") + "Z"


def gzip(body: bytes) -> bytes:
    return _gzip.compress(body)


def send(
    port: int,
    path: str,
    body: bytes,
    headers: dict[str, str],
    chunks: tuple[int, int] | None = None,
    connection: http.client.HTTPConnection | None = None,
) -> Answer:
    """POST exactly these bytes with exactly these headers (plus Host and the framing):
    Content-Length, or chunked as (first chunk size, then size of every other chunk). On
    `connection` when given (kept open: the SDKs' HTTP clients pool connections)."""
    owned = connection is None
    connection = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        connection.putrequest("POST", path, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        if chunks is None:
            connection.putheader("Content-Length", str(len(body)))
        else:
            connection.putheader("Transfer-Encoding", "chunked")
        connection.endheaders()
        if chunks is None:
            connection.send(body)
        else:
            first, size = chunks
            pieces = [body[:first]] + [body[i : i + size] for i in range(first, len(body), size)]
            for piece in pieces:
                connection.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            connection.send(b"0\r\n\r\n")
        response = connection.getresponse()
        return Answer(response.status, response.read(), dict(response.getheaders()))
    finally:
        if owned:
            connection.close()


# JSON writers ---------------------------------------------------------------------------------


def compact(value: Any) -> str:
    """kotlinx.serialization, JSON.stringify, Dart's jsonEncode: compact, raw UTF-8."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def swift_json(value: Any) -> str:
    """Foundation's JSONEncoder / NSJSONSerialization: compact, `/` written as `\\/` (a `/`
    occurs only inside JSON strings, so the replacement escapes exactly those)."""
    return compact(value).replace("/", "\\/")


def swift_pretty_sorted(value: Any) -> str:
    """JSONEncoder with [.prettyPrinted, .sortedKeys]: two-space indent, `"key" : value`."""
    text = json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True, separators=(",", " : "))
    return text.replace("/", "\\/")


GSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "=": "\\u003d", "'": "\\u0027"}


def gson(value: Any) -> str:
    """Gson's default (HTML-safe) writer: these five characters as \\u escapes (they occur
    only inside JSON strings)."""
    text = compact(value)
    for char, escape in GSON_ESCAPES.items():
        text = text.replace(char, escape)
    return text


# Segment mobile -------------------------------------------------------------------------------


def _segment_event(kind: str, fields: dict[str, Any]) -> dict[str, Any]:
    """Type-specific fields as the SDKs take them from the call."""
    out: dict[str, Any] = {}
    for name in ("event", "name", "category", "properties", "traits", "groupId", "previousId"):
        if name in fields:
            out[name] = fields.pop(name)
    if kind == "screen":
        out.setdefault("category", "")
    assert not set(fields) - {"userId"}, fields
    return out


def kotlin_event(kind: str, when: datetime, **fields: Any) -> dict[str, Any]:
    own = _segment_event(kind, fields)
    return {
        "type": kind,
        "messageId": str(uuid.uuid4()),
        "anonymousId": KOTLIN_ANON,
        "integrations": {},
        "context": KOTLIN_CONTEXT,
        "userId": fields.get("userId", ""),
        "_metadata": METADATA,
        "timestamp": iso_ms(when),
        **own,
    }


def kotlin_batch_file(
    events: list[dict[str, Any]], write_key: str, device: DeviceClock
) -> tuple[bytes, str]:
    """The file analytics-kotlin writes and uploads: `{"batch":[` + events joined by `,` +
    `],"sentAt":"…","writeKey":"…"}` (sentAt stamped when the file is closed)."""
    sent_at = iso_ms(device.now())
    text = (
        '{"batch":['
        + ",".join(compact(e) for e in events)
        + f'],"sentAt":"{sent_at}","writeKey":"{write_key}"}}'
    )
    return text.encode(), sent_at


def swift_event(kind: str, when: datetime, **fields: Any) -> dict[str, Any]:
    own = _segment_event(kind, fields)
    if kind == "screen":
        own.pop("category")  # Swift's optionals are left out, not null
    event = {
        "type": kind,
        "anonymousId": SWIFT_ANON,
        "messageId": str(uuid.uuid4()).upper(),
        "timestamp": iso_ms(when),
        "context": SWIFT_CONTEXT,
        "integrations": {},
        "_metadata": METADATA,
        **own,
    }
    if "userId" in fields:
        event["userId"] = fields["userId"]
    return event


def swift_batch_file(
    events: list[dict[str, Any]], write_key: str, device: DeviceClock
) -> tuple[bytes, str]:
    """analytics-swift's batch file, each part written as a line of its own."""
    sent_at = iso_ms(device.now())
    lines = ['{ "batch": [']
    lines += [("," if index else "") + swift_json(e) for index, e in enumerate(events)]
    lines.append(f'],"sentAt":"{sent_at}","writeKey":"{write_key}"}}')
    return ("\n".join(lines) + "\n").encode(), sent_at


def react_native_event(kind: str, when: datetime, **fields: Any) -> dict[str, Any]:
    own = _segment_event(kind, fields)
    own.pop("category", None)
    event = {
        **own,
        "type": kind,
        "anonymousId": RN_ANON,
        "messageId": str(uuid.uuid4()),
        "timestamp": iso_ms(when),
        "context": RN_CONTEXT,
        "integrations": {},
        "_metadata": METADATA,
    }
    if "userId" in fields:
        event["userId"] = fields["userId"]
    return event


def react_native_body(
    events: list[dict[str, Any]], write_key: str, device: DeviceClock
) -> tuple[bytes, str]:
    """JSON.stringify({batch: events, sentAt: new Date().toISOString(), writeKey})."""
    sent_at = iso_ms(device.now())
    return compact({"batch": events, "sentAt": sent_at, "writeKey": write_key}).encode(), sent_at


def flutter_event(kind: str, when: datetime, **fields: Any) -> dict[str, Any]:
    own = _segment_event(kind, fields)
    own.pop("category", None)
    return {
        "anonymousId": FLUTTER_ANON,
        "messageId": str(uuid.uuid4()),
        "userId": fields.get("userId"),  # null when unset
        "timestamp": iso_dart(when),
        "context": FLUTTER_CONTEXT,
        "integrations": {},
        "type": kind,
        **own,
    }


def flutter_body(
    events: list[dict[str, Any]], write_key: str, device: DeviceClock
) -> tuple[bytes, str]:
    """jsonEncode({"batch": …, "sentAt": DateTime.now().toUtc().toIso8601String(), …})."""
    sent_at = iso_dart(device.now())
    return compact({"batch": events, "sentAt": sent_at, "writeKey": write_key}).encode(), sent_at


# RudderStack 1.x ------------------------------------------------------------------------------


def _rudder_1x_event(
    kind: str, when: datetime, context: dict[str, Any], fields: dict[str, Any]
) -> dict[str, Any]:
    """RudderMessage's fields in Gson's order (nulls left out). Identify traits travel in
    `context.traits`; the messageId is `<epoch ms>-<uuid>`."""
    context = dict(context)
    message: dict[str, Any] = {
        "messageId": f"{int(when.timestamp() * 1000)}-{uuid.uuid4()}",
        "channel": "mobile",
        "context": context,
        "type": kind,
        "originalTimestamp": iso_ms(when),
        "anonymousId": RUDDER_ANON,
    }
    if "userId" in fields:
        message["userId"] = fields.pop("userId")
    if kind == "identify":
        context["traits"] = {
            **context["traits"],
            "id": message["userId"],
            "userId": message["userId"],
            **fields.pop("traits"),
        }
        message["event"] = "identify"
    message.update(fields)
    message["integrations"] = {"All": True}
    return message


def rudder_android_event(kind: str, when: datetime, **fields: Any) -> dict[str, Any]:
    return _rudder_1x_event(kind, when, RUDDER_ANDROID_CONTEXT, fields)


def rudder_ios_event(kind: str, when: datetime, **fields: Any) -> dict[str, Any]:
    return _rudder_1x_event(kind, when, RUDDER_IOS_CONTEXT, fields)


def rudder_1x_payload(
    events: list[dict[str, Any]], device: DeviceClock, android: bool
) -> tuple[bytes, str]:
    """The payload 1.x builds from its database rows by string splicing: the envelope's
    `sentAt`, then each stored message with `,"sentAt":"…"` before its last brace (Android
    writes `"batch": [` with a space, iOS `"batch":[`)."""
    sent_at = iso_ms(device.now())
    dump = gson if android else swift_json
    messages = [dump(e)[:-1] + f',"sentAt":"{sent_at}"}}' for e in events]
    opening = '"batch": [' if android else '"batch":['
    text = "{" + f'"sentAt":"{sent_at}",' + opening + ",".join(messages) + "]}"
    return text.encode(), sent_at


def rudder_1x_headers(write_key: str, anonymous_id: str, android: bool) -> dict[str, str]:
    return {
        "Content-Type": "application/json; charset=utf-8" if android else "Application/json",
        **basic(write_key),
        "AnonymousId": base64.b64encode(anonymous_id.encode()).decode(),
        "Content-Encoding": "gzip",
    }


# the new RudderStack SDKs ---------------------------------------------------------------------


def rudder_new_event(kind: str, when: datetime, flavour: str, **fields: Any) -> dict[str, Any]:
    """A stored event of rudder-sdk-kotlin / rudder-sdk-swift, `sentAt` still a placeholder."""
    message_id = str(uuid.uuid4())
    context: dict[str, Any] = {
        "library": RUDDER_NEW_LIBRARY[flavour],
        "locale": "en-US",
        "timezone": "Europe/Berlin",
        "traits": {"anonymousId": RUDDER_ANON},
    }
    if kind == "identify":
        context["traits"] = {**context["traits"], **fields["traits"]}
    return {
        "anonymousId": RUDDER_ANON,
        "channel": "mobile",
        "context": context,
        "integrations": {"All": True},
        "messageId": message_id.upper() if flavour == "swift" else message_id,
        "originalTimestamp": iso_ms(when),
        "sentAt": PLACEHOLDER_SENT_AT,
        "type": kind,
        **fields,
    }


def rudder_new_body(
    events: list[dict[str, Any]], device: DeviceClock, pretty: bool
) -> tuple[bytes, str]:
    """The batch as uploaded: every placeholder replaced by the upload's time (fresh on every
    attempt); Swift pretty-prints with sorted keys, Kotlin writes compact JSON."""
    sent_at = iso_ms(device.now())
    batch = [{**e, "sentAt": sent_at} for e in events]
    body = {"batch": batch, "sentAt": sent_at}
    text = swift_pretty_sorted(body) if pretty else compact(body)
    return text.encode(), sent_at


def rudder_new_headers(write_key: str, anonymous_id: str, swift: bool) -> dict[str, str]:
    anonymous = anonymous_id if swift else base64.b64encode(anonymous_id.encode()).decode()
    return {
        "Content-Type": "application/json",
        **basic(write_key),
        "AnonymousId": anonymous,
        "Content-Encoding": "gzip",
    }


def rudder_retry_headers(attempt: int, since_ms: int, reason: str) -> dict[str, str]:
    return {
        "Rsa-Retry-Attempt": str(attempt),
        "Rsa-Since-Last-Attempt": str(since_ms),
        "Rsa-Retry-Reason": reason,
    }
