"""Configuration: one TOML file (+ ``GATEWAY_*`` environment overrides) → frozen dataclasses.

The file format is a contract (docs/design.md §4): outside tools write it, so every mistake in
it must stop start-up with one message that names the file, the table and the field.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import re
import secrets
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters import DESTINATION_TYPES
from adapters.known import unknown_key
from gateway import consent as consent_module
from gateway import filters as filters_module
from gateway import source_limits
from gateway.destination_limits import DestinationLimits, LimitsError, parse_limits
from gateway.filters import NO_FILTERS, Filters
from gateway.http.peers import parse_network
from gateway.plans import settings as plan_settings
from gateway.store.db import DatabaseProblem, sqlite_file

DEFAULT_CONFIG_PATH = "gateway.toml"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


class ConfigFileError(Exception):
    """The configuration cannot be used; the message says where and why."""


def at_least(minimum: int, default: int) -> Any:
    """A whole-number field that is meaningless below `minimum` (checked at load)."""
    return field(default=default, metadata={"min": minimum})


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
    tracking_plan: plan_settings.SourcePlan | None = None  # gateway/plans/settings.py


@dataclass(frozen=True)
class Destination:
    name: str
    type: str
    sources: tuple[str, ...]
    enabled: bool = True
    endpoint: str | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    filters: Filters = NO_FILTERS  # what this destination never receives (gateway/filters.py)
    # [destinations.limits], beside settings (gateway/destination_limits.py)
    limits: DestinationLimits = field(default_factory=DestinationLimits)
    # consent rules: RudderStack's keys in settings, Segment's [destinations.consent]
    consent: consent_module.Rules = consent_module.NO_RULES

    @property
    def display_names(self) -> tuple[str, ...]:
        """Names a message's `integrations` object may use for this destination, the most
        specific (the configured name) first."""
        return (self.name, *DESTINATION_TYPES[self.type].display_names)


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
                           "console": ConsoleSettings}


def resolve_path(path: str | os.PathLike | None = None) -> Path:
    """`--config`, else `$GATEWAY_CONFIG`, else ./gateway.toml (docs/design.md §4)."""
    return Path(path or os.environ.get("GATEWAY_CONFIG") or DEFAULT_CONFIG_PATH)


def load(path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None,
         check_settings: bool = True, check_admin_token: bool = True) -> Config:
    """Read, override from the environment, and validate the config file. A relative SQLite
    path in the file is relative to the file's folder, so any working directory finds it."""
    config_path = resolve_path(path)
    raw = read_config(config_path)
    return from_mapping(raw, str(config_path), os.environ if env is None else env,
                        base_dir=config_path.parent.resolve(), check_settings=check_settings,
                        check_admin_token=check_admin_token)


def read_config(config_path: Path) -> dict[str, Any]:
    """The parsed file, or a ConfigFileError saying in one line why it cannot be read."""
    try:
        return tomllib.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigFileError(f"{config_path}: file not found") from None
    except IsADirectoryError:
        raise ConfigFileError(f"{config_path}: is a folder; --config names a TOML file") from None
    except OSError as exc:
        raise ConfigFileError(f"{config_path}: cannot read it: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigFileError(f"{config_path}: not valid TOML: {exc}") from None


def from_mapping(raw: Mapping[str, Any], where: str = "<config>",
                 env: Mapping[str, str] | None = None, base_dir: Path | None = None,
                 check_settings: bool = True, check_admin_token: bool = True) -> Config:
    """Build a Config from parsed TOML (tests use this directly). `base_dir` anchors a relative
    SQLite path in `raw`; `$GATEWAY_DATABASE_URL` stays relative to the working directory,
    as a shell user expects. `check_settings=False` and `check_admin_token=False` leave
    destination settings and the admin token's strength to the caller (`gateway check` reports
    each on its own line)."""
    raw = dict(raw)
    if base_dir is not None and isinstance(raw.get("database_url"), str):
        raw["database_url"] = anchor_sqlite_path(raw["database_url"], base_dir)
    raw = _apply_env(raw, env or {})
    known = {"database_url", "admin_token", "sources", "destinations", "tracking_plans",
             *TABLES}
    _reject_unknown(raw, known, where, "top level")
    database_url = _required_str(raw, "database_url", where, "top level")
    admin_token = _required_str(raw, "admin_token", where, "top level")
    if check_admin_token:
        problem = admin_token_problem(admin_token)
        if problem:
            raise ConfigFileError(f"{where}: {describe_admin_token(env or {})}: {problem}")
    sources = _load_sources(raw.get("sources", []), where)
    sources, plans = plan_settings.attach(raw, sources, where, base_dir)
    destinations = _load_destinations(raw.get("destinations", []), sources, where,
                                      check_settings)
    tables = {name: _load_table(cls, raw.get(name, {}), where, f"[{name}]")
              for name, cls in TABLES.items()}
    tables["server"] = dataclasses.replace(
        tables["server"], bind=_normal_bind(tables["server"].bind, where),
        public_url=_normal_public_url(tables["server"].public_url, where),
        trusted_proxies=_normal_proxies(tables["server"].trusted_proxies, where))
    tables["server"] = _checked_tls(tables["server"], base_dir, where)
    tables["admin"] = _checked_admin(tables["admin"], tables["server"].bind, where)
    tables["metrics"] = _checked_metrics(tables["metrics"], tables["admin"], where)
    return Config(database_url=database_url, admin_token=admin_token, sources=sources,
                  destinations=destinations, **tables, path=where, tracking_plans=plans)


# The admin token guards the admin API and the console: long, random, never an example's.
MIN_ADMIN_TOKEN = 32
MIN_ADMIN_TOKEN_VARIETY = 8  # different characters (32 hex digits always have more)
# Words of example and placeholder tokens, compared lower-case without punctuation.
PLACEHOLDER_WORDS = ("changeme", "changethis", "replaceme", "replacethis", "placeholder",
                     "yourtoken", "yoursecret", "youradmintoken", "example", "password",
                     "xxxxxxxx", "12345678", "secrettoken")
TOKEN_ADVICE = "generate one: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"


def admin_token_problem(token: str) -> str | None:
    """Why this admin token must not be used, or None. Anyone who guesses it reads every event
    and replays them anywhere, so short, repetitive and placeholder tokens are refused; the
    answer never quotes the token, not even a part of it."""
    if len(token) < MIN_ADMIN_TOKEN:
        return f"too short ({len(token)} characters, at least {MIN_ADMIN_TOKEN}): {TOKEN_ADVICE}"
    squashed = re.sub(r"[^a-z0-9]", "", token.lower())
    if any(word in squashed for word in PLACEHOLDER_WORDS):
        return f"looks like a placeholder from an example: {TOKEN_ADVICE}"
    if len(set(token)) < MIN_ADMIN_TOKEN_VARIETY:
        return (f"too repetitive (fewer than {MIN_ADMIN_TOKEN_VARIETY} different characters): "
                f"{TOKEN_ADVICE}")
    return None


def describe_admin_token(env: Mapping[str, str]) -> str:
    """Where the admin token came from, for a message about it."""
    if env.get("GATEWAY_ADMIN_TOKEN"):
        return "top level: field 'admin_token' (from $GATEWAY_ADMIN_TOKEN)"
    return "top level: field 'admin_token'"


def anchor_sqlite_path(url: str, base_dir: Path) -> str:
    """`sqlite:///gateway.db` read from /etc/gw/gateway.toml → `sqlite:////etc/gw/gateway.db`;
    absolute paths, `:memory:` and URLs we cannot parse (reported later) are left alone."""
    try:
        path = sqlite_file(url)
    except DatabaseProblem:
        return url
    if path is None or path.is_absolute():
        return url
    return "sqlite:///" + str(base_dir / path) + url.partition("?")[1] + url.partition("?")[2]


def _checked_tls(server: ServerSettings, base_dir: Path | None,
                 where: str) -> ServerSettings:
    """certfile/keyfile anchored like a SQLite path (the file's folder, not the working
    directory); a keyfile alone is a mistake. Whether the files load is `gateway serve`'s and
    `gateway check`'s business (`gateway/http/tls.py`)."""
    if server.keyfile and not server.certfile:
        raise ConfigFileError(f"{where}: [server]: field 'keyfile': set, but 'certfile' is not "
                          "(TLS needs the certificate; the key alone serves nothing)")

    def anchored(path: str) -> str:
        if not path or base_dir is None or Path(path).is_absolute():
            return path
        return str(base_dir / path)

    return dataclasses.replace(server, certfile=anchored(server.certfile),
                               keyfile=anchored(server.keyfile))


def parse_bind(text: str) -> tuple[str, int]:
    """`host:port`, `host` (port 8080), `:port` (host 127.0.0.1) or `[v6]:port` → (host, port).
    Raises ValueError with a message fit for the user."""
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r}: expected [address]:port")
        port_text = rest[1:] if rest else None
    elif text.count(":") > 1:
        raise ValueError(f"{text!r}: write an IPv6 address as [address]:port")
    else:
        host, colon, port_text = text.partition(":")
        port_text = port_text if colon else None
    port = DEFAULT_PORT if port_text is None else _port(port_text, text)
    return host or DEFAULT_HOST, port


def _port(port_text: str, text: str) -> int:
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    return int(port_text)


def format_bind(host: str, port: int) -> str:
    """The `host:port` gunicorn takes (IPv6 in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _normal_bind(bind: str, where: str, table: str = "[server]") -> str:
    """[server] bind as gunicorn takes it (`localhost` → `localhost:8080`), or a ConfigFileError."""
    try:
        return format_bind(*parse_bind(bind))
    except ValueError as exc:
        raise ConfigFileError(f"{where}: {table}: field 'bind': {exc}") from None


def _normal_proxies(entries: tuple[str, ...], where: str) -> tuple[str, ...]:
    """[server] trusted_proxies checked and written as gunicorn's forwarded_allow_ips takes
    them (`10.1.2.3/8` → `10.0.0.0/8`; a single address stays as it is), or a ConfigFileError."""
    normal = []
    for entry in entries:
        try:
            network = parse_network(entry)
        except ValueError as exc:
            raise ConfigFileError(f"{where}: [server]: field 'trusted_proxies': {exc}") from None
        single = network.num_addresses == 1 and "/" not in entry
        normal.append(str(network.network_address) if single else str(network))
    return tuple(normal)


def _checked_admin(admin: AdminSettings, public_bind: str, where: str) -> AdminSettings:
    """[admin] bind normalised; it must be a listener of its own, not the public one."""
    if not admin.bind.strip():
        return dataclasses.replace(admin, bind="")
    bind = _normal_bind(admin.bind, where, "[admin]")
    if parse_bind(bind) == parse_bind(public_bind):
        raise ConfigFileError(f"{where}: [admin]: field 'bind': {bind!r} is also [server] bind; "
                          "the admin listener needs an address or port of its own")
    return dataclasses.replace(admin, bind=bind)


def _checked_metrics(metrics: MetricsSettings, admin: AdminSettings,
                     where: str) -> MetricsSettings:
    """[metrics] require_token, or the older [admin] metrics_require_token when only it is set."""
    older = admin.metrics_require_token
    if metrics.require_token is None:
        return MetricsSettings(require_token=older)
    if older is not None and older != metrics.require_token:
        raise ConfigFileError(f"{where}: [metrics]: field 'require_token' says "
                          f"{str(metrics.require_token).lower()} but [admin] "
                          f"metrics_require_token says {str(older).lower()}: keep one")
    return metrics


def is_loopback_bind(bind: str) -> bool:
    """Whether `host:port` only listens on this machine (127.0.0.0/8, ::1, `localhost`)."""
    host = parse_bind(bind)[0]
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # another name: it may resolve to anything


_HOST = re.compile(r"[a-z0-9._-]+|[0-9a-f:.]*:[0-9a-f:.]*")  # a name, IPv4, or IPv6 (unbracketed)


def parse_public_url(text: str) -> str:
    """`https://GW.example.com:8443/t/` → `https://gw.example.com:8443/t`: the address browser
    SDKs are told to send to, so it must be a plain http(s) base URL. Raises ValueError with a
    message fit for the user."""
    text = text.strip()
    if any(ch.isspace() or ord(ch) < 32 for ch in text):
        raise ValueError(f"{text!r}: must not contain spaces or control characters")
    parts = urllib.parse.urlsplit(text)
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"{text!r}: must start with http:// or https://")
    if not parts.hostname:
        raise ValueError(f"{text!r}: names no host")
    if not _HOST.fullmatch(parts.hostname):
        raise ValueError(f"{text!r}: {parts.hostname!r} is not a host name or IP address")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{text!r}: must not hold credentials")
    if parts.query or text.rstrip().endswith("?"):
        raise ValueError(f"{text!r}: must not have a query (?…)")
    if parts.fragment or "#" in text:
        raise ValueError(f"{text!r}: must not have a fragment (#…)")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535") from None
    if port == 0:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = host if port is None else f"{host}:{port}"
    return f"{parts.scheme.lower()}://{netloc}{parts.path.rstrip('/')}"


def _normal_public_url(text: str, where: str) -> str:
    """[server] public_url normalised, "" left as "" (the request's own host), or a
    ConfigFileError."""
    if not text.strip():
        return ""
    try:
        return parse_public_url(text)
    except ValueError as exc:
        raise ConfigFileError(f"{where}: [server]: field 'public_url': {exc}") from None


# Names the program and its test suite read, besides GATEWAY_DATABASE_URL, GATEWAY_ADMIN_TOKEN
# and GATEWAY_<TABLE>_<FIELD>; GATEWAY_INTERNAL_* is what the program sets for its children.
OTHER_ENVIRONMENT = ("GATEWAY_CONFIG", "GATEWAY_TEST_POSTGRES_URL", "GATEWAY_EXTRA_FIXTURES")


def known_environment() -> set[str]:
    names = {"GATEWAY_DATABASE_URL", "GATEWAY_ADMIN_TOKEN", *OTHER_ENVIRONMENT}
    for table, cls in TABLES.items():
        names.update(f"GATEWAY_{table.upper()}_{f.name.upper()}" for f in dataclasses.fields(cls))
    return names


def unknown_environment(env: Mapping[str, str]) -> list[str]:
    """A warning for each GATEWAY_* variable we do not read: a misspelt override is otherwise
    silently ignored."""
    known = known_environment()
    warnings = []
    for name in sorted(env):
        if not name.startswith("GATEWAY_") or name in known \
                or name.startswith("GATEWAY_INTERNAL_"):
            continue
        # compared without the shared prefix, which would make every name look close
        close = difflib.get_close_matches(name[8:], [k[8:] for k in known], n=1)
        hint = f" (did you mean GATEWAY_{close[0]}?)" if close else ""
        warnings.append(f"gateway: warning: ignoring unknown environment variable {name}{hint}")
    return warnings


def _apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """`GATEWAY_DATABASE_URL`, `GATEWAY_ADMIN_TOKEN` and `GATEWAY_<TABLE>_<FIELD>` win over
    the file."""
    for key in ("database_url", "admin_token"):
        value = env.get(f"GATEWAY_{key.upper()}")
        if value:
            raw[key] = value
    for table, cls in TABLES.items():
        for f in dataclasses.fields(cls):
            value = env.get(f"GATEWAY_{table.upper()}_{f.name.upper()}")
            if value is not None:
                section = dict(raw.get(table, {}))
                section[f.name] = _from_env_text(value, f.type)
                raw[table] = section
    return raw


def _from_env_text(text: str, type_name: Any) -> Any:
    kind = str(type_name)
    if kind == "bool | None" and text.strip().lower() in ("", "auto"):
        return None
    if kind in ("bool", "bool | None"):
        return text.strip().lower() in ("1", "true", "yes", "on")
    if kind == "int":
        try:
            return int(text)
        except ValueError:
            return text  # reported by _load_table with the field's name
    if kind.startswith("tuple"):
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


def _load_sources(items: Any, where: str) -> tuple[Source, ...]:
    if not isinstance(items, list):
        raise ConfigFileError(f"{where}: [[sources]] must be an array of tables")
    sources: list[Source] = []
    seen_names: set[str] = set()
    seen_keys: set[str] = set()
    for index, item in enumerate(items, 1):
        table = f"[[sources]] #{index}"
        if not isinstance(item, dict):
            raise ConfigFileError(f"{where}: {table} must be a table")
        _reject_unknown(item, {"name", "write_key", "enabled", "filters", "rate_limit",
                               "allowed_origins", *plan_settings.SOURCE_KEYS}, where, table)
        name = _required_str(item, "name", where, table)
        table = f"[[sources]] #{index} ({name!r})"
        key = _required_str(item, "write_key", where, table)
        if name in seen_names:
            raise ConfigFileError(f"{where}: {table}: field 'name': duplicate source name {name!r}")
        if key in seen_keys:
            raise ConfigFileError(f"{where}: {table}: field 'write_key': duplicate write key")
        seen_names.add(name)
        seen_keys.add(key)
        try:
            guard = source_limits.parse(item)
        except source_limits.SourceLimitsError as exc:
            raise ConfigFileError(f"{where}: {table}: {exc}") from None
        sources.append(Source(name, key, _bool(item, "enabled", True, where, table),
                              _filters(item, where, table), guard))
    return tuple(sources)


def _load_destinations(items: Any, sources: tuple[Source, ...], where: str,
                       check_settings: bool = True) -> tuple[Destination, ...]:
    if not isinstance(items, list):
        raise ConfigFileError(f"{where}: [[destinations]] must be an array of tables")
    source_names = tuple(s.name for s in sources)
    destinations: list[Destination] = []
    seen: set[str] = set()
    allowed = {"name", "type", "sources", "enabled", "endpoint", "settings", "filters", "limits",
               "consent"}
    for index, item in enumerate(items, 1):
        table = f"[[destinations]] #{index}"
        if not isinstance(item, dict):
            raise ConfigFileError(f"{where}: {table} must be a table")
        _reject_unknown(item, allowed, where, table)
        name = _required_str(item, "name", where, table)
        table = f"[[destinations]] #{index} ({name!r})"
        if name in seen:
            raise ConfigFileError(f"{where}: {table}: field 'name': duplicate destination name")
        seen.add(name)
        kind = _required_str(item, "type", where, table)
        if kind not in DESTINATION_TYPES:
            known = ", ".join(sorted(DESTINATION_TYPES))
            raise ConfigFileError(
                f"{where}: {table}: field 'type': unknown destination type {kind!r} "
                f"(known: {known})")
        linked = item.get("sources", list(source_names))
        if not isinstance(linked, list) or not all(isinstance(s, str) for s in linked):
            raise ConfigFileError(
                f"{where}: {table}: field 'sources': must be a list of source names")
        for source_name in linked:
            if source_name not in source_names:
                raise ConfigFileError(
                    f"{where}: {table}: field 'sources': no source named {source_name!r}")
        endpoint = item.get("endpoint")
        if endpoint is not None and (not isinstance(endpoint, str)
                                     or not endpoint.startswith(("http://", "https://"))):
            raise ConfigFileError(f"{where}: {table}: field 'endpoint': must be an http(s) URL")
        settings = item.get("settings", {})
        if not isinstance(settings, dict):
            raise ConfigFileError(f"{where}: {table}: field 'settings': must be a table")
        problem = check_settings and DESTINATION_TYPES[kind].check_settings(settings)
        if problem:
            raise ConfigFileError(f"{where}: {table}.settings: {problem}")
        try:
            limits = parse_limits(item.get("limits"), DESTINATION_TYPES[kind].default_rate)
        except LimitsError as exc:
            raise ConfigFileError(f"{where}: {table}.limits: {exc}") from None
        destinations.append(Destination(
            name=name, type=kind, sources=tuple(linked),
            enabled=_bool(item, "enabled", True, where, table),
            endpoint=endpoint.rstrip("/") if endpoint else None, settings=settings,
            filters=_filters(item, where, table), limits=limits,
            consent=_consent(item, where, table)))
    return tuple(destinations)


def _filters(item: Mapping[str, Any], where: str, table: str) -> Filters:
    """The entry's `filters` table (beside `settings`, docs/design.md §8), checked."""
    if "filters" not in item:
        return NO_FILTERS
    try:
        return filters_module.parse(item["filters"])
    except ValueError as exc:
        raise ConfigFileError(f"{where}: {table}.filters: {exc}") from None


def _consent(item: Mapping[str, Any], where: str, table: str) -> consent_module.Rules:
    """The entry's consent rules (gateway/consent.py), checked: enforced, so never guessed."""
    try:
        return consent_module.load(item)
    except consent_module.ConsentError as exc:
        raise ConfigFileError(f"{where}: {table}.{exc}") from None


def _load_table(cls: type, values: Any, where: str, table: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigFileError(f"{where}: {table} must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _reject_unknown(values, set(fields), where, table)
    converted: dict[str, Any] = {}
    for name, value in values.items():
        kind = str(fields[name].type)
        minimum = fields[name].metadata.get("min", 0)
        if kind == "int" and (not isinstance(value, int) or isinstance(value, bool)):
            raise ConfigFileError(f"{where}: {table}: field {name!r}: must be a whole number")
        if kind == "int" and value < minimum:
            raise ConfigFileError(f"{where}: {table}: field {name!r}: must be at least {minimum}")
        optional = kind == "bool | None" and value is None  # "auto" from the environment
        if kind in ("bool", "bool | None") and not isinstance(value, bool) and not optional:
            raise ConfigFileError(f"{where}: {table}: field {name!r}: must be true or false")
        if kind == "str" and not isinstance(value, str):
            raise ConfigFileError(f"{where}: {table}: field {name!r}: must be a string")
        if kind.startswith("tuple"):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigFileError(
                    f"{where}: {table}: field {name!r}: must be a list of strings")
            value = tuple(value)
        converted[name] = value
    return cls(**converted)


def _reject_unknown(item: Mapping[str, Any], allowed: set[str], where: str, table: str) -> None:
    problem = unknown_key(item, allowed)
    if problem:
        raise ConfigFileError(f"{where}: {table}: {problem}")


def _required_str(item: Mapping[str, Any], key: str, where: str, table: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ConfigFileError(f"{where}: {table}: field {key!r}: required, a non-empty string")
    return value


def _bool(item: Mapping[str, Any], key: str, default: bool, where: str, table: str) -> bool:
    value = item.get(key, default)
    if not isinstance(value, bool):
        raise ConfigFileError(f"{where}: {table}: field {key!r}: must be true or false")
    return value


def write_default(path: Path) -> tuple[str, str]:
    """Write a starter config for the embedded default; return (write_key, admin_token)."""
    write_key = "wk_" + secrets.token_urlsafe(24)
    admin_token = secrets.token_urlsafe(32)
    while admin_token_problem(admin_token):  # one in billions spells a placeholder word
        admin_token = secrets.token_urlsafe(32)
    if not path.parent.is_dir():
        raise ConfigFileError(f"cannot write {path}: folder {path.parent} does not exist")
    try:
        # created 0600 from the start: it holds secrets
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(STARTER_TEMPLATE.format(write_key=write_key, admin_token=admin_token))
    except OSError as exc:
        raise ConfigFileError(f"cannot write {path}: {exc.strerror or exc}") from None
    return write_key, admin_token


STARTER_TEMPLATE = """\
# Written by `gateway serve` because no config file existed. Reference: README.md, "Configuration".
database_url = "sqlite:///gateway.db"
admin_token = "{admin_token}"

[[sources]]
name = "default"
write_key = "{write_key}"

# Destinations receive the events of the sources they list (default: every source), e.g.
# [[destinations]]
# name = "customerio-prod"
# type = "customerio"
# [destinations.settings]
# siteID = "..."
# apiKey = "..."
"""
