"""Failed admin-token checks, counted per peer, so the token cannot be guessed at line rate.

After `[admin] max_failed_auth` failures within `failed_auth_window_seconds` from one peer, every
admin API, console sign-in and /metrics request from it is answered 429 with `Retry-After`
(the time until its oldest failure leaves the window) before the token is even compared, so
guesses made while blocked tell nothing. Successful checks do not count. Each failure is one
log line naming the peer and the route (escaped), never the token.

The count is per process (each gunicorn worker keeps its own): with N workers a peer gets at
most N times the limit. Memory is bounded: at most `MAX_PEERS` peers are remembered, the one
that failed longest ago forgotten first. IPv6 peers are counted per /64, the block one host
usually holds, so a client cannot dodge the limit by rotating through its own addresses.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from flask import current_app, request

from gateway.http import context, forwarded
from gateway.http.errors import ApiError
from gateway.http.peers import parse_address

log = logging.getLogger("gateway.auth")

MAX_PEERS = 10_000  # peers remembered per process (each holds at most `limit` timestamps)
MAX_LOGGED = 200  # characters of a peer or route written to the log


class AuthThrottle:
    """A sliding window of failure times per peer; thread-safe (gthread workers share it)."""

    def __init__(
        self,
        limit: int,
        window: float,
        max_peers: int = MAX_PEERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_peers = max_peers
        self.clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, peer: str) -> int | None:
        """Whole seconds until `peer` may try again, or None when it is not blocked."""
        key = peer_key(peer)
        with self._lock:
            times = self._failures.get(key)
            if times is None:
                return None
            return self._blocked_for(key, times, self.clock())

    def failed(self, peer: str) -> int | None:
        """Count a failure; the seconds `peer` is now blocked for, or None while under the
        limit."""
        key = peer_key(peer)
        now = self.clock()
        with self._lock:
            times = self._failures.pop(key, None) or deque(maxlen=self.limit)
            times.append(now)
            self._failures[key] = times  # the most recent failure last: evicted last
            while len(self._failures) > self.max_peers:
                self._failures.popitem(last=False)
            return self._blocked_for(key, times, now)

    def _blocked_for(self, key: str, times: deque[float], now: float) -> int | None:
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        if len(times) < self.limit:
            return None
        return max(1, math.ceil(times[0] + self.window - now))

    def __len__(self) -> int:
        return len(self._failures)


def peer_key(peer: str) -> str:
    """The address counted: IPv4 as is, IPv6 as its /64; anything else as the text."""
    address = parse_address(peer)  # IPv4-mapped IPv6 is its IPv4 address
    if address is None:
        return peer
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def escape(text: str) -> str:
    """Log-safe: no line breaks or control characters a client could use to forge lines."""
    text = text[:MAX_LOGGED]
    return text.encode("unicode_escape").decode("ascii").replace('"', '\\"')


def init_app(app) -> None:
    admin = context.config(app).admin
    app.extensions["gateway.auth_throttle"] = AuthThrottle(
        admin.max_failed_auth, admin.failed_auth_window_seconds
    )


def _throttle() -> AuthThrottle:
    return current_app.extensions["gateway.auth_throttle"]


def _peer() -> str:
    return forwarded.request_client(context.config()) or "unknown"


def refuse_if_blocked() -> None:
    """Before comparing a token: 429 with Retry-After while this peer is blocked."""
    wait = _throttle().retry_after(_peer())
    if wait is not None:
        error = ApiError(
            429,
            "too_many_failed_authentications",
            f"too many failed authentications from this address; retry in {wait} s",
        )
        error.headers["Retry-After"] = str(wait)
        raise error


def failed() -> None:
    """After a wrong or missing token: count it and log one line (peer, route; no token)."""
    peer = _peer()
    blocked_for = _throttle().failed(peer)
    route = f"{request.method} {request.path}"
    if blocked_for is None:
        log.warning(
            'admin authentication failed: peer="%s" route="%s"', escape(peer), escape(route)
        )
    else:
        log.warning(
            'admin authentication failed: peer="%s" route="%s"; blocked for %d s',
            escape(peer),
            escape(route),
            blocked_for,
        )
