"""The `gateway` command: serve, worker, migrate, destinations, and the admin commands
(events, deliveries, identities, replay, retry)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

from gateway import admin_cli, supervisor
from gateway import config as config_module
from gateway.config import Config, ConfigError
from gateway.db import is_sqlite, migrate, schema_is_current

ADMIN_COMMANDS = ("events", "deliveries", "identities", "replay", "retry")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    parser.add_argument("--config", help="config file (default: $GATEWAY_CONFIG or ./gateway.toml)")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP gateway under gunicorn")
    serve.add_argument("--bind", help="host:port (default from [server] bind, 127.0.0.1:8080)")
    serve.add_argument("--workers", type=int, help="gunicorn worker processes (default: cores)")
    serve.add_argument("--no-worker", action="store_true",
                       help="do not start the delivery worker (run `gateway worker` elsewhere)")
    commands.add_parser("worker", help="run the delivery worker alone")
    commands.add_parser("migrate", help="bring the database schema up to date")
    admin_cli.add_commands(commands)
    listing = commands.add_parser("destinations", help="list destination types and settings")
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "worker":
            return _worker(config_module.load(args.config))
        if args.command in ADMIN_COMMANDS:
            return admin_cli.run(args, config_module.load(args.config))
        if args.command == "destinations":
            from gateway.destinations_cli import render

            print(render(args.json))
            return 0
        config = config_module.load(args.config)
        migrate(config.database_url)
        print("database schema is up to date")
        return 0
    except ConfigError as exc:
        print(f"gateway: configuration error: {exc}", file=sys.stderr)
        return 2


def _serve(args: argparse.Namespace) -> int:
    path = config_module.resolve_path(args.config)
    if not path.exists():
        write_key, admin_token = config_module.write_default(path)
        print(f"Wrote {path} for the embedded default (SQLite at ./gateway.db).")
        print(f"  write key:   {write_key}")
        print(f"  admin token: {admin_token}")
    config = config_module.load(path)
    if is_sqlite(config.database_url):
        migrate(config.database_url)
    elif not schema_is_current(config.database_url):
        print("gateway: the database schema is not up to date: run `gateway migrate` first",
              file=sys.stderr)
        return 2
    host, _, port = (args.bind or config.server.bind).rpartition(":")
    workers = args.workers or config.server.workers or os.cpu_count() or 1
    try:
        return supervisor.serve(path.resolve(), host.strip("[]") or "127.0.0.1", int(port),
                                workers, with_worker=not args.no_worker)
    except supervisor.ServeError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2


def _worker(config: Config) -> int:
    """Deliver until SIGTERM/SIGINT, then finish what is in flight (leases are released by
    finishing, never abandoned)."""
    from gateway.db import make_engine
    from gateway.delivery.worker import Worker
    from gateway.heartbeat import WORKER, Heartbeat

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    engine = make_engine(config.database_url)
    beat = Heartbeat(engine, WORKER, config.worker.heartbeat_seconds)
    worker = Worker(engine, config, tick=lambda: _beat_safely(beat))
    logging.getLogger(__name__).info("delivery worker started (%d threads)",
                                     config.worker.concurrency)
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


if __name__ == "__main__":
    sys.exit(main())
