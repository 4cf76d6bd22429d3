"""The console as an operator uses it: headless Chromium (puppeteer-core, steered one step at a
time by browser/console_driver.js) against a real `gateway serve` with its delivery worker, a
stand-in destination, and events sent by Segment's Python SDK — on SQLite and PostgreSQL.

The tests run in order and share one signed-in browser: sign in, watch an SDK's event appear
live (within 1 s of the SDK's 200, which is sent after the commit), open it and see its delivery
and attempts, explain an event the destination refused, retry that dead letter and see it
delivered, replay with a dry run first, CSRF-less posts refused, sign out (a copied cookie dies
with it), sign out everywhere; and before any of it, nothing reachable without the cookie. With
GATEWAY_SCREENSHOTS=DIR each page is saved there as a 1280x800 PNG.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from segment.analytics import Client

from tests.conftest import BROWSER_DIR, POSTGRES_URL, WRITE_KEY, LiveGateway, base_config, pg_schema
from tests.node import node_packages
from tests.standin import Answer, StandIn

pytestmark = pytest.mark.slow  # node and a headless Chromium against `gateway serve`

PACKAGES = {"puppeteer-core": "24"}
TOKEN = "console-admin-token-7-k3v9q2x7m4w8p6z1"
SECRET = "hook-secret-4242"
RUN = uuid.uuid4().hex[:8]
REFUSED = f"refused-{RUN}"
PAGES = ("/console/", "/console/events/1", "/console/deliveries", "/console/destinations",
         "/console/sources", "/console/explain", "/console/stream")


class Browser:
    """One Chromium, one page; every call is a command to console_driver.js."""

    def __init__(self, executable: str, node_dir: Path, workdir: Path) -> None:
        job = {"chromium": executable, "userDataDir": str(workdir / "profile")}
        self.process = subprocess.Popen(
            ["node", str(BROWSER_DIR / "console_driver.js"), json.dumps(job)],
            cwd=node_dir, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "NODE_PATH": str(node_dir / "node_modules")})

    def __call__(self, op: str, **args: Any) -> Any:
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, f"the browser driver ended during {op}"
        answer = json.loads(line)
        assert answer["ok"], f"{op} {args}: {answer['error']}"
        return answer["value"]

    def close(self) -> None:
        try:
            assert self.process.stdin
            self.process.stdin.write('{"op": "quit"}\n')
            self.process.stdin.close()
            self.process.wait(timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()


@pytest.fixture(scope="module", params=["sqlite",
                                        pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'gateway.db'}"
        return
    if not POSTGRES_URL:
        pytest.skip("GATEWAY_TEST_POSTGRES_URL is not set")
    with pg_schema() as url:
        yield url


@pytest.fixture(scope="module")
def standin(database: str) -> Iterator[StandIn]:  # one per database run: its own requests
    server = StandIn()
    server.answer_for = lambda r: (Answer(400, {"error": f"unknown field, key {SECRET}"})
                                   if r.json and r.json.get("messageId") == REFUSED else None)
    yield server
    server.close()


@pytest.fixture(scope="module")
def gateway(database: str, standin: StandIn, chromium: str,
            tmp_path_factory) -> Iterator[LiveGateway]:
    workdir = tmp_path_factory.mktemp("gateway")
    raw = base_config(database, admin_token=TOKEN, destinations=[
        {"name": "hook", "type": "webhook", "endpoint": standin.url, "sources": ["web"],
         "settings": {"webhookUrl": "https://hooks.example/in", "apiKey": SECRET}}],
        retry={"base_delay_seconds": 1}, worker={"poll_interval_ms": 50})
    live = LiveGateway(workdir, raw, delivery_worker=True)
    yield live
    live.stop()


@pytest.fixture(scope="module")
def browser(gateway: LiveGateway, chromium: str,
            tmp_path_factory) -> Iterator[Browser]:
    node_dir = node_packages(PACKAGES, "the console browser tests (puppeteer-core)")
    driver = Browser(chromium, node_dir, tmp_path_factory.mktemp("chromium"))
    yield driver
    driver.close()


@pytest.fixture(scope="module")
def sdk(gateway: LiveGateway) -> Iterator[Client]:
    yield Client(WRITE_KEY, host=gateway.url, sync_mode=True)  # each call sent at once


def shot(browser: Browser, name: str) -> None:
    folder = os.environ.get("GATEWAY_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        browser("screenshot", path=str(Path(folder) / f"{name}.png"))


def reload_until(browser: Browser, url: str, selector: str, text: str,
                 seconds: float = 15) -> None:
    """The event page is rendered once: load it again until the worker's result shows."""
    deadline = time.monotonic() + seconds
    while True:
        browser("goto", url=url)
        try:
            browser("wait", selector=selector, text=text, timeout=500)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise


def event_id(gateway: LiveGateway, message_id: str) -> int:
    found = requests.get(gateway.url + "/admin/v1/explain", params={"message_id": message_id},
                         headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).json()
    return found["events"][0]["id"]


def test_nothing_is_reachable_without_the_cookie(gateway: LiveGateway, browser: Browser) -> None:
    for path in PAGES:
        answer = requests.get(gateway.url + path, timeout=10, allow_redirects=False)
        assert answer.status_code in (302, 401), path
        assert "gw_console" not in answer.headers.get("Set-Cookie", "")
        assert b"Live events" not in answer.content
    for path in ("/console/deliveries/1/retry", "/console/replay", "/console/sources/web/key",
                 "/console/deliveries/retry-matching", "/console/logout"):
        assert requests.post(gateway.url + path, data={"csrf": "x"}, timeout=10,
                             allow_redirects=False).status_code in (401, 403), path
    result = browser("goto", url=gateway.url + "/console/deliveries")
    assert "/console/login" in result["url"]
    shot(browser, "login")


def test_sign_in_sets_a_safe_cookie(gateway: LiveGateway, browser: Browser) -> None:
    assert "/console/login?next=" in browser("goto", url=gateway.url + "/console/deliveries")[
        "url"]
    browser("type", selector="#token", text="not-the-token")
    assert browser("click", selector="#sign-in", navigate=True)["status"] == 401
    assert "not the admin token" in browser("text", selector="#login-error")
    browser("type", selector="#token", text=TOKEN)
    result = browser("click", selector="#sign-in", navigate=True)
    assert result["url"].endswith("/console/deliveries")  # back where it was sent from
    [cookie] = [c for c in browser("cookies") if c["name"] == "gw_console"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
    assert TOKEN not in cookie["value"]


def test_an_sdk_event_appears_live_within_a_second(gateway: LiveGateway, browser: Browser,
                                                    sdk: Client) -> None:
    browser("goto", url=gateway.url + "/console/")
    browser("wait", selector="#rate", text="events/s")
    time.sleep(0.5)  # the stream is open
    message = f"live-{RUN}"
    sdk.track("ada", "Order Completed", {"revenue": 9.99}, message_id=message)
    sdk.flush()  # returns after the gateway's 200, i.e. after the commit
    committed = time.monotonic()
    browser("wait", selector="#events tbody", text=message, timeout=5000)
    assert time.monotonic() - committed < 1.0
    assert "Order Completed" in browser("text", selector="#events tbody tr:first-child")
    shot(browser, "live")

    browser("click", selector="#pause")
    paused = f"paused-{RUN}"
    sdk.track("ada", "Held Back", message_id=paused)
    sdk.flush()
    browser("wait", selector="#rate", text="1 waiting", timeout=5000)
    assert paused not in browser("text", selector="#events tbody")
    browser("click", selector="#pause")
    browser("wait", selector="#events tbody", text=paused, timeout=2000)

    browser("goto", url=gateway.url + "/console/?user=nobody-else")  # filters apply live too
    time.sleep(0.5)
    sdk.track("ada", "Filtered Out", message_id=f"filtered-{RUN}")
    sdk.flush()
    time.sleep(1.0)
    assert f"filtered-{RUN}" not in browser("text", selector="body")


def test_the_event_page_shows_delivery_attempts_and_identity(gateway: LiveGateway,
                                                              browser: Browser,
                                                              sdk: Client) -> None:
    sdk.identify("ada", {"email": "ada@example.com", "plan": "pro"}, message_id=f"id-{RUN}")
    sdk.flush()
    browser("goto", url=gateway.url + "/console/")
    browser("wait", selector="#events tbody", text=f"live-{RUN}")
    row = browser("count", selector="#events tbody tr")
    assert row >= 1
    url = f"{gateway.url}/console/events/{event_id(gateway, f'live-{RUN}')}"
    reload_until(browser, url, "#deliveries", "delivered")
    assert "HTTP 200" in browser("text", selector="#deliveries")
    attempts = browser("text", selector="details.attempts")
    assert "200" in attempts and " ms" in attempts
    assert "ada@example.com" in browser("text", selector="#profile")
    assert "revenue" in browser("text", selector="#payload")
    shot(browser, "event")


def test_explain_an_event_the_destination_refused(gateway: LiveGateway, browser: Browser,
                                                  sdk: Client, standin: StandIn) -> None:
    sdk.track("bob", "Signed Up", {"plan": "free"}, message_id=REFUSED)
    sdk.flush()
    url = f"{gateway.url}/console/events/{event_id(gateway, REFUSED)}"
    reload_until(browser, url, "#deliveries", "dead after")
    why = browser("text", selector="#deliveries")
    assert "HTTP 400" in why and "unknown field" in why
    assert SECRET not in browser("text", selector="body")  # redacted in errors and excerpts
    browser("goto", url=f"{gateway.url}/console/explain?message_id={REFUSED}")
    assert "1 dead" in browser("text", selector="#summary")
    shot(browser, "explain")


def test_retry_a_dead_letter_and_see_it_delivered(gateway: LiveGateway, browser: Browser,
                                                  standin: StandIn) -> None:
    standin.answer_for = None  # the destination accepts it now
    browser("goto", url=gateway.url + "/console/deliveries?state=dead")
    browser("wait", selector="#letters", text="HTTP 400")
    shot(browser, "deliveries")
    browser("click", selector="#letters tbody tr:first-child button.retry", navigate=True)
    assert "pending again" in browser("text", selector="#notice")
    url = f"{gateway.url}/console/events/{event_id(gateway, REFUSED)}"
    reload_until(browser, url, "#deliveries", "delivered")
    assert sum(r.json.get("messageId") == REFUSED for r in standin.requests if r.json) == 2


def test_replay_dry_run_then_for_real(gateway: LiveGateway, browser: Browser,
                                      standin: StandIn) -> None:
    before = sum(r.json.get("messageId") == f"live-{RUN}" for r in standin.requests if r.json)
    browser("goto", url=gateway.url + "/console/deliveries")
    browser("type", selector="#replay input[name=event]", text="Order Completed")
    browser("click", selector="#replay button[type=submit]", navigate=True)
    assert "Dry run: 1 stored event match" in browser("text", selector="#dry-run")
    time.sleep(0.5)
    assert sum(r.json.get("messageId") == f"live-{RUN}" for r in standin.requests
               if r.json) == before  # a dry run queues nothing
    shot(browser, "replay")
    browser("click", selector="#confirm", navigate=True)
    assert "queued 1 deliveries to hook" in browser("text", selector="#notice")
    deadline = time.monotonic() + 15
    while sum(r.json.get("messageId") == f"live-{RUN}" for r in standin.requests
              if r.json) == before:
        assert time.monotonic() < deadline, "the replayed event never reached the stand-in"
        time.sleep(0.1)


def test_destinations_and_sources_pages(gateway: LiveGateway, browser: Browser) -> None:
    browser("goto", url=gateway.url + "/console/destinations")
    row = browser("text", selector="#destinations tbody tr[data-destination=hook]")
    assert "webhook" in row and "web" in row
    assert browser("count", selector="svg.chart rect.delivered") >= 1
    shot(browser, "destinations")
    browser("goto", url=gateway.url + "/console/sources")
    section = "section[data-source=web]"
    assert WRITE_KEY not in browser("text", selector="body")  # masked until revealed
    browser("click", selector=f"{section} button.reveal")
    browser("wait", selector=f"{section} code.key", text=WRITE_KEY)
    snippet = browser("text", selector=f"{section} pre.snippet", raw=True)
    assert WRITE_KEY in snippet and gateway.url in snippet
    shot(browser, "sources")


def test_posts_without_the_csrf_token_are_refused(gateway: LiveGateway,
                                                  browser: Browser) -> None:
    browser("goto", url=gateway.url + "/console/deliveries")
    errors = browser("errors")  # every page so far: no script error, no missing file
    assert [e for e in errors if "Failed to load resource" not in e] == []
    assert [e for e in errors if " 401 " not in e] == []  # only the wrong token's answer
    for form in (None, {"csrf": "forged"}):
        for path in ("/console/deliveries/retry-matching", "/console/replay",
                     "/console/sources/web/key", "/console/logout"):
            answer = browser("fetch", url=path, method="POST", form=form)
            assert answer["status"] == 403, (path, form, answer)


def test_sign_out(gateway: LiveGateway, browser: Browser) -> None:
    browser("goto", url=gateway.url + "/console/")
    [copied] = [c["value"] for c in browser("cookies") if c["name"] == "gw_console"]
    result = browser("click", selector="#sign-out", navigate=True)
    assert "/console/login" in result["url"]
    assert "/console/login" in browser("goto", url=gateway.url + "/console/sources")["url"]
    assert browser("fetch", url="/console/stream")["status"] == 401
    # revoked on the server: a copy of the cookie taken before sign-out is worth nothing
    assert requests.get(gateway.url + "/console/sources", cookies={"gw_console": copied},
                        headers={"Accept": "application/json"}, timeout=10).status_code == 401


def sign_in_elsewhere(gateway: LiveGateway) -> requests.Session:
    """Another browser: the sign-in form over plain HTTP."""
    other = requests.Session()
    page = other.get(gateway.url + "/console/login", timeout=10).text
    csrf = page.split('name="csrf" value="')[1].split('"')[0]
    other.post(gateway.url + "/console/login", data={"csrf": csrf, "token": TOKEN}, timeout=10)
    assert other.get(gateway.url + "/console/sources", timeout=10).status_code == 200
    return other


def test_sign_out_everywhere(gateway: LiveGateway, browser: Browser) -> None:
    browser("goto", url=gateway.url + "/console/login")
    browser("type", selector="#token", text=TOKEN)
    browser("click", selector="#sign-in", navigate=True)
    other = sign_in_elsewhere(gateway)
    browser("goto", url=gateway.url + "/console/deliveries")
    result = browser("click", selector="#sign-out-everywhere", navigate=True)
    assert "/console/login" in result["url"]
    assert "Every console session is signed out" in browser("text", selector="#notice")
    assert other.get(gateway.url + "/console/sources", timeout=10,
                     allow_redirects=False).status_code == 302  # to the sign-in page
    assert browser("fetch", url="/console/stream")["status"] == 401
