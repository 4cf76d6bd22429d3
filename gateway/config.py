"""Configuration: one TOML file (+ ``GATEWAY_*`` environment overrides) → frozen dataclasses.

The file format is a contract (DESIGN.md §4): outside tools write it, so every mistake in it must
stop start-up with one message that names the file, the table and the field.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters import DESTINATION_TYPES

DEFAULT_CONFIG_PATH = "gateway.toml"


class ConfigError(Exception):
    """The configuration cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Limits:
    """Input bounds (tracking-api.md §9, DESIGN.md §7). Sizes are decompressed bytes."""

    max_request_bytes: int = 512_000
    max_message_bytes: int = 32_768  # 0 = no per-message cap (RudderStack mode)
    max_batch_messages: int = 2_500
    max_json_depth: int = 64
    max_message_id_length: int = 100
    strict_batches: bool = False  # True: one bad message rejects the whole request


@dataclass(frozen=True)
class ServerSettings:
    """How `gateway serve` runs gunicorn, and which peers may set X-Forwarded-For."""

    bind: str = "127.0.0.1:8080"
    workers: int = 0  # 0 = one per CPU core
    trusted_proxies: tuple[str, ...] = ()
    threads: int = 64  # per worker process: a slow client holds one thread, not the process
    body_timeout_seconds: int = 10  # a request body not fully read by then is answered 408


@dataclass(frozen=True)
class RetrySettings:
    """When a failed delivery is tried again, and when it is given up (DESIGN.md §2.5)."""

    base_delay_seconds: int = 10  # doubled after each failure…
    max_delay_seconds: int = 300  # …up to this cap, ±20 % jitter
    min_attempts: int = 3  # give up only after this many attempts…
    retry_window_seconds: int = 3 * 3600  # …and once the first attempt is this old


@dataclass(frozen=True)
class WorkerSettings:
    """The delivery worker: how much it claims and how many sends run at once."""

    concurrency: int = 8  # threads sending at once, so one slow destination does not starve
    batch_size: int = 200  # deliveries claimed per round
    lease_seconds: int = 60  # a claim not finished by then is taken over by another worker
    poll_interval_ms: int = 250  # sleep when nothing is due
    heartbeat_seconds: int = 5  # liveness row for /health; 3 missed beats = worker gone


@dataclass(frozen=True)
class AdminSettings:
    metrics_require_token: bool = False  # /metrics is open by Prometheus convention


@dataclass(frozen=True)
class Source:
    name: str
    write_key: str
    enabled: bool = True


@dataclass(frozen=True)
class Destination:
    name: str
    type: str
    sources: tuple[str, ...]
    enabled: bool = True
    endpoint: str | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)

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
    path: str | None = None

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
                           "worker": WorkerSettings, "admin": AdminSettings}


def resolve_path(path: str | os.PathLike | None = None) -> Path:
    """`--config`, else `$GATEWAY_CONFIG`, else ./gateway.toml (DESIGN.md §4)."""
    return Path(path or os.environ.get("GATEWAY_CONFIG") or DEFAULT_CONFIG_PATH)


def load(path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read, override from the environment, and validate the config file."""
    config_path = resolve_path(path)
    try:
        raw = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{config_path}: file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{config_path}: not valid TOML: {exc}") from None
    return from_mapping(raw, str(config_path), os.environ if env is None else env)


def from_mapping(raw: Mapping[str, Any], where: str = "<config>",
                 env: Mapping[str, str] | None = None) -> Config:
    """Build a Config from parsed TOML (tests use this directly)."""
    raw = _apply_env(dict(raw), env or {})
    known = {"database_url", "admin_token", "sources", "destinations", *TABLES}
    _reject_unknown(raw, known, where, "top level")
    database_url = _required_str(raw, "database_url", where, "top level")
    admin_token = _required_str(raw, "admin_token", where, "top level")
    sources = _load_sources(raw.get("sources", []), where)
    destinations = _load_destinations(raw.get("destinations", []), sources, where)
    return Config(
        database_url=database_url,
        admin_token=admin_token,
        sources=sources,
        destinations=destinations,
        **{name: _load_table(cls, raw.get(name, {}), where, f"[{name}]")
           for name, cls in TABLES.items()},
        path=where,
    )


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
    if kind == "bool":
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
        raise ConfigError(f"{where}: [[sources]] must be an array of tables")
    sources: list[Source] = []
    seen_names: set[str] = set()
    seen_keys: set[str] = set()
    for index, item in enumerate(items, 1):
        table = f"[[sources]] #{index}"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: {table} must be a table")
        _reject_unknown(item, {"name", "write_key", "enabled"}, where, table)
        name = _required_str(item, "name", where, table)
        table = f"[[sources]] #{index} ({name!r})"
        key = _required_str(item, "write_key", where, table)
        if name in seen_names:
            raise ConfigError(f"{where}: {table}: field 'name': duplicate source name {name!r}")
        if key in seen_keys:
            raise ConfigError(f"{where}: {table}: field 'write_key': duplicate write key")
        seen_names.add(name)
        seen_keys.add(key)
        sources.append(Source(name, key, _bool(item, "enabled", True, where, table)))
    return tuple(sources)


def _load_destinations(items: Any, sources: tuple[Source, ...],
                       where: str) -> tuple[Destination, ...]:
    if not isinstance(items, list):
        raise ConfigError(f"{where}: [[destinations]] must be an array of tables")
    source_names = tuple(s.name for s in sources)
    destinations: list[Destination] = []
    seen: set[str] = set()
    allowed = {"name", "type", "sources", "enabled", "endpoint", "settings"}
    for index, item in enumerate(items, 1):
        table = f"[[destinations]] #{index}"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: {table} must be a table")
        _reject_unknown(item, allowed, where, table)
        name = _required_str(item, "name", where, table)
        table = f"[[destinations]] #{index} ({name!r})"
        if name in seen:
            raise ConfigError(f"{where}: {table}: field 'name': duplicate destination name")
        seen.add(name)
        kind = _required_str(item, "type", where, table)
        if kind not in DESTINATION_TYPES:
            known = ", ".join(sorted(DESTINATION_TYPES))
            raise ConfigError(
                f"{where}: {table}: field 'type': unknown destination type {kind!r} "
                f"(known: {known})")
        linked = item.get("sources", list(source_names))
        if not isinstance(linked, list) or not all(isinstance(s, str) for s in linked):
            raise ConfigError(f"{where}: {table}: field 'sources': must be a list of source names")
        for source_name in linked:
            if source_name not in source_names:
                raise ConfigError(
                    f"{where}: {table}: field 'sources': no source named {source_name!r}")
        endpoint = item.get("endpoint")
        if endpoint is not None and (not isinstance(endpoint, str)
                                     or not endpoint.startswith(("http://", "https://"))):
            raise ConfigError(f"{where}: {table}: field 'endpoint': must be an http(s) URL")
        settings = item.get("settings", {})
        if not isinstance(settings, dict):
            raise ConfigError(f"{where}: {table}: field 'settings': must be a table")
        problem = DESTINATION_TYPES[kind].check_settings(settings)
        if problem:
            raise ConfigError(f"{where}: {table}.settings: {problem}")
        destinations.append(Destination(
            name=name, type=kind, sources=tuple(linked),
            enabled=_bool(item, "enabled", True, where, table),
            endpoint=endpoint.rstrip("/") if endpoint else None, settings=settings))
    return tuple(destinations)


def _load_table(cls: type, values: Any, where: str, table: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: {table} must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _reject_unknown(values, set(fields), where, table)
    converted: dict[str, Any] = {}
    for name, value in values.items():
        kind = str(fields[name].type)
        if kind == "int" and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise ConfigError(f"{where}: {table}: field {name!r}: must be a whole number >= 0")
        if kind == "bool" and not isinstance(value, bool):
            raise ConfigError(f"{where}: {table}: field {name!r}: must be true or false")
        if kind == "str" and not isinstance(value, str):
            raise ConfigError(f"{where}: {table}: field {name!r}: must be a string")
        if kind.startswith("tuple"):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}: {table}: field {name!r}: must be a list of strings")
            value = tuple(value)
        converted[name] = value
    return cls(**converted)


def _reject_unknown(item: Mapping[str, Any], allowed: set[str], where: str, table: str) -> None:
    unknown = sorted(set(item) - allowed)
    if unknown:
        raise ConfigError(f"{where}: {table}: unknown field {unknown[0]!r} "
                          f"(allowed: {', '.join(sorted(allowed))})")


def _required_str(item: Mapping[str, Any], key: str, where: str, table: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: {table}: field {key!r}: required, a non-empty string")
    return value


def _bool(item: Mapping[str, Any], key: str, default: bool, where: str, table: str) -> bool:
    value = item.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {table}: field {key!r}: must be true or false")
    return value


def write_default(path: Path) -> tuple[str, str]:
    """Write a starter config for the embedded default; return (write_key, admin_token)."""
    write_key = "wk_" + secrets.token_urlsafe(24)
    admin_token = secrets.token_urlsafe(32)
    path.write_text(STARTER_TEMPLATE.format(write_key=write_key, admin_token=admin_token),
                    encoding="utf-8")
    os.chmod(path, 0o600)  # it holds secrets
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
