"""The configuration's shape: frozen dataclasses, one per table, and the Config that holds them.

Each settings table declares its keys, kinds and bounds through its fields (`at_least`, read by
`tables.shape_of`); `load.py` fills them from the file and the environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from adapters import DESTINATION_TYPES
from gateway import consent as consent_module
from gateway import source_limits
from gateway.config.identity import DEFAULT_SETTINGS as DEFAULT_IDENTITY
from gateway.config.identity import IdentitySettings
from gateway.config.limits import DestinationLimits
from gateway.config.tables import at_least, one_of
from gateway.filters.rules import NO_FILTERS, Filters
from gateway.plans import settings as plan_settings
from gateway.store.db import POOLERS
from gateway.transforms import config as transforms_config


class ConfigFileError(Exception):
    """The configuration cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Limits:
    """Input bounds (tracking-api.md §9, docs/design.md §7). Sizes are decompressed bytes."""

    # Defaults fit what every Segment and RudderStack mobile SDK builds (README "Limits: which
    # SDK needs what"): rudder-sdk-kotlin/-swift requests reach ~545 KB, RudderStack 1.x events
    # 64 KiB. 0 = no per-message cap (RudderStack mode).
    max_request_bytes: int = at_least(1, 1_048_576)
    max_message_bytes: int = 131_072
    max_batch_messages: int = at_least(1, 2_500)
    max_json_depth: int = at_least(1, 64)
    max_message_id_length: int = at_least(1, 100)
    strict_batches: bool = False  # True: one bad message rejects the whole request


@dataclass(frozen=True)
class ServerSettings:
    """How `gateway serve` runs gunicorn, and which peers may set X-Forwarded-For."""

    bind: str = "127.0.0.1:8080"
    workers: int = 0  # 0 = one per CPU core
    trusted_proxies: tuple[str, ...] = ()
    threads: int = at_least(1, 64)  # per process: a slow client holds a thread, not a process
    body_timeout_seconds: int = at_least(1, 10)  # a body not fully read by then is a 408
    header_timeout_seconds: int = at_least(1, 10)  # a request head not in by then is a 408
    # open connections one peer address may hold per worker process (trusted proxies exempt)
    max_connections_per_peer: int = at_least(1, 128)
    # what browsers are told to send to (scheme://host[:port][/prefix]); "" = the request's host
    public_url: str = ""
    # PEM files: with certfile set, gunicorn serves TLS itself on every listener (no proxy
    # needed); keyfile may be left out when certfile holds the key too. Relative paths are
    # relative to the config file's folder.
    certfile: str = ""
    keyfile: str = ""


@dataclass(frozen=True)
class RetrySettings:
    """When a failed delivery is tried again, and when it is given up (docs/design.md §2.5)."""

    base_delay_seconds: int = 10  # doubled after each failure…
    max_delay_seconds: int = 300  # …up to this cap, ±20 % jitter
    min_attempts: int = at_least(1, 3)  # give up only after this many attempts…
    retry_window_seconds: int = 3 * 3600  # …and once the first attempt is this old


@dataclass(frozen=True)
class WorkerSettings:
    """The delivery worker: how much it claims and how many sends run at once."""

    # threads sending at once, so one slow destination does not starve the others
    concurrency: int = at_least(1, 8)
    # deliveries claimed per round and destination (most per query: a claim costs about the
    # same for 200 rows as for 1,000, measured in bench/delivery.py)
    batch_size: int = at_least(1, 1000)
    # a claim not finished by then is taken over by another worker (0: at once; tests only)
    # short, renewed while held: a worker killed mid-claim stalls its users for this at most
    lease_seconds: int = 10
    poll_interval_ms: int = at_least(1, 250)  # sleep when nothing is due
    heartbeat_seconds: int = at_least(1, 5)  # liveness row for /health; 3 missed = gone


@dataclass(frozen=True)
class AdminSettings:
    """Where the admin surface (/admin, /console, /metrics) listens, and how guessing is slowed."""

    # "host:port" of a second listener that alone serves /admin, /console and /metrics (the
    # public one answers them 404); "" = everything on [server] bind
    bind: str = ""
    # failed admin-token checks (admin API, console sign-in, /metrics) per peer and window,
    # then 429 + Retry-After until the oldest failure leaves the window; per process
    max_failed_auth: int = at_least(1, 10)
    failed_auth_window_seconds: int = at_least(1, 60)
    # the older name of [metrics] require_token (docs/design.md §7); None = not set
    metrics_require_token: bool | None = None


@dataclass(frozen=True)
class MetricsSettings:
    """Whether /metrics needs the admin token."""

    # None = only when [server] bind is not loopback and there is no [admin] bind
    require_token: bool | None = None


@dataclass(frozen=True)
class ConsoleSettings:
    """Console sign-in sessions (gateway/console/sessions.py): idle ones end early."""

    idle_timeout_seconds: int = at_least(60, 30 * 60)  # no page or action for this long
    session_lifetime_seconds: int = at_least(60, 12 * 3600)  # a working day, busy or not


@dataclass(frozen=True)
class RetentionSettings:
    """How long rows are kept, in days (0 = forever); the worker prunes in small batches."""

    events_days: int = 30  # events (with their deliveries and attempts) by received_at…
    delivered_days: int = 7  # …delivered and skipped deliveries by their last update…
    dead_days: int = 30  # …dead deliveries (kept longer: someone may retry them)…
    attempts_days: int = 7  # …attempt rows of finished deliveries by started_at…
    rejections_days: int = 7  # …and the record of rejected messages (when the table exists)
    batch_size: int = at_least(1, 100)  # rows per delete: short transactions, ingest goes on
    max_busy_percent: int = at_least(1, 10)  # share of the time a backlog is pruned (≤ 100)
    interval_seconds: int = at_least(1, 60)  # pause once nothing is left to prune


@dataclass(frozen=True)
class Source:
    name: str
    write_key: str
    enabled: bool = True
    filters: Filters = NO_FILTERS  # what is never stored (applied before ingest writes)
    # rate_limit and allowed_origins (gateway/source_limits.py)
    guard: source_limits.SourceGuard = source_limits.NO_GUARD
    transformations: tuple[transforms_config.Transformation, ...] = ()  # gateway/transforms
    tracking_plan: plan_settings.SourcePlan | None = None  # gateway/plans/settings.py


@dataclass(frozen=True)
class Destination:
    name: str
    type: str
    sources: tuple[str, ...]
    enabled: bool = True
    endpoint: str | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    filters: Filters = NO_FILTERS  # what this destination never receives (gateway/filters/)
    # [destinations.limits], beside settings (gateway/config/limits.py)
    limits: DestinationLimits = field(default_factory=DestinationLimits)
    # consent rules: RudderStack's keys in settings, Segment's [destinations.consent]
    consent: consent_module.Rules = consent_module.NO_RULES
    transformations: tuple[transforms_config.Transformation, ...] = ()  # gateway/transforms

    @property
    def display_names(self) -> tuple[str, ...]:
        """Names a message's `integrations` object may use for this destination, the most
        specific (the configured name) first."""
        return (self.name, *DESTINATION_TYPES[self.type].display_names)


@dataclass(frozen=True)
class DatabaseSettings:
    """`[database]`: how the gateway reaches its database. `pooler = "pgbouncer"`: a pooler in
    transaction mode sits in front of PostgreSQL, so server-side prepared statements are off
    (`prepare_threshold=none` added to the URL unless it sets one; README "Behind PgBouncer")."""

    pooler: str = one_of(POOLERS, "none")


@dataclass(frozen=True)
class Config:
    database_url: str
    admin_token: str
    sources: tuple[Source, ...] = ()
    destinations: tuple[Destination, ...] = ()
    limits: Limits = field(default_factory=Limits)
    server: ServerSettings = field(default_factory=ServerSettings)
    retry: RetrySettings = field(default_factory=RetrySettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    console: ConsoleSettings = field(default_factory=ConsoleSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    identity: IdentitySettings = DEFAULT_IDENTITY  # [identity]: gateway/config/identity.py
    path: str | None = None
    tracking_plans: Mapping[str, Any] = field(default_factory=dict)  # name → compiled plan

    def source_by_write_key(self, write_key: str) -> Source | None:
        return self._sources_by_key.get(write_key)

    @property
    def _sources_by_key(self) -> dict[str, Source]:
        cached = self.__dict__.get("_keys")
        if cached is None:
            cached = {s.write_key: s for s in self.sources}
            object.__setattr__(self, "_keys", cached)
        return cached


# Optional tables of scalars, each overridable as GATEWAY_<TABLE>_<FIELD>.
TABLES: dict[str, type] = {"limits": Limits, "server": ServerSettings, "retry": RetrySettings,
                           "worker": WorkerSettings, "admin": AdminSettings,
                           "metrics": MetricsSettings, "retention": RetentionSettings,
                           "console": ConsoleSettings, "database": DatabaseSettings}
