"""What bounds one source (README "Sources"): a rate limit and the web origins it accepts.

    [[sources]]
    name = "web"
    write_key = "…"
    rate_limit = { events_per_second = 100, burst = 200 }
    allowed_origins = ["https://shop.example.com", "https://*.example.com"]

Browser write keys are public, so these are the only bounds on what anyone holding one may
send. The rate counts events (the messages of a request), is the source's across every HTTP
process on one database (gateway/http/source_guard.py), and `burst` (default: one second's
worth, at least 1) is how many may arrive at once. An origin pattern is `scheme://host[:port]`;
a `*` label stands for one or more whole labels at its position (`https://*.example.com` matches
`https://a.example.com` and `https://a.b.example.com`, not `https://example.com`); scheme and
port must match exactly (a default port, 80 for http and 443 for https, is the same as none).
Pure parsing and matching: loaded by config.py, nothing here touches Flask or the database.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from adapters.known import unknown_key

MAX_EVENTS_PER_SECOND = 1_000_000.0
MAX_BURST = 10_000_000
MAX_ORIGINS = 100
MAX_ORIGIN_LENGTH = 2048  # a longer Origin header matches nothing (and is never echoed whole)
DEFAULT_PORTS = {"http": "80", "https": "443"}
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*\Z")
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)\Z")
_IPV6 = re.compile(r"\[[0-9a-f:.]+\]\Z")
_PORT = re.compile(r"[0-9]{1,5}\Z")
_ANY_LABELS = r"[a-z0-9-]+(?:\.[a-z0-9-]+)*"


class SourceLimitsError(ValueError):
    """A bad `rate_limit` or `allowed_origins`: the message names the field and the rule."""


@dataclass(frozen=True)
class RateLimit:
    events_per_second: float
    burst: int

    def describe(self) -> str:
        return f"{self.events_per_second:g} events/s, burst {self.burst}"


@dataclass(frozen=True)
class OriginPattern:
    """One allowed origin: `text` as configured, matched on scheme, host labels and port."""

    text: str
    scheme: str
    host: re.Pattern[str]
    port: str | None

    def matches(self, origin: Origin) -> bool:
        return (origin.scheme == self.scheme and origin.port == self.port
                and self.host.fullmatch(origin.host) is not None)


@dataclass(frozen=True)
class Origin:
    """An `Origin` header taken apart (lower-case; a default port dropped)."""

    scheme: str
    host: str
    port: str | None


@dataclass(frozen=True)
class SourceGuard:
    """A source's bounds; the default bounds nothing."""

    rate_limit: RateLimit | None = None
    allowed_origins: tuple[OriginPattern, ...] = ()

    def origin_allowed(self, header: str | None) -> bool:
        """No `Origin` (a server SDK) or no `allowed_origins`: allowed; else one must match."""
        if header is None or not self.allowed_origins:
            return True
        origin = parse_origin(header)
        return origin is not None and any(p.matches(origin) for p in self.allowed_origins)

    def describe(self) -> str:
        """One line for `gateway check` and the console."""
        rate = f"rate limit {self.rate_limit.describe()}" if self.rate_limit else "no rate limit"
        origins = ("origins " + ", ".join(p.text for p in self.allowed_origins)
                   if self.allowed_origins else "any origin")
        return f"{rate}; {origins}"


NO_GUARD = SourceGuard()


def parse(item: dict[str, Any]) -> SourceGuard:
    """The `rate_limit` and `allowed_origins` of one `[[sources]]` table (both optional)."""
    if "rate_limit" not in item and "allowed_origins" not in item:
        return NO_GUARD
    return SourceGuard(parse_rate_limit(item.get("rate_limit")),
                       parse_origins(item.get("allowed_origins")))


def parse_rate_limit(raw: Any) -> RateLimit | None:
    """`{ events_per_second = 100, burst = 200 }` → RateLimit; None when absent."""
    if raw is None:
        return None
    where = "field 'rate_limit'"
    if not isinstance(raw, dict):
        raise SourceLimitsError(f"{where}: must be a table such as "
                                "{ events_per_second = 100, burst = 200 }")
    problem = unknown_key(raw, ["events_per_second", "burst"])
    if problem:
        raise SourceLimitsError(f"{where}: {problem}")
    if "events_per_second" not in raw:
        raise SourceLimitsError(f"{where}: 'events_per_second' is required")
    rate = raw["events_per_second"]
    if (not isinstance(rate, int | float) or isinstance(rate, bool) or not math.isfinite(rate)
            or not 0 < rate <= MAX_EVENTS_PER_SECOND):
        raise SourceLimitsError(f"{where}: 'events_per_second' must be a number above 0 and at "
                                f"most {MAX_EVENTS_PER_SECOND:g}, not {rate!r}")
    burst = raw.get("burst", max(1, math.ceil(rate)))
    if not isinstance(burst, int) or isinstance(burst, bool) or not 1 <= burst <= MAX_BURST:
        raise SourceLimitsError(f"{where}: 'burst' must be a whole number from 1 to "
                                f"{MAX_BURST}, not {burst!r}")
    return RateLimit(float(rate), burst)


def parse_origins(raw: Any) -> tuple[OriginPattern, ...]:
    """`["https://shop.example.com", "https://*.example.com"]` → patterns; () when absent."""
    if raw is None:
        return ()
    where = "field 'allowed_origins'"
    if not isinstance(raw, list) or not raw:
        raise SourceLimitsError(f"{where}: must be a non-empty array of origins such as "
                                '["https://shop.example.com", "https://*.example.com"]')
    if len(raw) > MAX_ORIGINS:
        raise SourceLimitsError(f"{where}: at most {MAX_ORIGINS} origins, not {len(raw)}")
    patterns = []
    for index, text in enumerate(raw, 1):
        if not isinstance(text, str):
            raise SourceLimitsError(f"{where}: entry {index} must be a string, not {text!r}")
        try:
            patterns.append(parse_pattern(text))
        except SourceLimitsError as exc:
            raise SourceLimitsError(f"{where}: entry {index} {text!r}: {exc}") from None
    return tuple(patterns)


def parse_pattern(text: str) -> OriginPattern:
    """`scheme://host[:port]`, `*` only as whole labels and never the last one."""
    scheme, host, port = _split(text, pattern=True)
    labels = host.split(".")
    if labels[-1] == "*":
        raise SourceLimitsError("the last label must be a name, not '*' (it would match "
                                "every site)")
    parts = []
    for label in labels:
        if label == "*":
            parts.append(_ANY_LABELS)
        elif "*" in label:
            raise SourceLimitsError(f"'*' stands for whole labels only, not part of {label!r}")
        elif not _IPV6.match(host) and not _LABEL.match(label):
            raise SourceLimitsError(f"{label!r} is not a host name label (letters, digits, "
                                    "hyphens; internationalised names in punycode, xn--…)")
        else:
            parts.append(re.escape(label))
    return OriginPattern(text, scheme, re.compile(r"\.".join(parts)), port)


def parse_origin(header: str) -> Origin | None:
    """An `Origin` header as sent (`null`, a path, junk: None, which no pattern matches)."""
    if len(header) > MAX_ORIGIN_LENGTH:
        return None
    try:
        scheme, host, port = _split(header.strip(), pattern=False)
    except SourceLimitsError:
        return None
    return Origin(scheme, host, port)


def _split(text: str, pattern: bool) -> tuple[str, str, str | None]:
    """(scheme, host, port or None), lower-case, a default port dropped."""
    scheme, sep, rest = text.lower().partition("://")
    if not sep or not _SCHEME.match(scheme):
        raise SourceLimitsError("must be scheme://host[:port], e.g. https://shop.example.com")
    if not rest or any(c in rest for c in "/?#@ \\"):
        raise SourceLimitsError("an origin is scheme://host[:port] only: no path (not even a "
                                "trailing '/'), query, user or spaces")
    host, port = rest, None
    if not rest.endswith("]") and ":" in rest:
        host, _, port = rest.rpartition(":")
        if not _PORT.match(port) or not 0 < int(port) < 65536:
            raise SourceLimitsError(f"the port must be a number from 1 to 65535, not {port!r}")
        port = str(int(port))
    if not host or (not pattern and "*" in host) or (":" in host and not _IPV6.match(host)):
        raise SourceLimitsError(f"{host!r} is not a host")
    if DEFAULT_PORTS.get(scheme) == port:
        port = None
    return scheme, host, port
