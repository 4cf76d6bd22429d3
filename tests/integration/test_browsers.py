"""Both browser SDKs in a real Chromium, configured only with the gateway's URL and a write key:
analytics.js 2.0 (`@segment/analytics-next`, `cdnURL`) and RudderStack JS v3
(`@rudderstack/analytics-js/bundled`, `configUrl` + `dataPlaneUrl`).

A static page on its own port (another origin than the gateway) carries both SDKs, bundled from
their npm packages by esbuild into one offline file, as a site's bundler would. puppeteer-core
drives the system Chromium (headless) through three phases (browser/driver.js):

1. calls: load the SDK, then page, alias, identify (with email), track (with properties), group;
2. unload: load again, queue one track, leave the page: analytics.js flushes its batch with
   `keepalive` on pagehide, RudderStack's `useBeacon` queue flushes with `sendBeacon`;
3. probes: the page fetches the settings with unknown and disabled keys and must *read* the
   401/404 (a missing CORS header would make fetch throw).

Every call must be stored with its type, ids, properties, `context.userAgent`,
`context.page.url` and `context.library.name`; the console must stay free of errors; and no
request may go anywhere but the two local origins — checked on Chromium's own network log, which
also sees what a page sends while it unloads (page events do not).

Skipped, with the reason, when Chromium, node/npm or the npm packages are not available. One
SQLite gateway serves both SDKs (storage is not what is tested here).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import Engine

from gateway.store.db import make_engine
from tests.conftest import BROWSER_DIR, OTHER_KEY, WRITE_KEY, LiveGateway, base_config
from tests.helpers import wait_for_rows
from tests.node import node_packages

pytestmark = pytest.mark.slow  # node, esbuild and a headless Chromium

BROWSER_PACKAGES = {"@segment/analytics-next": "1", "@rudderstack/analytics-js": "3",
                    "puppeteer-core": "24", "esbuild": "0"}
PAGE_SITE = "http://127.0.0.1"  # the network isolation key of the page's requests (both ports)
VENDOR_HOSTS = ("segment.com", "segment.io", "rudderstack.com", "rudderlabs.com")

USER = "user-42"
EMAIL = "ada@example.com"
TRAITS = {"email": EMAIL, "plan": "pro"}
EVENT = "Order Completed"
PROPERTIES = {"revenue": 9.99, "currency": "EUR", "items": [{"sku": "A-1", "qty": 2}]}
PAGE_CATEGORY = "Docs"
PAGE_NAME = "Browser SDKs"
PAGE_PROPERTIES = {"section": "setup"}
GROUP = "group-9"
GROUP_TRAITS = {"name": "Acme", "employees": 12}
UNLOAD_EVENT = "Checkout Left"
UNLOAD_PROPERTIES = {"step": 2}
CALL_TYPES = ["page", "alias", "identify", "track", "group"]


@dataclass(frozen=True)
class BrowserSdk:
    name: str  # what browser/scenario.js calls it
    write_key: str
    source: str
    library: str  # context.library.name
    paths: tuple[str, ...]  # the requests of the calls phase, in CALL_TYPES order
    unload_path: str  # the request sent as the page unloads


SEGMENT = BrowserSdk("segment", WRITE_KEY, "web", "analytics.js",
                     ("/v1/p", "/v1/a", "/v1/i", "/v1/t", "/v1/g"), "/v1/b")
RUDDER = BrowserSdk("rudder", OTHER_KEY, "server", "RudderLabs JavaScript SDK",
                    ("/v1/page", "/v1/alias", "/v1/identify", "/v1/track", "/v1/group"),
                    "/beacon/v1/batch")


# fixtures ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Site:
    origin: str
    node_dir: Path


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def site(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The test page on its own port, with both SDKs bundled into sdks.js."""
    node_dir = node_packages(BROWSER_PACKAGES, "the browser tests (SDKs, puppeteer-core, esbuild)")
    folder = tmp_path_factory.mktemp("site")
    for name in ("page.html", "bye.html", "scenario.js"):
        shutil.copy(BROWSER_DIR / name, folder / name)
    with open(BROWSER_DIR / "entry.js", "rb") as entry:  # resolved from tests/.node
        bundled = subprocess.run(
            [str(node_dir / "node_modules" / ".bin" / "esbuild"), "--bundle", "--format=iife",
             "--log-level=error", f"--outfile={folder / 'sdks.js'}"],
            stdin=entry, cwd=node_dir, capture_output=True, text=True, timeout=120)
    assert bundled.returncode == 0, bundled.stderr
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield Site(f"http://127.0.0.1:{server.server_address[1]}", node_dir)
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def gateway(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    workdir = tmp_path_factory.mktemp("gateway")
    live = LiveGateway(workdir, base_config(f"sqlite:///{workdir / 'gateway.db'}"))
    yield live
    live.stop()


@pytest.fixture(scope="module")
def db(gateway: LiveGateway) -> Iterator[Engine]:
    engine = make_engine(gateway.database_url)
    yield engine
    engine.dispose()


# the driver ----------------------------------------------------------------------------------

def run_browser(chromium: str, site: Site, gateway: LiveGateway, sdk: BrowserSdk,
                workdir: Path) -> dict[str, Any]:
    """Run browser/driver.js; returns its report plus `netlog`: every URL request Chromium
    made, from its own network log."""
    net_log = workdir / "netlog.json"
    job = {
        "chromium": chromium, "userDataDir": str(workdir / "profile"), "netLog": str(net_log),
        "pageOrigin": site.origin, "sdk": sdk.name,
        "scenario": {
            "writeKey": sdk.write_key, "gateway": gateway.url, "userId": USER, "traits": TRAITS,
            "event": EVENT, "properties": PROPERTIES, "pageCategory": PAGE_CATEGORY,
            "pageName": PAGE_NAME, "pageProperties": PAGE_PROPERTIES, "groupId": GROUP,
            "groupTraits": GROUP_TRAITS, "unloadEvent": UNLOAD_EVENT,
            "unloadProperties": UNLOAD_PROPERTIES,
        },
        "probes": [f"{gateway.url}/v1/projects/wk_unknown/settings",
                   f"{gateway.url}/v1/projects/wk_disabled/settings",
                   f"{gateway.url}/sourceConfig/?writeKey=wk_unknown"],
    }
    result = subprocess.run(
        ["node", str(BROWSER_DIR / "driver.js"), json.dumps(job)], cwd=workdir,
        env={**os.environ, "NODE_PATH": str(site.node_dir / "node_modules")},
        capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["errors"] == [], report["errors"]
    report["netlog"] = read_net_log(net_log)
    return report


def read_net_log(path: Path) -> list[dict[str, str]]:
    """`{method, url, page}` for each URL request in a Chromium NetLog; `page` is the top-frame
    site of its network isolation key: PAGE_SITE for what the page (or a worker of it) asked
    for, another site or "null" for the browser's own requests (clock, sign-in, updates)."""
    log = json.loads(path.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    requests = []
    for event in log["events"]:
        params = event.get("params") or {}
        if event["type"] == start_job and "url" in params:
            requests.append({"method": params.get("method", ""), "url": params["url"],
                             "page": params.get("network_isolation_key", "null").split(" ")[0]})
    return requests


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def describe(sdk: BrowserSdk, report: dict[str, Any], rows: list[dict[str, Any]],
             seconds: float) -> str:
    """What a reader of the test output wants: which calls were stored, through which request."""
    lines = [f"{sdk.name} ({sdk.library}) in {report['userAgent']}: {seconds:.1f} s"]
    for row in rows:
        payload = row["payload"]
        lines.append(f"  stored {row['type']:<8} {row['event'] or '':<15} "
                     f"userId={payload.get('userId')} page={payload['context']['page']['url']}")
    sent = [urlsplit(r["url"]).path for r in report["netlog"]
            if r["method"] == "POST" and r["page"] == PAGE_SITE]
    lines.append(f"  POSTs seen by Chromium: {', '.join(sent)}")
    own = sorted({origin_of(r["url"]) for r in report["netlog"] if r["page"] != PAGE_SITE})
    lines.append(f"  Chromium's own requests (no page; resolved nowhere): {', '.join(own) or '-'}")
    warnings = [c["text"] for c in report["console"] if c["level"] in ("warning", "warn")]
    lines.append(f"  console warnings: {warnings or 'none'}")
    return "\n".join(lines)


# the test ------------------------------------------------------------------------------------

@pytest.mark.parametrize("sdk", [SEGMENT, RUDDER], ids=["analytics-next", "rudderstack-js-v3"])
def test_browser_sdk_sends_every_call_to_the_gateway(
        sdk: BrowserSdk, chromium: str, site: Site, gateway: LiveGateway, db: Engine,
        tmp_path: Path) -> None:
    started = time.monotonic()
    report = run_browser(chromium, site, gateway, sdk, tmp_path)
    rows = wait_for_rows(db, sdk.source, len(CALL_TYPES) + 1)
    print("\n" + describe(sdk, report, rows, time.monotonic() - started))

    calls, unload = report["phases"]["calls"], report["phases"]["unload"]
    anonymous_id = calls["anonymousId"]
    assert anonymous_id and unload["anonymousId"] == anonymous_id  # kept across page loads
    page_url = {"calls": f"{site.origin}/page.html?phase=calls",
                "unload": f"{site.origin}/page.html?phase=unload"}

    # every call stored once, with what the page asked for (RudderStack's queue sends its
    # requests in parallel, so the order of arrival is not the order of the calls)
    assert sorted(row["type"] for row in rows) == sorted([*CALL_TYPES, "track"])
    by_call = {("unload" if row["event"] == UNLOAD_EVENT else row["type"]): row for row in rows}
    assert set(by_call) == {*CALL_TYPES, "unload"}
    for call, row in by_call.items():
        payload = row["payload"]
        context = payload["context"]
        assert context["userAgent"] == report["userAgent"], call
        assert context["page"]["url"] == page_url["unload" if call == "unload" else "calls"]
        assert context["library"]["name"] == sdk.library, call
        assert payload["anonymousId"] == anonymous_id, call
        assert row["anonymous_id"] == anonymous_id
        if call != "page":
            assert payload["userId"] == USER and row["user_id"] == USER, call
    page = by_call["page"]["payload"]
    assert page["name"] == PAGE_NAME
    assert page["properties"]["section"] == PAGE_PROPERTIES["section"]
    assert page["properties"]["url"] == page_url["calls"]
    assert "userId" not in page  # sent before anyone signed in
    assert by_call["alias"]["payload"]["previousId"] == anonymous_id
    identify = by_call["identify"]["payload"]
    traits = {**identify["context"].get("traits", {}), **identify.get("traits", {})}
    assert traits["email"] == EMAIL and traits["plan"] == "pro"
    track = by_call["track"]
    assert track["event"] == EVENT and track["payload"]["properties"] == PROPERTIES
    group = by_call["group"]["payload"]
    assert group["groupId"] == GROUP and group["traits"] == GROUP_TRAITS
    left = by_call["unload"]
    assert left["event"] == UNLOAD_EVENT and left["payload"]["properties"] == UNLOAD_PROPERTIES

    # the wire: what the page posted is what was stored, through the SDK's own routes
    gateway_posts = [r for r in report["requests"]
                     if r["url"].startswith(gateway.url) and r["method"] == "POST"]
    assert sorted(urlsplit(r["url"]).path for r in gateway_posts) == sorted(sdk.paths)
    sent_ids = sorted(json.loads(r["body"])["messageId"] for r in gateway_posts)
    assert sent_ids == sorted(by_call[call]["message_id"] for call in CALL_TYPES)
    answered = [r for r in report["requests"] if r["url"].startswith(gateway.url)]
    assert all(r.get("status") in (200, 304) for r in answered if r["phase"] != "probes"), answered
    # the unload request left as the page did, not before (the page's own events may miss it
    # once the page is gone: the network log is what must have seen it)
    assert not [r for r in report["requests"]
                if urlsplit(r["url"]).path == sdk.unload_path and r["phase"] != "left"]
    assert [r for r in report["netlog"] if r["method"] == "POST"
            and r["url"].startswith(gateway.url + sdk.unload_path)]

    # nothing but the two local origins, and never a vendor
    local = {site.origin, gateway.url}
    page_requests = [r for r in report["netlog"] if r["page"] == PAGE_SITE]
    assert page_requests and {origin_of(r["url"]) for r in page_requests} <= local, page_requests
    assert {origin_of(r["url"]) for r in report["requests"]
            if not r["url"].startswith("data:")} <= local
    assert not [r for r in report["netlog"] if urlsplit(r["url"]).hostname
                and urlsplit(r["url"]).hostname.endswith(VENDOR_HOSTS)]
    assert [t for t in report["targets"] if t["type"] not in ("page", "other")] == []

    # a clean console while the SDKs worked
    errors = [c for c in report["console"] if c["phase"] != "probes"
              and c["level"] in ("error", "assert")]
    assert errors == []

    # the browser reads the real status of a bad key (CORS on errors)
    probes = report["phases"]["probes"]
    assert [(p.get("status"), p.get("body", {}).get("code")) for p in probes.values()] == [
        (401, "invalid_write_key"), (404, "source_disabled"), (401, "invalid_write_key")]
