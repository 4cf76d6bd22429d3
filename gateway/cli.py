"""The `gateway` command: serve, worker, migrate, destinations, and the admin commands
(events, deliveries, identities, replay, retry)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence

from gateway import admin_cli
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
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # before anything imports the client
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="gateway-metrics-")
    bind = args.bind or config.server.bind
    workers = args.workers or config.server.workers or os.cpu_count() or 1
    os.environ["GATEWAY_CONFIG"] = str(path.resolve())  # each worker loads the same file
    delivery = None if args.no_worker else subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "--config", str(path.resolve()), "worker"])
    print(f"Serving on http://{bind} with {workers} worker(s); tracking API at /v1/batch"
          + ("" if delivery is None else f"; delivery worker pid {delivery.pid}"))
    try:
        run_gunicorn(config, bind, workers)
    finally:
        if delivery is not None:
            _stop(delivery)
    return 0


def _worker(config: Config) -> int:
    """Deliver until SIGTERM/SIGINT, then finish what is in flight (leases are released by
    finishing, never abandoned)."""
    from gateway.db import make_engine
    from gateway.delivery.worker import Worker

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    engine = make_engine(config.database_url)
    worker = Worker(engine, config)
    logging.getLogger(__name__).info("delivery worker started (%d threads)",
                                     config.worker.concurrency)
    try:
        worker.run(stop)
    finally:
        worker.close()
        engine.dispose()
    return 0


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=40)
    except subprocess.TimeoutExpired:
        process.kill()


def run_gunicorn(config: Config, bind: str, workers: int) -> None:
    """Run gunicorn in this process; each worker builds its own app (engine) after fork."""
    from gunicorn.app.base import BaseApplication

    class GatewayApplication(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", bind)
            self.cfg.set("workers", workers)
            self.cfg.set("accesslog", None)
            self.cfg.set("control_socket_disable", True)  # several gateways may share a host
            self.cfg.set("timeout", 60)
            self.cfg.set("graceful_timeout", 30)
            # bodies are bounded by [limits]; headers as rudder-server allows
            self.cfg.set("limit_request_field_size", 65536)
            self.cfg.set("child_exit", _metrics_child_exit)

        def load(self):
            from gateway import create_app

            return create_app(config_module.load(os.environ["GATEWAY_CONFIG"]))

    GatewayApplication().run()


def _metrics_child_exit(_server, worker) -> None:
    """A gunicorn worker ended: fold its live gauges away (its counters stay summed)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


if __name__ == "__main__":
    sys.exit(main())
