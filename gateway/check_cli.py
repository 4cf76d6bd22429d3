"""`gateway check`: is this installation usable? One line per thing checked — the config file,
the admin token's strength, the database, its schema, each destination's settings — and exit 1
if any is not."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from alembic.util.exc import CommandError
from sqlalchemy.exc import SQLAlchemyError

from adapters import DESTINATION_TYPES
from gateway import config as config_module
from gateway import heartbeat
from gateway.config import Config, ConfigError
from gateway.db import (
    DatabaseProblem,
    describe_database_error,
    make_engine,
    mask_url,
    require_existing,
    schema_problem,
    schema_state,
)

Line = tuple[bool, str, str]  # (ok, what, detail)


def check(path: Path) -> int:
    """Print the report; 0 when everything is ok, 1 otherwise. Never creates a database."""
    try:
        config = config_module.load(path, check_settings=False, check_admin_token=False)
    except ConfigError as exc:
        return report([(False, "config", str(exc))])
    lines: list[Line] = [(True, "config", str(path.resolve())), check_admin_token(config)]
    database = check_database(config.database_url)
    lines += database
    if all(ok for ok, _, _ in database):
        lines += check_workers(config)
    lines += check_destinations(config)
    return report(lines)


def check_admin_token(config: Config) -> Line:
    """The same rule that refuses a weak token at start-up, on its own line (never the token)."""
    problem = config_module.admin_token_problem(config.admin_token)
    if problem:
        where = config_module.describe_admin_token(os.environ)
        return (False, "admin token", f"{where}: {problem}")
    return (True, "admin token", "long enough, not a placeholder")


def check_database(url: str) -> list[Line]:
    """Reachable, then at the newest schema revision (a read-only look: nothing is created)."""
    try:
        require_existing(url)
        engine = make_engine(url)
        try:
            state = schema_state(engine)
        finally:
            engine.dispose()
    except (DatabaseProblem, SQLAlchemyError, CommandError) as exc:
        return [(False, "database", describe_database_error(exc, url))]
    schema = (True, "schema", "current") if state == "current" else \
        (False, "schema", schema_problem(state))
    return [(True, "database", mask_url(url)), schema]


def check_workers(config: Config) -> list[Line]:
    """Delivery workers' heartbeats (the same rows /health reads); none ever seen is not a
    failure here: `gateway worker` or `gateway serve` may simply not be running yet."""
    engine = make_engine(config.database_url)
    try:
        with engine.connect() as connection:
            seen = heartbeat.liveness(connection, heartbeat.WORKER,
                                      config.worker.heartbeat_seconds)
    except SQLAlchemyError as exc:
        return [(False, "delivery worker", describe_database_error(exc, config.database_url))]
    finally:
        engine.dispose()
    if seen.alive:
        return [(True, "delivery worker", f"{seen.alive} alive")]
    if not seen.gone:
        return [(True, "delivery worker", "none running (start gateway serve or gateway worker)")]
    return [(False, "delivery worker", seen.describe(datetime.now(UTC)))]


def check_destinations(config: Config) -> list[Line]:
    lines: list[Line] = []
    for destination in config.destinations:
        problem = DESTINATION_TYPES[destination.type].check_settings(destination.settings)
        what = f"destination {destination.name} ({destination.type})"
        lines.append((problem is None, what, problem or "settings ok"))
    return lines


def report(lines: list[Line]) -> int:
    width = max(len(what) for _, what, _ in lines)
    for ok, what, detail in lines:
        print(f"{'ok' if ok else 'FAIL':<4} {what:<{width}}  {detail}")
    return 0 if all(ok for ok, _, _ in lines) else 1
