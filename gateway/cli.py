"""The `gateway` command: serve, migrate (more subcommands join as the admin issue lands)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from gateway import config as config_module
from gateway.config import Config, ConfigError
from gateway.db import is_sqlite, migrate, schema_is_current


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    parser.add_argument("--config", help="config file (default: $GATEWAY_CONFIG or ./gateway.toml)")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP gateway under gunicorn")
    serve.add_argument("--bind", help="host:port (default from [server] bind, 127.0.0.1:8080)")
    serve.add_argument("--workers", type=int, help="gunicorn worker processes (default: cores)")
    commands.add_parser("migrate", help="bring the database schema up to date")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    try:
        if args.command == "serve":
            return _serve(args)
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
    bind = args.bind or config.server.bind
    workers = args.workers or config.server.workers or os.cpu_count() or 1
    os.environ["GATEWAY_CONFIG"] = str(path.resolve())  # each worker loads the same file
    print(f"Serving on http://{bind} with {workers} worker(s); tracking API at /v1/batch")
    run_gunicorn(config, bind, workers)
    return 0


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

        def load(self):
            from gateway import create_app

            return create_app(config_module.load(os.environ["GATEWAY_CONFIG"]))

    GatewayApplication().run()


if __name__ == "__main__":
    sys.exit(main())
