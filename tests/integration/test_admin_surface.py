"""The admin surface (/admin, /console, /metrics) under the real `gateway serve`: its own
listener (`[admin] bind`), failed tokens throttled per peer, /metrics behind the token, and the
client address and scheme believed only from `[server] trusted_proxies` (CIDRs, rightmost
untrusted X-Forwarded-For entry)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter

from gateway.store.db import make_engine
from tests.conftest import (
    ADMIN_TOKEN,
    WRITE_KEY,
    LiveGateway,
    base_config,
    free_port,
    write_toml,
)
from tests.helpers import basic, console_sign_in, stored_payloads

pytestmark = pytest.mark.slow  # every test starts `gateway serve` or the CLI in a subprocess

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
TRACK = {"userId": "u1", "event": "Bought", "messageId": "m-1"}


class FromAddress(HTTPAdapter):
    """Connections from a chosen local address (Linux routes all of 127.0.0.0/8 to lo): a
    second peer, or a proxy other than 127.0.0.1."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def peer(address: str) -> requests.Session:
    session = requests.Session()
    session.mount("http://", FromAddress(address))
    return session


@pytest.fixture
def start(database_url: str, tmp_path: Path):
    started: list[LiveGateway] = []

    def run(host: str = "127.0.0.1", **overrides: Any) -> LiveGateway:
        gateway = LiveGateway(tmp_path, base_config(database_url, **overrides), host=host)
        started.append(gateway)
        return gateway

    yield run
    for gateway in started:
        gateway.stop()


# [admin] bind ----------------------------------------------------------------------------------


def test_the_admin_surface_answers_only_on_its_own_listener(start) -> None:
    admin_port = free_port()
    gateway = start(admin={"bind": f"127.0.0.1:{admin_port}"})
    admin_url = f"http://127.0.0.1:{admin_port}"
    public, private = requests.Session(), requests.Session()
    # the public listener: not there at all, whatever Host the client claims
    for path in (
        "/admin/v1/events",
        "/metrics",
        "/console/login",
        "/console/",
        "//admin/v1/events",
    ):
        for host in (None, f"127.0.0.1:{admin_port}"):
            headers = {**AUTH, **({"Host": host} if host else {})}
            answer = public.get(gateway.url + path, headers=headers, allow_redirects=False)
            assert answer.status_code == 404, (path, host)
            assert answer.json()["code"] == "not_found"
    assert (
        public.post(
            gateway.url + "/console/login", data={"token": ADMIN_TOKEN}, allow_redirects=False
        ).status_code
        == 404
    )
    # the admin listener: everything
    assert private.get(admin_url + "/admin/v1/events", headers=AUTH).status_code == 200
    assert private.get(admin_url + "/admin/v1/events").status_code == 401
    assert private.get(admin_url + "/metrics").status_code == 200
    assert console_sign_in(private, admin_url, ADMIN_TOKEN).status_code == 302
    assert private.get(admin_url + "/console/deliveries").status_code == 200
    # health and tracking on the public one, health on both
    assert public.get(gateway.url + "/health").status_code == 200
    assert private.get(admin_url + "/health").status_code == 200
    assert (
        public.post(gateway.url + "/v1/track", json=TRACK, headers=basic(WRITE_KEY)).status_code
        == 200
    )
    assert f"Admin API, console and /metrics only on {admin_url}" in gateway.log_text()


def test_check_refuses_a_bad_admin_bind(tmp_path: Path) -> None:
    for bind, problem in (
        ("127.0.0.1:http", "the port must be a number"),
        ("127.0.0.1:8080", "is also [server] bind"),
    ):
        config = tmp_path / "gateway.toml"
        write_toml(config, base_config(f"sqlite:///{tmp_path / 'gw.db'}", admin={"bind": bind}))
        run = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "--config", str(config), "check"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 1
        assert "[admin]: field 'bind'" in run.stdout and problem in run.stdout, run.stdout


def test_a_busy_admin_port_stops_serve_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        admin_port = busy.getsockname()[1]
        config = tmp_path / "gateway.toml"
        write_toml(
            config,
            base_config(
                f"sqlite:///{tmp_path / 'gw.db'}", admin={"bind": f"127.0.0.1:{admin_port}"}
            ),
        )
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "--config",
                str(config),
                "serve",
                "--bind",
                f"127.0.0.1:{free_port()}",
                "--no-worker",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert run.returncode == 2 and "Serving on" not in run.stdout
    assert (
        f"cannot listen on 127.0.0.1:{admin_port}: the address is already in use" in run.stderr
        and "[admin] bind" in run.stderr
        and "Traceback" not in run.stderr
    )


# throttling failed authentications -------------------------------------------------------------


def test_failed_tokens_are_throttled_per_peer_and_logged_without_the_token(start) -> None:
    gateway = start()  # the default: 10 failures a minute
    attacker, other = peer("127.0.0.1"), peer("127.0.0.2")
    events = gateway.url + "/admin/v1/events"
    guesses = [f"guess-{n}-secretish" for n in range(10)]
    for guess in guesses:
        answer = attacker.get(events, headers={"Authorization": f"Bearer {guess}"})
        assert answer.status_code == 401
    blocked = attacker.get(events, headers={"Authorization": "Bearer guess-4"})
    assert blocked.status_code == 429
    assert blocked.json()["code"] == "too_many_failed_authentications"
    assert 50 <= int(blocked.headers["Retry-After"]) <= 60
    # while blocked even the right token is refused (a guess must tell nothing), on every
    # route that checks it
    assert attacker.get(events, headers=AUTH).status_code == 429
    assert attacker.get(gateway.url + "/health").status_code == 200
    # another peer is not held up, and its successes never count
    for _ in range(5):
        assert other.get(events, headers=AUTH).status_code == 200
    log = gateway.log_text()
    lines = [line for line in log.splitlines() if "admin authentication failed" in line]
    assert len(lines) == 10, log
    assert all('peer="127.0.0.1" route="GET /admin/v1/events"' in line for line in lines)
    assert "blocked for" in lines[-1]
    assert not any(guess in log for guess in guesses) and ADMIN_TOKEN not in log


def test_console_sign_in_failures_are_throttled_too(start) -> None:
    gateway = start(admin={"max_failed_auth": 2})
    browser = peer("127.0.0.3")
    for _ in range(2):
        assert console_sign_in(browser, gateway.url, "wrong").status_code == 401
    answer = console_sign_in(browser, gateway.url, ADMIN_TOKEN)
    assert answer.status_code == 429 and int(answer.headers["Retry-After"]) >= 1
    # the admin API shares the count: same peer, same block
    assert browser.get(gateway.url + "/admin/v1/events", headers=AUTH).status_code == 429
    assert console_sign_in(peer("127.0.0.4"), gateway.url, ADMIN_TOKEN).status_code == 302
    assert 'route="POST /console/login"' in gateway.log_text()


def test_behind_a_trusted_proxy_the_throttle_counts_the_forwarded_client(start) -> None:
    gateway = start(server={"trusted_proxies": ["127.0.0.1"]}, admin={"max_failed_auth": 2})
    events = gateway.url + "/admin/v1/events"
    bad = {"Authorization": "Bearer nope"}
    for _ in range(2):
        assert (
            requests.get(events, headers={**bad, "X-Forwarded-For": "198.51.100.7"}).status_code
            == 401
        )
    # a client that puts another address in front is still 198.51.100.7 to the proxy
    spoofed = {**AUTH, "X-Forwarded-For": "192.0.2.1, 198.51.100.7"}
    assert requests.get(events, headers=spoofed).status_code == 429
    assert (
        requests.get(events, headers={**AUTH, "X-Forwarded-For": "198.51.100.8"}).status_code == 200
    )
    assert 'peer="198.51.100.7"' in gateway.log_text()


# /metrics and the token ------------------------------------------------------------------------


def test_metrics_need_the_token_when_the_public_bind_is_not_loopback(start) -> None:
    gateway = start(host="0.0.0.0")
    assert requests.get(gateway.url + "/metrics").status_code == 401
    answer = requests.get(gateway.url + "/metrics", headers=AUTH)
    assert answer.status_code == 200 and "gateway_delivery_queue_depth" in answer.text


def test_metrics_open_on_a_separate_admin_listener(start) -> None:
    admin_port = free_port()
    gateway = start(host="0.0.0.0", admin={"bind": f"127.0.0.1:{admin_port}"})
    assert requests.get(gateway.url + "/metrics", headers=AUTH).status_code == 404
    assert requests.get(f"http://127.0.0.1:{admin_port}/metrics").status_code == 200


@pytest.mark.parametrize(
    "setting,host,status",
    [
        ({"metrics": {"require_token": True}}, "127.0.0.1", 401),
        ({"metrics": {"require_token": False}}, "0.0.0.0", 200),
        ({"admin": {"metrics_require_token": True}}, "127.0.0.1", 401),  # the older name
    ],
)
def test_metrics_require_token_when_told(start, setting, host, status) -> None:
    gateway = start(host=host, **setting)
    assert requests.get(gateway.url + "/metrics").status_code == status
    assert requests.get(gateway.url + "/metrics", headers=AUTH).status_code == 200


# trusted proxies: X-Forwarded-For and X-Forwarded-Proto ----------------------------------------


def stored_ips(gateway: LiveGateway) -> dict[str, str]:
    engine = make_engine(gateway.database_url)
    try:
        return {p["messageId"]: p["context"]["ip"] for p in stored_payloads(engine)}
    finally:
        engine.dispose()


def test_the_client_is_the_rightmost_untrusted_forwarded_address(start) -> None:
    gateway = start(server={"trusted_proxies": ["127.0.0.0/30", "10.0.0.0/8"]})
    chain = "6.6.6.6, 203.0.113.9, 10.1.2.3, 10.200.0.1"  # client-chosen, client, two proxies
    cases = (
        ("127.0.0.2", chain, "m-chain", "203.0.113.9"),
        ("127.0.0.1", "10.1.1.1, 10.2.2.2", "m-all-trusted", "10.1.1.1"),
        ("127.0.0.1", "", "m-none", "127.0.0.1"),
        ("127.0.0.9", chain, "m-untrusted-peer", "127.0.0.9"),
    )  # outside the /30
    for sender, forwarded, message_id, _ in cases:
        answer = peer(sender).post(
            gateway.url + "/v1/track",
            json={**TRACK, "messageId": message_id},
            headers={**basic(WRITE_KEY), "X-Forwarded-For": forwarded},
        )
        assert answer.status_code == 200
    assert stored_ips(gateway) == {message_id: ip for _, _, message_id, ip in cases}


def test_forwarded_https_is_believed_only_from_trusted_proxies(start) -> None:
    gateway = start(server={"trusted_proxies": ["127.0.0.2/32"]})
    https = {"X-Forwarded-Proto": "https"}
    settings = f"/v1/projects/{WRITE_KEY}/settings"
    proxy, stranger = peer("127.0.0.2"), peer("127.0.0.1")

    login = proxy.get(gateway.url + "/console/login", headers=https)
    assert "secure" in login.headers["Set-Cookie"].lower()
    segment = proxy.get(gateway.url + settings, headers=https).json()
    assert segment["integrations"]["Segment.io"]["protocol"] == "https"

    # 127.0.0.1 is not in trusted_proxies: its claim is ignored (gunicorn's default trusts it)
    login = stranger.get(gateway.url + "/console/login", headers=https)
    assert "secure" not in login.headers["Set-Cookie"].lower()
    segment = stranger.get(gateway.url + settings, headers=https).json()
    assert segment["integrations"]["Segment.io"]["protocol"] == "http"
