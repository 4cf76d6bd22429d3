"""The failed-authentication throttle on its own: a sliding window per peer, bounded memory,
IPv6 counted per /64, safe under threads; and its log line cannot be forged by a path."""

from __future__ import annotations

import logging
import threading

import pytest

from gateway import create_app
from gateway.config import from_mapping
from gateway.http.auth_throttle import AuthThrottle, escape, peer_key
from tests.conftest import base_config


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_blocked_after_the_limit_until_the_oldest_failure_leaves_the_window() -> None:
    clock = Clock()
    throttle = AuthThrottle(limit=3, window=60, clock=clock)
    assert throttle.failed("10.0.0.1") is None
    clock.now += 10
    assert throttle.failed("10.0.0.1") is None
    assert throttle.retry_after("10.0.0.1") is None
    clock.now += 5
    assert throttle.failed("10.0.0.1") == 45  # the first failure leaves the window in 45 s
    assert throttle.retry_after("10.0.0.1") == 45
    assert throttle.retry_after("10.0.0.2") is None  # per peer
    clock.now += 44.5
    assert throttle.retry_after("10.0.0.1") == 1  # rounded up, never 0
    clock.now += 0.5
    assert throttle.retry_after("10.0.0.1") is None  # two failures left in the window
    assert throttle.failed("10.0.0.1") == 10  # …so one more blocks until the second leaves
    clock.now += 60
    assert throttle.retry_after("10.0.0.1") is None
    assert len(throttle) == 0  # a peer whose failures all expired is forgotten


def test_memory_is_bounded_the_longest_quiet_peer_forgotten_first() -> None:
    throttle = AuthThrottle(limit=2, window=60, max_peers=100, clock=Clock())
    throttle.failed("192.0.2.1")
    for n in range(1000):
        throttle.failed(f"10.0.{n // 250}.{n % 250}")
    assert len(throttle) == 100
    throttle.failed("10.0.3.249")
    assert throttle.failed("10.0.3.249") is not None  # recent peers are still counted


def test_ipv6_peers_count_per_64_and_mapped_ipv4_as_ipv4() -> None:
    assert (
        peer_key("2001:db8:1:2:aaaa::1") == peer_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    )
    assert peer_key("2001:db8:1:3::1") != peer_key("2001:db8:1:2::1")
    assert peer_key("::ffff:192.0.2.7") == "192.0.2.7"
    throttle = AuthThrottle(limit=2, window=60, clock=Clock())
    throttle.failed("2001:db8::1")
    assert throttle.failed("2001:db8::2") is not None


def test_counts_are_exact_under_threads() -> None:
    throttle = AuthThrottle(limit=10_000, window=60)
    threads = [
        threading.Thread(target=lambda: [throttle.failed("10.0.0.1") for _ in range(1000)])
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for _ in range(1999):
        throttle.failed("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") is None  # 9,999: none lost, none counted twice
    assert throttle.failed("10.0.0.1") is not None  # the 10,000th blocks


def test_escape_keeps_a_log_line_one_line() -> None:
    assert escape('GET /admin/x\nFAKE "line"\x1b[31m') == 'GET /admin/x\\nFAKE \\"line\\"\\x1b[31m'
    assert len(escape("a" * 5000)) == 200


@pytest.mark.parametrize("path", ["/admin/v1/events", "/metrics"])
def test_the_log_line_names_peer_and_route_never_the_token(
    database_url: str, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    app = create_app(from_mapping(base_config(database_url, metrics={"require_token": True})))
    with caplog.at_level(logging.WARNING, logger="gateway.auth"):
        answer = app.test_client().get(path, headers={"Authorization": "Bearer s3cr3t-guess"})
    app.extensions["gateway.engine"].dispose()
    assert answer.status_code == 401
    [record] = [r for r in caplog.records if r.name == "gateway.auth"]
    line = record.getMessage()
    assert "\n" not in line and "s3cr3t-guess" not in line
    assert line.startswith('admin authentication failed: peer="127.0.0.1" route="GET /')


def test_with_an_admin_bind_a_server_that_names_no_socket_gets_no_admin_surface(
    database_url: str,
) -> None:
    """Fail closed: the Flask test client gives no gunicorn socket, so the listener is unknown."""
    app = create_app(from_mapping(base_config(database_url, admin={"bind": "127.0.0.1:8081"})))
    client = app.test_client()
    auth = {"Authorization": "Bearer test-admin-token"}
    assert client.get("/admin/v1/events", headers=auth).status_code == 404
    assert client.get("/console/login").status_code == 404
    assert client.get("/metrics", headers=auth).status_code == 404
    assert client.get("/health").status_code == 200
    app.extensions["gateway.engine"].dispose()
