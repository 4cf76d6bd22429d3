"""The `gateway` command: serve, worker, migrate, check, destinations, the admin commands
(events, deliveries, identities, replay, retry, explain) and the regulation commands (suppress,
unsuppress, delete, regulations)."""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import NoReturn

from alembic.util.exc import CommandError
from sqlalchemy.exc import SQLAlchemyError

from gateway import config as config_module
from gateway.cli import admin, copy, plans, regulations, starter, supervisor, transform
from gateway.config import Config, ConfigFileError
from gateway.http import tls
from gateway.store.db import (
    DatabaseProblem,
    describe_database_error,
    is_sqlite,
    make_engine,
    migrate,
    require_current_schema,
    require_existing,
    schema_is_current,
)

ADMIN_COMMANDS = ("events", "deliveries", "identities", "replay", "retry", "explain")
QUIET_ENVIRONMENT = "GATEWAY_INTERNAL_ENVIRONMENT_CHECKED"  # children do not warn again


class Parser(argparse.ArgumentParser):
    """Usage errors as one line naming the problem and where help is, exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> Parser:
    """`--config` is accepted before or after the subcommand: each subcommand has its own with
    a SUPPRESS default, so leaving it out there keeps the top-level value."""
    common = Parser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help=CONFIG_HELP)
    parser = Parser(prog="gateway", description=__doc__)
    parser.add_argument("--config", help=CONFIG_HELP)
    parser.add_argument("--version", action="version", version=f"gateway {version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_text, description=help_text,
                                   parents=[common])

    serve = add("serve", "run the HTTP gateway under gunicorn")
    serve.add_argument("--bind", type=bind_argument,
                       help="host:port, host or :port (default from [server] bind, "
                            "127.0.0.1:8080)")
    serve.add_argument("--workers", type=positive_int,
                       help="gunicorn worker processes (default: one per core)")
    serve.add_argument("--no-worker", action="store_true",
                       help="do not start the delivery worker (run `gateway worker` elsewhere)")
    serve.add_argument("--init", action="store_true",
                       help="write a new config (fresh write key and admin token) when the "
                            "--config or $GATEWAY_CONFIG file does not exist")
    add("worker", "run the delivery worker alone")
    migrating = add("migrate", "bring the database schema up to date")
    migrating.add_argument("--check", action="store_true",
                           help="change nothing: say which revisions are pending and whether "
                                "they are safe while nodes of the previous release run "
                                "(exit 0 none, 1 pending, 2 the database is newer)")
    migrating.add_argument("--expand-only", action="store_true",
                           help="run the pending revisions older nodes keep working on and "
                                "stop before those that wait until every node runs this release")
    add("check", "check the config, the database, the schema and each destination's settings")
    admin.add_commands(add)
    regulations.add_commands(add)
    copy.add_command(add)
    transform.add_command(add)
    plans.add_commands(add)
    listing = add("destinations", "list destination types and settings")
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")
    return parser


CONFIG_HELP = "config file (default: $GATEWAY_CONFIG or ./gateway.toml)"


def bind_argument(text: str) -> str:
    """`--bind` checked while parsing, so a bad one is a usage error before anything starts."""
    try:
        return config_module.format_bind(*config_module.parse_bind(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a whole number, at least 1")
    return value


def version() -> str:
    try:
        return importlib.metadata.version("event-gateway")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Every expected failure ends as one line on stderr and an exit code
    (2: usage or config, 1: at run time), never a traceback."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    if args.command not in ("serve", "migrate"):  # the schema check is not news
        logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
    _warn_about_environment()
    try:
        code = _run(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except ConfigFileError as exc:
        return _fail(f"configuration error: {exc}", 2)
    except (DatabaseProblem, SQLAlchemyError, CommandError) as exc:
        return _fail(describe_database_error(exc, _database_url(args)),
                     getattr(exc, "exit_code", 1))
    except BrokenPipeError:  # `gateway events | head -1`: the reader has gone, stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:  # Ctrl-C during a long replay or a slow connection attempt
        print(file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    if args.command == "destinations":
        from gateway.cli.destinations import render

        print(render(args.json))
        return 0
    if args.command == "serve":
        return _serve(args)
    if args.command == "check":
        from gateway.cli.check import check

        return check(config_module.resolve_path(args.config))
    if args.command == "plan":
        return plans.run_plan(args)
    config = config_module.load(args.config)
    if args.command == "violations":
        return plans.run_violations(args, config)
    if args.command == "worker":
        return _worker(config)
    if args.command in ADMIN_COMMANDS:
        return admin.run(args, config)
    if args.command in regulations.COMMANDS:
        return regulations.run(args, config)
    if args.command == "copy":
        return copy.run(args, config)
    if args.command == "transform":
        return transform.run(args, config)
    if args.check:
        return _check_migrations(config.database_url)
    if args.expand_only:
        return _expand(config.database_url)
    migrate(config.database_url)
    print("database schema is up to date")
    return 0


def _expand(url: str) -> int:
    """`gateway migrate --expand-only`: the revisions before the first that waits for the
    rollout. An unmigrated database is migrated whole (no older node can be running on it),
    and so is SQLite (one machine: its revisions after the rollout change nothing there)."""
    from gateway.store import upgrade

    if is_sqlite(url):
        migrate(url)
        print("database schema is up to date")
        return 0
    require_existing(url)
    engine = make_engine(url)
    try:
        plan = upgrade.plan(engine)
    finally:
        engine.dispose()
    if plan.current is None or not plan.after_rollout:
        migrate(url)
        print("database schema is up to date")
        return 0
    if plan.expand:
        migrate(url, plan.expand[-1].id)
    waiting = ", ".join(r.id for r in plan.after_rollout)
    print(f"database schema is ready for this release; once every node runs it, run gateway "
          f"migrate for {waiting}")
    return 0


def _check_migrations(url: str) -> int:
    """`gateway migrate --check`: the pending revisions, read without changing anything."""
    from gateway.store import upgrade

    require_existing(url)
    engine = make_engine(url)
    try:
        lines, code = upgrade.describe(upgrade.plan(engine))
    finally:
        engine.dispose()
    print("\n".join(lines))
    return code


def _warn_about_environment() -> None:
    """Once per run: a misspelt GATEWAY_* override would otherwise be silently ignored."""
    if os.environ.get(QUIET_ENVIRONMENT):
        return
    for warning in config_module.unknown_environment(os.environ):
        print(warning, file=sys.stderr)
    os.environ[QUIET_ENVIRONMENT] = "1"


def _database_url(args: argparse.Namespace) -> str:
    """The URL a failure is about, for the message (the config loaded fine to get this far)."""
    try:
        return config_module.load(args.config, check_settings=False).database_url
    except ConfigFileError:
        return "the configured database"


def _fail(message: str, code: int) -> int:
    print(f"gateway: {message}", file=sys.stderr)
    return code


def _serve(args: argparse.Namespace) -> int:
    path = config_module.resolve_path(args.config)
    if not path.exists() and not args.init and _config_named(args):
        # a typo in --config or $GATEWAY_CONFIG must not start an empty installation that
        # looks healthy while every SDK gets 401
        raise ConfigFileError(f"{path}: file not found (gateway serve writes a new config only "
                          f"at the default ./{config_module.DEFAULT_CONFIG_PATH}, or with "
                          "--init)")
    if not path.exists():
        write_key, admin_token = starter.write_default(path)
        print(f"Wrote {path} for the embedded default (SQLite at "
              f"{path.parent / 'gateway.db'}).")
        print(f"  write key:   {write_key}")
        print(f"  admin token: {admin_token}")
    config = config_module.load(path)
    if is_sqlite(config.database_url):
        migrate(config.database_url)
    elif not schema_is_current(config.database_url):
        raise DatabaseProblem("the schema is not up to date: run gateway migrate first")
    host, port = config_module.parse_bind(args.bind or config.server.bind)
    admin_address = config_module.parse_bind(config.admin.bind) if config.admin.bind else None
    if admin_address == (host, port):
        raise ConfigFileError(f"{path}: [admin]: field 'bind': {config.admin.bind!r} is also the "
                          "address served (--bind); the admin listener needs its own")
    tls_problem = config.server.certfile and tls.load_problem(config.server.certfile,
                                                             config.server.keyfile)
    if tls_problem:  # before binding: every worker would fail on it
        raise ConfigFileError(f"{path}: [server]: TLS: {tls_problem}")
    workers = args.workers or config.server.workers or os.cpu_count() or 1
    try:
        return supervisor.serve(path.resolve(), host, port, workers,
                                with_worker=not args.no_worker, admin=admin_address,
                                tls=bool(config.server.certfile))
    except supervisor.ServeError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2


def _config_named(args: argparse.Namespace) -> bool:
    """Did the user name a config file (--config or $GATEWAY_CONFIG), not take the default?"""
    return bool(args.config or os.environ.get("GATEWAY_CONFIG"))


def _worker(config: Config) -> int:
    """Deliver until SIGTERM/SIGINT, then finish what is in flight (leases are released by
    finishing, never abandoned)."""
    from gateway import retention
    from gateway.delivery.worker import Worker
    from gateway.heartbeat import WORKER, Heartbeat
    from gateway.regulations.service import finisher
    from gateway.store.db import make_engine

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    require_existing(config.database_url)
    engine = make_engine(config.database_url)
    beat = Heartbeat(engine, WORKER, config.worker.heartbeat_seconds)
    require_current_schema(engine)
    worker = Worker(engine, config, tick=lambda: _beat_safely(beat))
    worker.on_tick(finisher(engine))  # closes finished regulations, erasing their keys
    logging.getLogger(__name__).info("delivery worker started (%d threads)",
                                     config.worker.concurrency)
    retention.start(engine, config, stop)  # [retention]: prunes in small batches
    try:
        _beat_safely(beat)
        worker.run(stop)
    finally:
        worker.close()
        with contextlib.suppress(Exception):  # the database may be the reason we stop
            beat.remove()
        engine.dispose()
    return 0


def _beat_safely(beat) -> None:
    """A heartbeat that cannot be written is a fact /health reports, not a reason to stop."""
    with contextlib.suppress(Exception):
        beat.beat()

