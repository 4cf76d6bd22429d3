"""Configuration: one TOML file (+ ``GATEWAY_*`` environment overrides) → frozen dataclasses.

- model.py: the frozen dataclasses (Limits, ServerSettings, …, Source, Destination, Config) and
  ConfigFileError
- load.py: read the file, apply the environment, check every table, build the Config; the
  admin token's rules; unknown `GATEWAY_*` variables
- addresses.py: listener binds, the public URL, trusted proxies
- limits.py: a destination's `[destinations.limits]` (the lanes read the result)
- tables.py: the one checker of a TOML table against a declared shape (keys, kinds, bounds)
- identity.py: the `[identity]` table (blocked values, per-kind limits, the alias rule)

The starter file `gateway serve` writes is the CLI's (gateway/cli/starter.py). Callers import
from here: `from gateway.config import load, Config`.
"""

from __future__ import annotations

from gateway.config.addresses import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    format_bind,
    is_loopback_bind,
    parse_bind,
    parse_public_url,
)
from gateway.config.limits import DestinationLimits, parse_limits
from gateway.config.load import (
    DEFAULT_CONFIG_PATH,
    MIN_ADMIN_TOKEN,
    admin_token_problem,
    anchor_sqlite_path,
    describe_admin_token,
    from_mapping,
    known_environment,
    load,
    read_config,
    resolve_path,
    unknown_environment,
)
from gateway.config.model import (
    TABLES,
    AdminSettings,
    Config,
    ConfigFileError,
    ConsoleSettings,
    Destination,
    Limits,
    MetricsSettings,
    RetentionSettings,
    RetrySettings,
    ServerSettings,
    Source,
    WorkerSettings,
)
from gateway.config.tables import TableError, at_least

__all__ = [
    "DEFAULT_CONFIG_PATH", "DEFAULT_HOST", "DEFAULT_PORT", "MIN_ADMIN_TOKEN", "TABLES",
    "AdminSettings", "Config", "ConfigFileError", "ConsoleSettings", "Destination",
    "DestinationLimits", "Limits", "MetricsSettings", "RetentionSettings", "RetrySettings",
    "ServerSettings", "Source", "TableError", "WorkerSettings", "admin_token_problem",
    "anchor_sqlite_path", "at_least", "describe_admin_token", "format_bind", "from_mapping",
    "is_loopback_bind", "known_environment", "load", "parse_bind", "parse_limits",
    "parse_public_url", "read_config", "resolve_path", "unknown_environment",
]
