"""End to end with the real SDKs (docs/sdk/README.md): each one sends the same six calls to a
live `gateway serve`, and every message it put on the wire must be stored with the right fields.

Python: segment-analytics-python (plain and gzip), rudder-sdk-python (gzip by default).
Node (skipped without node/npm): @segment/analytics-node and @rudderstack/rudder-sdk-node, installed
once per session into tests/.node; a small script sends the calls and reports what went on the wire.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from rudderstack.analytics.client import Client as RudderClient
from segment.analytics import Client as SegmentClient
from sqlalchemy import Engine

from gateway.store.db import make_engine
from tests.conftest import OTHER_KEY, WRITE_KEY, LiveGateway
from tests.helpers import stored_deliveries, stored_events
from tests.node import node_packages

pytestmark = pytest.mark.slow  # real SDK clients flush over HTTP to `gateway serve`

USER = "user-42"
ANON = "anon-7"
TRAITS = {"email": "ada@example.com", "plan": "pro", "logins": 3}
EVENT = "Order Completed"
EVENT_TIME = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)  # the track call's explicit `timestamp`
PROPERTIES = {"revenue": 9.99, "currency": "EUR", "items": [{"sku": "A-1", "qty": 2}]}
ONLY_MIXPANEL = {"All": False, "Mixpanel": True}
PAGE_CATEGORY = "Docs"
PAGE_NAME = "Tracking API"
PAGE_PROPERTIES = {"url": "https://example.com/docs", "title": "Docs"}
SCREEN = "Home"
GROUP = "group-9"
GROUP_TRAITS = {"name": "Acme", "employees": 12}
TYPES = ["identify", "track", "page", "screen", "group", "alias"]

# what each of the six calls must have stored, whatever the SDK (identify traits: see Sdk)
EXPECTED: dict[str, dict[str, Any]] = {
    "identify": {"userId": USER},
    "track": {"userId": USER, "event": EVENT, "properties": PROPERTIES,
              "integrations": ONLY_MIXPANEL},
    "page": {"userId": USER, "category": PAGE_CATEGORY, "name": PAGE_NAME},
    "screen": {"anonymousId": ANON, "name": SCREEN},
    "group": {"userId": USER, "groupId": GROUP, "traits": GROUP_TRAITS},
    "alias": {"userId": USER, "previousId": ANON},
}
# the id each call did not set: the SDK sent null (python) or nothing (node) -> no key stored
ABSENT_ID = {t: "userId" if t == "screen" else "anonymousId" for t in TYPES}
# keys the gateway adds to what the SDK sent (messages.py), and nothing else
SERVER_KEYS = {"timestamp", "receivedAt", "request_ip", "originalTimestamp", "sentAt",
               "integrations"}
TIME_FORMAT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
MS = timedelta(milliseconds=1)
LOCALHOST = "127.0.0.1"
NODE_PACKAGES = {"@segment/analytics-node": "3", "@rudderstack/rudder-sdk-node": "3"}


@dataclass(frozen=True)
class Sdk:
    """How one SDK shapes the scenario's messages, as far as the stored payload shows it."""

    library: str  # context.library.name
    write_key: str
    source: str  # the gateway source of write_key
    identify_traits: tuple[str, ...]  # where identify traits travel: "traits" and/or "context"
    default_integrations: dict[str, Any] = field(default_factory=dict)
    channel: str | None = None


SEGMENT_PYTHON = Sdk("analytics-python", WRITE_KEY, "web", ("traits",))
RUDDER_PYTHON = Sdk("analytics-python", OTHER_KEY, "server", ("context",), {"All": True}, "server")
SEGMENT_NODE = Sdk("@segment/analytics-node", WRITE_KEY, "web", ("traits",))
RUDDER_NODE = Sdk("analytics-node", OTHER_KEY, "server", ("traits", "context"), {}, "server")


# helpers ------------------------------------------------------------------------------------

@pytest.fixture
def db(live_gateway: LiveGateway) -> Iterator[Engine]:
    """An engine on the live gateway's database, for reading back what it stored."""
    db = make_engine(live_gateway.database_url)
    yield db
    db.dispose()


def now() -> datetime:
    return datetime.now().astimezone()


def parse(value: Any) -> datetime:
    assert isinstance(value, str), value
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, value
    return parsed


def send_python_scenario(client: Any) -> list[dict[str, Any]]:
    """The six calls through a Python SDK client; returns the messages it built (and sent)."""
    results = [
        client.identify(user_id=USER, traits=TRAITS),
        client.track(user_id=USER, event=EVENT, properties=PROPERTIES, integrations=ONLY_MIXPANEL,
                     timestamp=EVENT_TIME),
        client.page(user_id=USER, category=PAGE_CATEGORY, name=PAGE_NAME,
                    properties=PAGE_PROPERTIES),
        client.screen(anonymous_id=ANON, name=SCREEN),
        client.group(user_id=USER, group_id=GROUP, traits=GROUP_TRAITS),
        client.alias(previous_id=ANON, user_id=USER),
    ]
    assert [ok for ok, _ in results] == [True] * len(TYPES)
    return [message for _, message in results]


def assert_scenario_stored(db: Engine, sdk: Sdk, sent: list[dict[str, Any]], started: datetime,
                           finished: datetime, explicit_time: bool = True) -> None:
    """Every message the SDK sent is stored once, in order, with the scenario's values, exactly
    what the SDK sent, and the gateway's own fields (timestamps, request IP). explicit_time: the
    track call passed EVENT_TIME."""
    assert [m["type"] for m in sent] == TYPES
    rows = stored_events(db)
    assert [row["type"] for row in rows] == TYPES
    assert [row["message_id"] for row in rows] == [m["messageId"] for m in sent]
    assert len({m["messageId"] for m in sent}) == len(TYPES)
    for row, message in zip(rows, sent, strict=True):
        kind = message["type"]
        payload = row["payload"]
        assert row["source"] == sdk.source
        # the scenario's values, independent of what the SDK did with them
        for key, value in EXPECTED[kind].items():
            assert payload[key] == value, (kind, key)
        assert ABSENT_ID[kind] not in payload, kind
        assert "writeKey" not in payload
        assert payload["type"] == kind
        assert payload["messageId"] == message["messageId"]
        assert payload["context"]["library"]["name"] == sdk.library
        assert payload["context"]["ip"] == LOCALHOST and payload["request_ip"] == LOCALHOST
        assert payload.get("channel") == sdk.channel
        if kind != "track":
            assert payload["integrations"] == sdk.default_integrations, kind
        if kind == "track" and explicit_time:
            stored_time = parse(payload["timestamp"])
            assert EVENT_TIME - MS <= stored_time <= EVENT_TIME + (finished - started)
        if kind == "page":
            assert {k: payload["properties"][k] for k in PAGE_PROPERTIES} == PAGE_PROPERTIES
        if kind == "identify":
            assert payload.get("traits") == (TRAITS if "traits" in sdk.identify_traits else None)
            assert payload["context"].get("traits") == (
                TRAITS if "context" in sdk.identify_traits else None)
        # the indexed columns
        assert row["event"] == (EVENT if kind == "track" else None)
        assert row["user_id"] == EXPECTED[kind].get("userId")
        assert row["anonymous_id"] == EXPECTED[kind].get("anonymousId")
        assert_stored_as_sent(message, payload)
        assert_times(row, message, started, finished)


def assert_stored_as_sent(message: dict[str, Any], payload: dict[str, Any]) -> None:
    """The SDK's message verbatim (nulls dropped, timestamp kept raw as originalTimestamp),
    plus only the keys the gateway adds."""
    for key, value in message.items():
        if key == "timestamp":  # the gateway stores the corrected time here (assert_times)
            if "originalTimestamp" not in message:
                assert payload["originalTimestamp"] == value
        elif key == "context":
            assert payload["context"] == {**value, "ip": LOCALHOST}
        elif value is None:
            assert key not in payload, key
        else:
            assert payload[key] == value, key
    sent_keys = {k for k, v in message.items() if v is not None}
    assert set(payload) - sent_keys <= SERVER_KEYS, set(payload) - sent_keys


def assert_times(row: dict[str, Any], message: dict[str, Any], started: datetime,
                 finished: datetime) -> None:
    """receivedAt is the gateway's clock; timestamp = receivedAt - (sentAt - event time), which
    on one machine is the event time plus the request's transit (both vendors keep an explicit
    `timestamp` as the event time, tracking-api.md §7)."""
    payload = row["payload"]
    assert TIME_FORMAT.match(payload["timestamp"]), payload["timestamp"]
    assert TIME_FORMAT.match(payload["receivedAt"]), payload["receivedAt"]
    received = parse(payload["receivedAt"])
    timestamp = parse(payload["timestamp"])
    event_time = parse(message.get("timestamp") or message["originalTimestamp"])
    sent_at = parse(payload["sentAt"])
    assert started - MS <= sent_at <= row["received_at"] <= finished
    assert abs(row["received_at"] - received) < MS
    assert abs(row["timestamp"] - timestamp) < MS
    assert event_time - MS <= timestamp <= event_time + (finished - started) + MS
    assert timestamp <= received + MS


# Python SDKs ----------------------------------------------------------------------------------

@pytest.mark.parametrize("gzip,sync_mode", [(False, False), (True, False), (True, True)],
                         ids=["plain", "gzip", "gzip-sync"])
def test_segment_python(live_gateway: LiveGateway, db: Engine, gzip: bool,
                        sync_mode: bool) -> None:
    """segment-analytics-python: queued batches (flush) or one request per call (sync_mode)."""
    errors: list[Exception] = []
    client = SegmentClient(WRITE_KEY, host=live_gateway.url, gzip=gzip, sync_mode=sync_mode,
                           max_retries=1, on_error=lambda exc, batch: errors.append(exc))
    started = now()
    sent = send_python_scenario(client)
    if not sync_mode:  # sync_mode has no consumer threads (its shutdown() raises TypeError)
        client.flush()
        client.shutdown()
    finished = now()
    assert errors == []
    assert all(m["context"]["library"]["version"] == version("segment-analytics-python")
               for m in sent)
    assert_scenario_stored(db, SEGMENT_PYTHON, sent, started, finished)


def test_rudder_python(live_gateway: LiveGateway, db: Engine) -> None:
    """rudder-sdk-python with its defaults (gzip on, channel server, identify traits in
    context.traits only), on the second source."""
    errors: list[Exception] = []
    client = RudderClient(OTHER_KEY, host=live_gateway.url, max_retries=1,
                          on_error=lambda exc, batch: errors.append(exc))
    assert client.gzip is True
    started = now()
    sent = send_python_scenario(client)
    client.flush()
    client.shutdown()
    finished = now()
    assert errors == []
    assert_scenario_stored(db, RUDDER_PYTHON, sent, started, finished)


# Node SDKs ------------------------------------------------------------------------------------

NODE_CALLS: list[list[Any]] = [
    ["identify", {"userId": USER, "traits": TRAITS}],
    ["track", {"userId": USER, "event": EVENT, "properties": PROPERTIES,
               "integrations": ONLY_MIXPANEL, "timestamp": EVENT_TIME.isoformat()}],
    ["page", {"userId": USER, "category": PAGE_CATEGORY, "name": PAGE_NAME,
              "properties": PAGE_PROPERTIES}],
    ["screen", {"anonymousId": ANON, "name": SCREEN}],
    ["group", {"userId": USER, "groupId": GROUP, "traits": GROUP_TRAITS}],
    ["alias", {"userId": USER, "previousId": ANON}],
]

# argv: sdk host writeKey callsJson (a `timestamp` param becomes a Date). Prints
# {requests: [{status, headers, body}], errors}, where body is the JSON that went on the wire
# (gunzipped), observed through each SDK's own hooks.
NODE_SCRIPT = r"""
'use strict'
const zlib = require('zlib')
const [sdk, host, writeKey, callsJson] = process.argv.slice(2)
const calls = JSON.parse(callsJson)
for (const [, params] of calls) if (params.timestamp) params.timestamp = new Date(params.timestamp)
const requests = []
const errors = []
const note = (where) => (err) => { if (err) errors.push(`${where}: ${err.message || err}`) }

async function segment () {
  const { Analytics } = require('@segment/analytics-node')
  const client = new Analytics({ writeKey, host, maxRetries: 1 })
  client.on('error', (e) => errors.push(`error event: ${e.reason || e.code || e}`))
  client.on('http_response', (r) => requests.push({ status: r.status, headers: {},
                                                    body: JSON.parse(r.body) }))
  for (const [method, params] of calls) client[method](params, note(method))
  await client.closeAndFlush({ timeout: 20000 })
}

async function rudder () {
  const Analytics = require('@rudderstack/rudder-sdk-node')
  const client = new Analytics(writeKey, { dataPlaneUrl: host, retryCount: 1,
                                           errorHandler: note('errorHandler') })
  const record = (response) => {
    const config = response.config
    const raw = Buffer.isBuffer(config.data) ? zlib.gunzipSync(config.data) : config.data
    requests.push({ status: response.status, body: JSON.parse(raw), headers: {
      'content-type': String(config.headers['Content-Type']),
      'content-encoding': String(config.headers['Content-Encoding']) } })
  }
  client.axiosInstance.interceptors.response.use(
    (r) => { record(r); return r },
    (e) => { if (e.response) record(e.response); return Promise.reject(e) })
  for (const [method, params] of calls) client[method](params, note(method))
  await client.flush()
}

const run = sdk === 'segment' ? segment : rudder
run().catch((e) => errors.push(`script: ${e.stack || e}`)).then(() => {
  process.stdout.write(JSON.stringify({ requests, errors }), () => process.exit(0))
})
"""


@pytest.fixture(scope="session")
def node_sdks() -> Path:
    """tests/.node with both Node SDKs installed (npm, once; reused while it stays valid)."""
    return node_packages(NODE_PACKAGES, "the Node SDK tests")


def run_node_sdk(node_dir: Path, tmp_path: Path, sdk: str, url: str, write_key: str,
                 calls: list[list[Any]]) -> list[dict[str, Any]]:
    """Run calls through a Node SDK; returns the requests it made (status, headers, body)."""
    script = tmp_path / f"send-{uuid.uuid4().hex[:8]}.js"
    script.write_text(NODE_SCRIPT)
    result = subprocess.run(["node", str(script), sdk, url, write_key, json.dumps(calls)],
                            cwd=tmp_path,
                            env={**os.environ, "NODE_PATH": str(node_dir / "node_modules")},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["errors"] == [], report["errors"]
    assert report["requests"], result.stderr
    assert [r["status"] for r in report["requests"]] == [200] * len(report["requests"])
    return report["requests"]


def test_segment_node(node_sdks: Path, live_gateway: LiveGateway, db: Engine,
                      tmp_path: Path) -> None:
    """@segment/analytics-node with its defaults: one JSON batch, writeKey in body and header."""
    started = now()
    requests = run_node_sdk(node_sdks, tmp_path, "segment", live_gateway.url, WRITE_KEY,
                            NODE_CALLS)
    finished = now()
    sent = [m for r in requests for m in r["body"]["batch"]]
    assert all(r["body"]["writeKey"] == WRITE_KEY for r in requests)
    assert all(m["messageId"].startswith("node-next-") for m in sent)
    assert_scenario_stored(db, SEGMENT_NODE, sent, started, finished)
    for row, request in zip(stored_events(db), [r for r in requests
                                                    for _ in r["body"]["batch"]], strict=True):
        assert row["payload"]["sentAt"] == request["body"]["sentAt"]  # batch-level sentAt


def test_rudder_node(node_sdks: Path, live_gateway: LiveGateway, db: Engine,
                     tmp_path: Path) -> None:
    """@rudderstack/rudder-sdk-node with its defaults: gzip sent as x-www-form-urlencoded,
    originalTimestamp and sentAt per message instead of timestamp. (An explicit `timestamp` is
    not sent here: see test_rudder_node_keeps_an_explicit_timestamp.)"""
    calls = [[method, {k: v for k, v in params.items() if k != "timestamp"}]
             for method, params in NODE_CALLS]
    started = now()
    requests = run_node_sdk(node_sdks, tmp_path, "rudder", live_gateway.url, OTHER_KEY, calls)
    finished = now()
    for request in requests:
        assert request["headers"]["content-encoding"] == "gzip"
        assert request["headers"]["content-type"].startswith("application/x-www-form-urlencoded")
    sent = [m for r in requests for m in r["body"]["batch"]]
    assert all("timestamp" not in m and "originalTimestamp" in m and "sentAt" in m for m in sent)
    assert_scenario_stored(db, RUDDER_NODE, sent, started, finished, explicit_time=False)


# routing -------------------------------------------------------------------------------------

def test_integrations_object_routes_deliveries(live_gateway: LiveGateway, db: Engine) -> None:
    """The SDK's `integrations` picks destinations among those linked to the source: web feeds
    cio + kustomer-main, server only cio, `paused` never; both vendors' Customer.io spellings."""
    segment = SegmentClient(WRITE_KEY, host=live_gateway.url, sync_mode=True)
    rudder = RudderClient(OTHER_KEY, host=live_gateway.url, sync_mode=True)
    ids = {
        "only cio": segment.track(user_id=USER, event="Routed",
                                  integrations={"All": False, "Customer.io": True})[1],
        "default": segment.track(user_id=USER, event="Everywhere")[1],
        "nowhere": segment.track(user_id=USER, event="Nowhere", integrations={"All": False})[1],
        "not kustomer": segment.track(anonymous_id=ANON, event="Skip",
                                      integrations={"Kustomer": False})[1],
        "server": rudder.track(user_id=USER, event="From server",
                               integrations={"All": False, "Customer IO": True,
                                             "Kustomer": True})[1],
    }
    event_ids = {row["message_id"]: row["id"] for row in stored_events(db)}
    assert len(event_ids) == len(ids)
    deliveries = stored_deliveries(db)
    routed = {label: sorted(d["destination"] for d in deliveries
                            if d["event_id"] == event_ids[message["messageId"]])
              for label, message in ids.items()}
    assert routed == {"only cio": ["cio"], "default": ["cio", "kustomer-main"], "nowhere": [],
                      "not kustomer": ["cio"], "server": ["cio"]}
    assert len(deliveries) == 5
    assert {d["state"] for d in deliveries} == {"pending"}
    [only_cio] = [d for d in deliveries if d["event_id"] == event_ids[ids["only cio"]["messageId"]]]
    assert (only_cio["destination"], only_cio["state"], only_cio["user_key"],
            only_cio["attempts"]) == ("cio", "pending", USER, 0)
    [skip] = [d for d in deliveries if d["event_id"] == event_ids[ids["not kustomer"]["messageId"]]]
    assert skip["user_key"] == ANON


def test_rudder_node_keeps_an_explicit_timestamp(node_sdks: Path, live_gateway: LiveGateway,
                                                 db: Engine, tmp_path: Path) -> None:
    """track({timestamp}) through rudder-sdk-node stores that event time."""
    started = now()
    requests = run_node_sdk(node_sdks, tmp_path, "rudder", live_gateway.url, OTHER_KEY,
                            [NODE_CALLS[1]])
    finished = now()
    [message] = [m for r in requests for m in r["body"]["batch"]]
    assert parse(message["timestamp"]) == EVENT_TIME  # on the wire, beside originalTimestamp
    assert parse(message["originalTimestamp"]) >= started - MS
    [row] = stored_events(db)
    assert EVENT_TIME - MS <= row["timestamp"] <= EVENT_TIME + (finished - started)
    assert_times(row, message, started, finished)
