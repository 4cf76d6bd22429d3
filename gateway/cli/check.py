"""`gateway check`: is this installation usable? One line per thing checked — the config file,
the admin token's strength, the database, its schema, the delivery workers, each destination's
settings (and the consent it enforces), each source's rate limit and allowed origins when it
has them, the identity rules, the TLS certificate and key when it serves TLS — and exit 1 if
any is not. A file others may read is a warning (`WARN`): the installation works, but exposes
secrets or every stored event; so are identity rules that let SDK bugs merge people."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

from alembic.util.exc import CommandError
from sqlalchemy.exc import SQLAlchemyError

from adapters import DESTINATION_TYPES
from gateway import config as config_module
from gateway import consent, heartbeat, source_limits
from gateway.config import Config, ConfigFileError
from gateway.config.identity import normal_value
from gateway.http import tls
from gateway.store.db import (
    DatabaseProblem,
    describe_database_error,
    make_engine,
    mask_url,
    require_existing,
    schema_problem,
    schema_state,
    sqlite_file,
)

OK, WARN, FAIL = "ok", "WARN", "FAIL"
Line = tuple[str, str, str]  # (OK | WARN | FAIL, what, detail)


def check(path: Path) -> int:
    """Print the report; 0 when nothing FAILed (warnings allowed), 1 otherwise. Never creates
    a database."""
    try:
        config = config_module.load(path, check_settings=False, check_admin_token=False)
    except ConfigFileError as exc:
        return report([(FAIL, "config", str(exc))])
    lines: list[Line] = [(OK, "config", str(path.resolve())), check_admin_token(config)]
    database = check_database(config.database_url)
    lines += database
    if all(status != FAIL for status, _, _ in database):  # the workers' rows are in it
        lines += check_workers(config)
    lines += check_destinations(config)
    lines += check_sources(config)
    lines.append(check_identity(config))
    lines += check_tls(config)
    lines += check_file_modes(path, config.database_url)
    return report(lines)


def check_admin_token(config: Config) -> Line:
    """The same rule that refuses a weak token at start-up, on its own line (never the token)."""
    problem = config_module.admin_token_problem(config.admin_token)
    if problem:
        where = config_module.describe_admin_token(os.environ)
        return (FAIL, "admin token", f"{where}: {problem}")
    return (OK, "admin token", "long enough, not a placeholder")


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
        return [(FAIL, "database", describe_database_error(exc, url))]
    schema = (OK, "schema", "current") if state == "current" else \
        (FAIL, "schema", schema_problem(state))
    return [(OK, "database", mask_url(url)), schema]


def check_workers(config: Config) -> list[Line]:
    """Delivery workers' heartbeats (the same rows /health reads). None running fails only
    while a destination is enabled: its deliveries then wait for nobody."""
    engine = make_engine(config.database_url)
    try:
        with engine.connect() as connection:
            seen = heartbeat.liveness(connection, heartbeat.WORKER,
                                      config.worker.heartbeat_seconds)
    except SQLAlchemyError as exc:
        return [(FAIL, "delivery worker", describe_database_error(exc, config.database_url))]
    finally:
        engine.dispose()
    if seen.alive:
        return [(OK, "delivery worker", f"{seen.alive} alive")]
    enabled = sum(1 for d in config.destinations if d.enabled)
    if seen.gone:
        return [(FAIL, "delivery worker", seen.describe(datetime.now(UTC)))]
    if enabled:
        return [(FAIL, "delivery worker", heartbeat.none_running(enabled))]
    return [(OK, "delivery worker", "none running (start gateway serve or gateway worker)")]


def check_identity(config: Config) -> Line:
    """The `[identity]` rules on one line; WARN when they let SDK bugs or shared emails merge
    people (a replaced list without the usual placeholders, more than one userId a profile)."""
    settings = config.identity
    detail = settings.describe()
    missing = [v for v in ("undefined", "null", "0", "[object object]")
               if normal_value(v) not in settings.blocked]
    if missing:
        return (WARN, "identity", f"{detail}; blocked_values leaves out "
                f"{', '.join(repr(v) for v in missing)}: an SDK sending one merges everyone "
                "who sends it")
    if settings.limits["userId"] > 1:
        return (WARN, "identity", f"{detail}; limits.userId > 1: two identified people "
                "sharing an email or a device become one profile")
    return (OK, "identity", detail)


def check_destinations(config: Config) -> list[Line]:
    lines: list[Line] = []
    for destination in config.destinations:
        problem = DESTINATION_TYPES[destination.type].check_settings(destination.settings)
        what = f"destination {destination.name} ({destination.type})"
        rules = consent.describe(destination.consent)  # checked at load: shown, not judged
        detail = problem or "settings ok" + (f"; consent: {rules}" if rules else "")
        lines.append((FAIL if problem else OK, what, detail))
    return lines


def check_sources(config: Config) -> list[Line]:
    """Each source's rate limit and allowed origins (gateway/source_limits.py), when it has
    either, and its tracking plan: loading already refused a bad one, so these say what is
    enforced."""
    lines: list[Line] = []
    for source in config.sources:
        if source.guard != source_limits.NO_GUARD:
            shared = " (shared by the HTTP processes on this database)" \
                if source.guard.rate_limit else ""
            lines.append((OK, f"source {source.name}", source.guard.describe() + shared))
        if source.tracking_plan is not None:  # read and compiled at load (gateway/plans)
            chosen = source.tracking_plan
            lines.append((OK, f"source {source.name}", (
                f"tracking plan {chosen.plan.name!r}: {len(chosen.plan.compiled)} rules, "
                f"{len(chosen.plan.events)} track events; unplanned events: "
                f"{chosen.unplanned_events}; violations: {chosen.violations}")))
    return lines


def check_tls(config: Config) -> list[Line]:
    """`[server] certfile`/`keyfile` load as `gateway serve` loads them (readable, PEM, the key
    is the certificate's); a private key others may read is a warning."""
    certfile, keyfile = config.server.certfile, config.server.keyfile
    if not certfile:
        return []
    problem = tls.load_problem(certfile, keyfile)
    if problem:
        return [(FAIL, "TLS", problem)]
    lines: list[Line] = [(OK, "TLS", f"{certfile} and its key load")]
    # the private key should be the service user's alone (the keyfile, else the certfile)
    mode = open_to_others(Path(keyfile or certfile), "the private key")
    if mode:
        lines.append((WARN, "TLS key file", mode))
    return lines


def check_file_modes(config_path: Path, url: str) -> list[Line]:
    """The config (secrets) and a SQLite database with its -wal and -shm (every event) should
    be the service user's alone: a warning for each that group or others may read or write."""
    files = [("config file", config_path)]
    database = _sqlite_path(url)
    if database is not None:
        files += [("database file", Path(f"{database}{suffix}")) for suffix in ("", "-wal",
                                                                                 "-shm")]
    return [(WARN, what, problem) for what, path in files
            if (problem := open_to_others(path, "it"))]


def open_to_others(path: Path, subject: str) -> str | None:
    """The warning when group or others may read or write `path` (None when they may not, or
    it is not there: nothing to expose, or another line reports it)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None
    if not mode & 0o077:
        return None
    access = "read" if mode & 0o044 else "write"
    return (f"{path} has mode {mode:04o}: group or others can {access} {subject}; "
            f"run chmod 600 {path}")


def _sqlite_path(url: str) -> Path | None:
    try:
        return sqlite_file(url)
    except DatabaseProblem:
        return None


def report(lines: list[Line]) -> int:
    width = max(len(what) for _, what, _ in lines)
    for status, what, detail in lines:
        print(f"{status:<4} {what:<{width}}  {detail}")
    return 0 if all(status != FAIL for status, _, _ in lines) else 1
