"""The outgoing HTTP client: one pooled urllib3 manager, timeouts, a bounded answer, the
`endpoint` override, and redaction, so no destination secret reaches a log line or an attempt
record."""

from __future__ import annotations

import base64
import functools
import html
import json
import math
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus

import orjson
import urllib3

from adapters.base import HttpRequest, Lookup, LookupResponse, Retryable

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
EXCERPT_BYTES = 1024
MAX_RESPONSE_BYTES = 1 << 20  # a destination's answer is read up to 1 MiB
USER_AGENT = "event-gateway/0.1"
REDACTED = "***"
MIN_SECRET = 3
REDACTION_MARGIN = 4096  # > any secret form: a secret that starts inside the excerpt ends here
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")


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


class NoAnswer(Retryable):
    """A lookup that got no HTTP answer (connection failed, timed out). It carries the status-less
    `Sent`, so a lane's circuit breaker can count it as the connection failure it is, while an
    adapter still sees a plain `Retryable`."""

    def __init__(self, sent: Sent) -> None:
        super().__init__(f"lookup failed: {sent.error_class}", 503)
        self.sent = sent


class HttpClient:
    """A pooled urllib3 client. Measured with `bench/delivery.py`: `requests` spent ~0.3 ms per
    request re-reading the environment's proxy settings and merging its session; urllib3 alone
    costs ~0.1 ms. The proxy environment (HTTP(S)_PROXY, NO_PROXY) is read once, here."""

    def __init__(self, pool_size: int = 32) -> None:
        self.pool_size = pool_size
        self.timeout = urllib3.Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT)
        self.direct = urllib3.PoolManager(num_pools=64, maxsize=pool_size, block=False,
                                          retries=False, timeout=self.timeout)
        self.proxies = {scheme: url for scheme, url in urllib.request.getproxies().items()
                        if scheme in ("http", "https")}
        self._proxy_managers: dict[str, urllib3.ProxyManager] = {}
        self._bypass: dict[str, bool] = {}

    def send(self, request: HttpRequest, endpoint: str | None = None) -> Sent:
        """Send one request; network failures come back as a status-less `Sent`."""
        request = request.with_base(endpoint)
        headers = {"User-Agent": USER_AGENT, **request.headers}
        body = request.data
        if body is None and request.json is not None:
            body = orjson.dumps(request.json)
            headers.setdefault("Content-Type", "application/json")
        elif body is None and request.form is not None:
            body = urllib.parse.urlencode(request.form).encode()
            headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        started = time.monotonic()
        try:
            response = self._manager(request.url).urlopen(
                request.method, request.url, body=body, headers=headers, redirect=False,
                retries=False, timeout=self.timeout, preload_content=False)
            whole = False
            try:
                raw = response.read(MAX_RESPONSE_BYTES)
                whole = not response.read(1)
            finally:  # an answer past the bound: the connection is dropped, not drained
                response.release_conn() if whole else response.close()
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            return Sent(None, str(exc), _ms(started), error_class=_error_class(exc))
        headers_in = response.headers
        remaining, reset = rate_headers(headers_in.get("x-ratelimit-remaining"),
                                        headers_in.get("x-ratelimit-reset"))
        return Sent(response.status, raw.decode("utf-8", errors="replace"), _ms(started),
                    headers_in.get("Retry-After"), None, remaining, reset)

    def _manager(self, url: str) -> urllib3.PoolManager:
        """The direct pool, or a proxy's when the environment (read once) asks for one."""
        if not self.proxies:
            return self.direct
        parts = urllib.parse.urlsplit(url)
        proxy = self.proxies.get(parts.scheme)
        host = parts.hostname or ""
        if proxy is None:
            return self.direct
        bypass = self._bypass.get(host)
        if bypass is None:
            bypass = self._bypass[host] = bool(urllib.request.proxy_bypass_environment(host))
        if bypass:
            return self.direct
        manager = self._proxy_managers.get(proxy)
        if manager is None:
            manager = self._proxy_managers[proxy] = urllib3.ProxyManager(
                proxy, num_pools=64, maxsize=self.pool_size, retries=False, timeout=self.timeout)
        return manager

    def lookup(self, endpoint: str | None = None) -> Lookup:
        """The `lookup` adapters get in production: the same client, the same override."""
        def run(request: HttpRequest) -> LookupResponse:
            sent = self.send(request, endpoint)
            if sent.status is None:
                raise NoAnswer(sent)
            try:
                body = orjson.loads(sent.text) if sent.text else None
            except orjson.JSONDecodeError:
                body = None
            return LookupResponse(sent.status, body, sent.text, sent.rate_remaining,
                                  sent.rate_reset)
        return run

    def close(self) -> None:
        self.direct.clear()
        for manager in self._proxy_managers.values():
            manager.clear()


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


def _error_class(exc: BaseException) -> str:
    """Stable names for "no answer": the circuit breaker and the attempt records use them."""
    if isinstance(exc, urllib3.exceptions.NewConnectionError):  # (a ConnectTimeoutError too)
        return "ConnectionError"
    if isinstance(exc, urllib3.exceptions.ConnectTimeoutError):
        return "ConnectTimeout"
    if isinstance(exc, urllib3.exceptions.ReadTimeoutError | TimeoutError):
        return "ReadTimeout"
    if isinstance(exc, urllib3.exceptions.ProtocolError | ConnectionError):
        return "ConnectionError"
    return exc.__class__.__name__


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def secret_values(settings: Mapping[str, Any], names: Iterable[str]) -> tuple[str, ...]:
    """The values `redact` must hide for one destination: each secret setting, and each
    `value:secret` pair with the destination's other settings, the Basic-auth forms an adapter
    may send (Customer.io's `siteID:apiKey`; the webhook's `apiKey:` is derived from the secret
    alone). A secret setting that is a table (the webhook's `headers`) hides each value."""
    secrets = [str(one) for k, v in settings.items() if k in names and v
               for one in (v.values() if isinstance(v, Mapping) else (v,)) if one]
    others = [str(v) for v in settings.values()
              if isinstance(v, str | int) and not isinstance(v, bool) and str(v)]
    pairs = [f"{other}:{secret}" for secret in secrets for other in others if other != secret]
    return tuple(dict.fromkeys(secrets + pairs))


def redact(text: str, secrets: Iterable[str], shortest: int = MIN_SECRET) -> str:
    """Replace every secret value in a text with ***, in every form a destination may echo it:
    as sent, URL-quoted (`quote`, `quote_plus`), JSON- or HTML-escaped, base64 (alone or in a
    Basic `user:secret` pair, padded or not), and any base64 run with the secret inside it.
    Values shorter than `shortest` are left alone (they would match everywhere)."""
    values = tuple(v for v in secrets if v and len(v) >= shortest)
    if not values or not text:
        return text
    forms, cores = _forms(values)
    if any(core in text for core in cores):  # first: the whole run goes, not a part of it
        text = _BASE64_RUN.sub(
            lambda run: REDACTED if any(c in run.group(0) for c in cores) else run.group(0), text)
    for form in forms:
        if form in text:
            text = text.replace(form, REDACTED)
    return text


def excerpt(text: str, secrets: Iterable[str]) -> str:
    """A bounded, redacted excerpt of a response body for the attempt record: redacted before
    it is cut, so a secret the cut would split is not half shown."""
    return redact(redaction_window(text), secrets)[:EXCERPT_BYTES]


def redaction_window(text: str) -> str:
    """The part of a text an excerpt or a reason can show, with room for a secret's longest
    form to finish past the cut (what lies beyond is never shown)."""
    return text[:EXCERPT_BYTES + REDACTION_MARGIN]


@functools.lru_cache(maxsize=256)
def _forms(values: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Every encoded form of the values, longest first (so a form containing another goes
    whole), and their base64 cores. Cached: a destination's secrets are the same tuple for
    every attempt."""
    bases: set[str] = set()
    cores: set[str] = set()
    for value in values:
        bases.add(value)
        for raw in (value, f"{value}:", f":{value}"):
            for encode in (base64.b64encode, base64.urlsafe_b64encode):
                encoded = encode(raw.encode()).decode()
                bases.update((encoded, encoded.rstrip("=")))
        cores.update(_base64_cores(value.encode()))
    forms: set[str] = set()
    for base in bases:
        forms.update((base, quote(base, safe=""), quote(base), quote_plus(base),
                      json.dumps(base)[1:-1], json.dumps(base, ensure_ascii=False)[1:-1],
                      html.escape(base)))
    forms.update([form.replace("/", "\\/") for form in forms])  # JSON may escape the slash
    return tuple(sorted((f for f in forms if f), key=len, reverse=True)), tuple(cores)


def _base64_cores(raw: bytes) -> list[str]:
    """What base64 of any text holding `raw` contains, whatever surrounds it: for each of the
    three alignments, the characters of the groups made of `raw`'s bytes only (standard and
    URL-safe alphabets). Too short a core (a short secret) would match at random: the explicit
    forms cover those."""
    cores = []
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw).decode()
        core = encoded[4 if offset else 0:(offset + len(raw)) // 3 * 4]
        if len(core) >= 8:
            cores += [core, core.translate(_URLSAFE)]
    return cores


_URLSAFE = str.maketrans("+/", "-_")
