"""Which listener a request arrived on, for `[admin] bind`: the admin surface (/admin, /console,
/metrics) answers only on the admin listener and 404 on the public one.

The answer comes from the local address of the request's own connection (the socket gunicorn
puts in the WSGI environ as `gunicorn.socket`), which the kernel sets: no header a client sends
(Host, X-Forwarded-*) changes it. A server that gives no socket counts as the public listener,
so the admin surface is closed rather than open when we cannot tell.
"""

from __future__ import annotations

import functools
import re
import socket
from typing import Any

from flask import Flask, abort, request

from gateway.config import Config, is_loopback_bind, parse_bind
from gateway.http import context
from gateway.http.cors import PRIVATE_PREFIXES
from gateway.http.peers import parse_address

WILDCARDS = frozenset({"0.0.0.0", "::"})


@functools.lru_cache(maxsize=8)
def _addresses(host: str) -> frozenset[str]:
    """The addresses `host` binds to (a name may mean several; a wildcard means any)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return frozenset()
    return frozenset(_plain(info[4][0]) for info in infos)


def _plain(address: str) -> str:
    """`::ffff:127.0.0.1` → `127.0.0.1`; a zone (`fe80::1%eth0`) dropped."""
    parsed = parse_address(address)
    return str(parsed) if parsed is not None else address.partition("%")[0]


def local_address(environ: dict[str, Any]) -> tuple[str, int] | None:
    """(address, port) this request's connection was accepted on, or None when unknown."""
    sock = environ.get("gunicorn.socket")
    try:
        name = sock.getsockname() if sock is not None else None
    except OSError:
        return None
    if not isinstance(name, tuple) or len(name) < 2:
        return None  # a Unix socket, or a server that gives none
    return _plain(name[0]), int(name[1])


def arrived_on(environ: dict[str, Any], bind: str) -> bool:
    """Whether the request's connection was accepted by the listener bound to `bind`."""
    local = local_address(environ)
    if local is None:
        return False
    host, port = parse_bind(bind)
    if local[1] != port:
        return False
    addresses = _addresses(host)
    return bool(addresses & WILDCARDS) or local[0] in addresses


def is_admin_surface(path: str) -> bool:
    """/admin…, /console…, /metrics (slashes collapsed as the router would)."""
    return re.sub("/{2,}", "/", path).startswith(PRIVATE_PREFIXES)


def metrics_need_token(config: Config) -> bool:
    """[metrics] require_token, else: when the public listener is reachable from other hosts
    and the admin surface is not on a listener of its own."""
    if config.metrics.require_token is not None:
        return config.metrics.require_token
    return not config.admin.bind and not is_loopback_bind(config.server.bind)


def _gate() -> None:
    bind = context.config().admin.bind
    if bind and is_admin_surface(request.path) and not arrived_on(request.environ, bind):
        abort(404)  # the same answer as any unknown path: the public side learns nothing


def init_app(app: Flask) -> None:
    app.before_request(_gate)
