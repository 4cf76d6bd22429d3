"""Loading the configuration: read the TOML file, apply `GATEWAY_*` environment overrides, check
every table against its declared shape (tables.py) and build the frozen Config (model.py).

The file format is a contract (docs/design.md §4): outside tools write it, so every mistake in
it must stop start-up with one message that names the file, the table and the field.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from adapters import DESTINATION_TYPES
from gateway import consent as consent_module
from gateway import filters as filters_module
from gateway import source_limits
from gateway.config import identity as identity_settings
from gateway.config.addresses import normal_bind, normal_proxies, normal_public_url, parse_bind
from gateway.config.limits import parse_limits
from gateway.config.model import (
    TABLES,
    AdminSettings,
    Config,
    ConfigFileError,
    Destination,
    MetricsSettings,
    ServerSettings,
    Source,
)
from gateway.config.tables import (
    ANY,
    Key,
    TableError,
    check_keys,
    check_table,
    shape_of,
    value_of,
)
from gateway.filters.rules import NO_FILTERS, Filters
from gateway.plans import settings as plan_settings
from gateway.store.db import DatabaseProblem, for_pooler, sqlite_file
from gateway.transforms import config as transforms_config

DEFAULT_CONFIG_PATH = "gateway.toml"
TOP_LEVEL = {"database_url": Key("str", required=True), "admin_token": Key("str", required=True),
             "sources": ANY, "destinations": ANY, "identity": ANY, "transformations": ANY,
             "tracking_plans": ANY,
             **{name: ANY for name in TABLES}}
SOURCE_KEYS = {"name": Key("str", required=True), "write_key": Key("str", required=True),
               "enabled": Key("bool"), "filters": ANY, "rate_limit": ANY,
               "allowed_origins": ANY, "transformations": ANY,
               **{key: ANY for key in plan_settings.SOURCE_KEYS}}
DESTINATION_KEYS = {"name": Key("str", required=True), "type": Key("str", required=True),
                    "sources": Key("strings", what="a list of source names"),
                    "enabled": Key("bool"),
                    "endpoint": Key("str", optional=True, what="an http(s) URL"),
                    "settings": Key("table"), "filters": ANY, "limits": ANY, "consent": ANY,
                    "transformations": ANY}


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
    with _at(where, "top level"):
        check_keys(raw, TOP_LEVEL)
        database_url = value_of(raw, "database_url", TOP_LEVEL)
        admin_token = value_of(raw, "admin_token", TOP_LEVEL)
    if check_admin_token:
        problem = admin_token_problem(admin_token)
        if problem:
            raise ConfigFileError(f"{where}: {describe_admin_token(env or {})}: {problem}")
    sources = _load_sources(raw.get("sources", []), where)
    sources, plans = plan_settings.attach(raw, sources, where, base_dir)
    destinations = _load_destinations(raw.get("destinations", []), sources, where,
                                      check_settings)
    try:
        sources, destinations = transforms_config.attach(raw, sources, destinations, base_dir)
    except transforms_config.TransformConfigError as exc:
        raise ConfigFileError(f"{where}: {exc}") from None
    tables = {name: _load_table(cls, raw.get(name, {}), where, f"[{name}]")
              for name, cls in TABLES.items()}
    tables["server"] = dataclasses.replace(
        tables["server"], bind=normal_bind(tables["server"].bind, where),
        public_url=normal_public_url(tables["server"].public_url, where),
        trusted_proxies=normal_proxies(tables["server"].trusted_proxies, where))
    tables["server"] = _checked_tls(tables["server"], base_dir, where)
    tables["admin"] = _checked_admin(tables["admin"], tables["server"].bind, where)
    tables["metrics"] = _checked_metrics(tables["metrics"], tables["admin"], where)
    try:
        database_url = for_pooler(database_url, tables["database"].pooler)
    except DatabaseProblem as exc:
        raise ConfigFileError(f"{where}: {exc}") from None
    return Config(database_url=database_url, admin_token=admin_token, sources=sources,
                  destinations=destinations, **tables, path=where,
                  identity=identity_settings.load(raw.get("identity"), where, ConfigFileError),
                  tracking_plans=plans)


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


def _checked_admin(admin: AdminSettings, public_bind: str, where: str) -> AdminSettings:
    """[admin] bind normalised; it must be a listener of its own, not the public one."""
    if not admin.bind.strip():
        return dataclasses.replace(admin, bind="")
    bind = normal_bind(admin.bind, where, "[admin]")
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
        name = _entry_name(item, where, f"[[sources]] #{index}", SOURCE_KEYS)
        table = f"[[sources]] #{index} ({name!r})"
        with _at(where, table):
            key = value_of(item, "write_key", SOURCE_KEYS)
            if name in seen_names:
                raise TableError(f"field 'name': duplicate source name {name!r}")
            if key in seen_keys:
                raise TableError("field 'write_key': duplicate write key")
            enabled = value_of(item, "enabled", SOURCE_KEYS, True)
        seen_names.add(name)
        seen_keys.add(key)
        try:
            guard = source_limits.parse(item)
        except source_limits.SourceLimitsError as exc:
            raise ConfigFileError(f"{where}: {table}: {exc}") from None
        sources.append(Source(name, key, enabled, _filters(item, where, table), guard))
    return tuple(sources)


def _load_destinations(items: Any, sources: tuple[Source, ...], where: str,
                       check_settings: bool = True) -> tuple[Destination, ...]:
    if not isinstance(items, list):
        raise ConfigFileError(f"{where}: [[destinations]] must be an array of tables")
    source_names = tuple(s.name for s in sources)
    seen: set[str] = set()
    return tuple(_load_destination(index, item, source_names, seen, where, check_settings)
                 for index, item in enumerate(items, 1))


def _load_destination(index: int, item: Any, source_names: tuple[str, ...], seen: set[str],
                      where: str, check_settings: bool) -> Destination:
    """One `[[destinations]]` entry, each key checked once what it depends on is known: the
    type before its settings and limits, the sources against the configured ones."""
    name = _entry_name(item, where, f"[[destinations]] #{index}", DESTINATION_KEYS)
    table = f"[[destinations]] #{index} ({name!r})"
    with _at(where, table):
        if name in seen:
            raise TableError("field 'name': duplicate destination name")
        seen.add(name)
        kind = value_of(item, "type", DESTINATION_KEYS)
        if kind not in DESTINATION_TYPES:
            raise TableError(f"field 'type': unknown destination type {kind!r} "
                             f"(known: {', '.join(sorted(DESTINATION_TYPES))})")
        linked = value_of(item, "sources", DESTINATION_KEYS, source_names)
        for source_name in linked:
            if source_name not in source_names:
                raise TableError(f"field 'sources': no source named {source_name!r}")
        endpoint = value_of(item, "endpoint", DESTINATION_KEYS)
        if endpoint is not None and not endpoint.startswith(("http://", "https://")):
            raise TableError("field 'endpoint': must be an http(s) URL")
        settings = value_of(item, "settings", DESTINATION_KEYS, {})
    problem = check_settings and DESTINATION_TYPES[kind].check_settings(settings)
    if problem:
        raise ConfigFileError(f"{where}: {table}.settings: {problem}")
    with _at(where, f"{table}.limits"):
        limits = parse_limits(item.get("limits"), DESTINATION_TYPES[kind].default_rate)
    with _at(where, table):
        enabled = value_of(item, "enabled", DESTINATION_KEYS, True)
    return Destination(name=name, type=kind, sources=linked, enabled=enabled,
                       endpoint=endpoint.rstrip("/") if endpoint else None, settings=settings,
                       filters=_filters(item, where, table), limits=limits,
                       consent=_consent(item, where, table))


def _entry_name(item: Any, where: str, table: str, shape: Mapping[str, Key]) -> str:
    """An array entry's keys and its name, which every later message quotes."""
    with _at(where, table):
        check_keys(item, shape)
        return value_of(item, "name", shape)


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
    """A settings table (`[server]`, `[worker]`, …) checked against its dataclass's fields."""
    with _at(where, table):
        return cls(**check_table(values, shape_of(cls)))


@contextmanager
def _at(where: str, table: str) -> Iterator[None]:
    """A TableError raised inside, as a ConfigFileError naming the file and the table."""
    try:
        yield
    except TableError as exc:
        raise ConfigFileError(f"{where}: {table}: {exc}") from None
