"""The outgoing HTTP client: one pooled `requests.Session`, timeouts, the `endpoint` override,
and redaction, so no destination secret reaches a log line or an attempt record."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
import requests
from requests.adapters import HTTPAdapter

from adapters.base import HttpRequest, Lookup, LookupResponse, Retryable
from gateway.delivery.retry import parse_retry_after

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
EXCERPT_BYTES = 1024
USER_AGENT = "event-gateway/0.1"


@dataclass(frozen=True)
class Sent:
    """What came back from one request (status None: no HTTP answer at all)."""

    status: int | None
    text: str
    duration_ms: int
    retry_after: str | None = None
    error_class: str | None = None
    rate_remaining: int | None = None  # x-ratelimit-remaining, when the destination sends it
    rate_reset: float | None = None  # seconds until its window resets (x-ratelimit-reset)


class HttpClient:
    def __init__(self, pool_size: int = 32) -> None:
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def send(self, request: HttpRequest, endpoint: str | None = None) -> Sent:
        """Send one request; network failures come back as a status-less `Sent`."""
        request = request.with_base(endpoint)
        headers = {"User-Agent": USER_AGENT, **request.headers}
        body = request.data
        if body is None and request.json is not None:
            body = orjson.dumps(request.json)
            headers.setdefault("Content-Type", "application/json")
        started = time.monotonic()
        try:
            response = self.session.request(
                request.method, request.url, headers=headers, data=body if body is not None
                else request.form, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT), allow_redirects=False)
        except requests.RequestException as exc:
            return Sent(None, str(exc), _ms(started), error_class=exc.__class__.__name__)
        headers = response.headers
        remaining, reset = rate_headers(headers.get("x-ratelimit-remaining"),
                                        headers.get("x-ratelimit-reset"))
        return Sent(response.status_code, response.text, _ms(started),
                    headers.get("Retry-After"), None, remaining, reset)

    def lookup(self, endpoint: str | None = None) -> Lookup:
        """The `lookup` adapters get in production: the same client, the same override."""
        def run(request: HttpRequest) -> LookupResponse:
            sent = self.send(request, endpoint)
            if sent.status is None:
                raise Retryable(f"lookup failed: {sent.error_class}", 503)
            try:
                body = orjson.loads(sent.text) if sent.text else None
            except orjson.JSONDecodeError:
                body = None
            return LookupResponse(sent.status, body, sent.text)
        return run

    def close(self) -> None:
        self.session.close()


def rate_headers(remaining: str | None, reset: str | None) -> tuple[int | None, float | None]:
    """`x-ratelimit-remaining` and `x-ratelimit-reset` (delta seconds, or a Unix time when it is
    that large) → (requests left, seconds until the window resets); None where unusable."""
    left = int(remaining) if remaining and remaining.strip().isascii() and \
        remaining.strip().isdigit() else None
    seconds = None
    if reset:
        try:
            value = float(reset.strip())
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 0:
            seconds = value - time.time() if value > 1e9 else value
            seconds = max(0.0, seconds)
    return left, seconds


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret value (and its common encodings) in a text with ***."""
    for value in secrets:
        if value and len(value) >= 3:
            text = text.replace(value, "***")
    return text


def excerpt(text: str, secrets: Iterable[str]) -> str:
    """A bounded, redacted excerpt of a response body for the attempt record."""
    return redact(text[:EXCERPT_BYTES], secrets)


def retry_after_seconds(sent: Sent) -> float | None:
    return parse_retry_after(sent.retry_after, datetime.now(UTC))
