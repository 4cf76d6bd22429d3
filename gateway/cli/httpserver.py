"""The HTTP server child of `gateway serve`: gunicorn on the socket serve bound for it.

Threaded workers (gthread): a request that waits — on a slow client's body, on the database —
holds one thread, never a whole process, so one connection cannot block everyone else; request
heads are read off-thread, under a deadline and a per-peer cap (`gateway/http/worker.py`), so
a slow head holds no thread at all. Each worker process builds its own app (engine, pool) after
the fork.
"""

from __future__ import annotations

import argparse
import os
import sys

from gateway import config as config_module
from gateway.http import worker


def run_gunicorn(fds: list[int], workers: int) -> None:
    from gunicorn.app.base import BaseApplication

    from gateway.http.forwarded import gunicorn_allow_list

    config = config_module.load(os.environ["GATEWAY_CONFIG"])

    class GatewayApplication(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", [f"fd://{fd}" for fd in fds])  # public, then [admin] bind
            self.cfg.set("workers", workers)
            # gthread, reading request heads off-thread under a deadline (gateway/http/worker.py)
            self.cfg.set("worker_class", "gateway.http.worker.GuardedThreadWorker")
            self.cfg.set("threads", config.server.threads)
            self.cfg.set("accesslog", None)
            self.cfg.set("control_socket_disable", True)  # several gateways may share a host
            self.cfg.set("timeout", 60)
            self.cfg.set("graceful_timeout", 30)
            self.cfg.set("keepalive", 5)
            # bodies are bounded by [limits]; headers as rudder-server allows
            self.cfg.set("limit_request_field_size", 65536)
            # X-Forwarded-Proto (https: Secure cookies, settings URLs) only from these peers
            self.cfg.set("forwarded_allow_ips", gunicorn_allow_list(config.server.trusted_proxies))
            self.cfg.set("child_exit", _metrics_child_exit)
            if config.server.certfile:  # TLS served here (gateway/http/worker.py reads it)
                self.cfg.set("certfile", config.server.certfile)
                self.cfg.set("keyfile", config.server.keyfile or None)

        def load(self):
            from gateway import create_app

            return create_app(config_module.load(os.environ["GATEWAY_CONFIG"]))

    worker.configure(config.server.header_timeout_seconds,
                     config.server.max_connections_per_peer, config.server.trusted_proxies)
    GatewayApplication().run()


def _metrics_child_exit(_server, worker) -> None:
    """A gunicorn worker ended: fold its live gauges away (its counters stay summed)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway-http", description=__doc__)
    parser.add_argument("--fd", type=int, action="append", required=True,
                        help="a listening socket (repeated: the public one, then the admin one)")
    parser.add_argument("--workers", type=int, required=True)
    args = parser.parse_args(argv)
    run_gunicorn(args.fd, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
