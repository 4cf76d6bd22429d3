"""A deadline for reading a request body, so no client can hold a server thread hostage.

A client that announces a `Content-Length` and then trickles or stalls its body would keep a
thread blocked in `recv()` until gunicorn's 60 s worker timeout. A per-`recv` socket timeout is
not enough (a trickle of one byte a second never trips it), so one reaper thread per process
watches the bodies being read and, at the deadline, shuts down the *read* side of the late
client's socket: the blocked `recv()` returns at once, the request is answered 408, and the
write side stays open for that answer. Over TLS (`[server] certfile`) the same holds: the
cut looks to OpenSSL like an unexpected EOF, which the server context ignores
(`gateway/http/tls.py`), so the 408 is still written encrypted.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from dataclasses import dataclass, field

TICK = 0.1  # seconds between the reaper's looks: the deadline's precision


@dataclass(eq=False)
class BodyRead:
    """One request body being read: expired once the reaper cut it off."""

    sock: socket.socket
    deadline: float
    expired: bool = False
    done: bool = field(default=False, repr=False)


class BodyDeadlines:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reads: set[BodyRead] = set()
        self._owner_pid: int | None = None  # the reaper thread does not survive a fork

    def start(self, sock: socket.socket, seconds: float) -> BodyRead:
        read = BodyRead(sock, time.monotonic() + seconds)
        with self._lock:
            self._reads.add(read)
            if self._owner_pid != os.getpid():
                self._owner_pid = os.getpid()
                threading.Thread(target=self._reap, name="body-deadline", daemon=True).start()
        return read

    def finish(self, read: BodyRead) -> None:
        with self._lock:
            read.done = True
            self._reads.discard(read)

    def _reap(self) -> None:
        while True:
            time.sleep(TICK)
            now = time.monotonic()
            with self._lock:
                late = [r for r in self._reads if r.deadline <= now]
                for read in late:
                    self._reads.discard(read)
                    read.expired = True
            for read in late:
                with contextlib.suppress(OSError):  # the client is gone already
                    # the plain socket's shutdown, also under TLS: SSLSocket.shutdown would
                    # drop the TLS layer, and the 408 would go out unencrypted
                    socket.socket.shutdown(read.sock, socket.SHUT_RD)


DEADLINES = BodyDeadlines()


def init_app(app, seconds: float) -> None:
    """Every request that carries a body gets the deadline (gunicorn only: it exposes the
    client socket; the test client has none and needs none)."""
    from flask import g, request

    @app.before_request
    def _start() -> None:
        sock = request.environ.get("gunicorn.socket")
        if sock is not None and request.method in ("POST", "PUT", "PATCH"):
            g.body_read = DEADLINES.start(sock, seconds)

    @app.teardown_request
    def _finish(_exc: BaseException | None) -> None:
        read = g.pop("body_read", None)
        if read is not None:
            DEADLINES.finish(read)


def body_expired() -> bool:
    """Was this request's body cut off by the deadline?"""
    from flask import g

    read = g.get("body_read")
    return read is not None and read.expired
