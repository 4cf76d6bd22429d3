"""gunicorn's threaded worker, made safe for clients that send their request head slowly.

gunicorn's gthread worker hands a connection to a thread as soon as its first byte arrives, and
the thread then blocks in `recv()` until the request line and every header are in: a client that
sends one header line every few seconds holds that thread for as long as it likes, and a few
hundred such sockets stop the whole gateway (tracking, admin, console and `/health`), with no
credential needed. This worker reads the request head in the worker's event loop instead,
without blocking: a connection reaches a thread only once its head is complete, so trickling
heads hold no thread at all, only a socket and a buffer, and both are bounded:

- **a deadline for the head** (`[server] header_timeout_seconds`): a head not complete by then
  is answered 408 and closed (a connection that sent nothing is closed quietly);
- **a cap on the head's size** (`MAX_HEAD_BYTES`): past it, 431 and closed;
- **a cap on open connections per peer address** (`[server] max_connections_per_peer`, per
  worker process): past it a new connection is answered 429 with `Retry-After` and closed.
  Trusted proxies (`[server] trusted_proxies`) are exempt: all their clients share their address.

The body has its own deadline once the head is in (`gateway/http/deadline.py`).

This subclasses gunicorn 27's `ThreadWorker` (its `enqueue_req` is the one door to the thread
pool, for new, kept-alive and pipelined connections alike), hence the pinned major version.
"""

from __future__ import annotations

import contextlib
import errno
import json
import selectors
import socket
import time
from collections import Counter
from functools import partial

from gunicorn.workers.gthread import TConn, ThreadWorker

from gateway.http.peers import PeerMatcher

MAX_HEAD_BYTES = 128 * 1024  # request line + headers; a real SDK sends a few KB
READ_SIZE = 64 * 1024


class Limits:
    """Set by `gateway.httpserver` before gunicorn forks its workers (inherited by each)."""

    header_timeout_seconds: float = 10.0
    max_connections_per_peer: int = 128
    exempt: PeerMatcher = PeerMatcher(())


def configure(header_timeout_seconds: float, max_connections_per_peer: int,
              trusted_proxies: tuple[str, ...]) -> None:
    Limits.header_timeout_seconds = header_timeout_seconds
    Limits.max_connections_per_peer = max_connections_per_peer
    Limits.exempt = PeerMatcher(trusted_proxies)


def _answer(status: str, code: str, message: str, extra: str = "") -> bytes:
    """A whole answer in the API's error shape (`gateway/http/errors.py`), written raw."""
    body = json.dumps({"code": code, "message": message})
    return (f"HTTP/1.1 {status}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"{extra}Content-Length: {len(body)}\r\n\r\n{body}").encode()


TIMED_OUT = _answer("408 Request Timeout", "request_timeout",
                    "the request head was not received in time")
TOO_LARGE = _answer("431 Request Header Fields Too Large", "headers_too_large",
                    f"the request head is larger than {MAX_HEAD_BYTES} bytes")
TOO_MANY = _answer("429 Too Many Requests", "too_many_connections",
                   "too many open connections from this address", "Retry-After: 1\r\n")


def head_complete(buffer: bytes | bytearray) -> bool:
    """Does the buffer hold a whole request head (its blank line)? Bare LF is let through to
    gunicorn's parser, which answers it."""
    return b"\n\r\n" in buffer or b"\n\n" in buffer


class GuardedConn(TConn):
    """A connection that remembers its peer, the head read so far and when the head is due."""

    def __init__(self, cfg, sock, client, server, on_close) -> None:
        super().__init__(cfg, sock, client, server)
        self.peer = client[0] if isinstance(client, tuple) and client else ""
        self.head = bytearray()
        self.head_deadline = 0.0
        self.head_ready = False
        self._on_close = on_close

    def init(self) -> None:
        """Give the head read by the event loop to the parser gunicorn creates here."""
        fresh = self.parser is None
        super().init()
        if fresh and self.head:
            self.parser.unreader.unread(bytes(self.head))
            self.head.clear()

    def close(self, graceful: bool = False) -> None:
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close(self)
        super().close(graceful)


class GuardedThreadWorker(ThreadWorker):
    """gthread with request heads read off-thread, under a deadline and per-peer cap."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.open_per_peer: Counter[str] = Counter()
        self.reading_heads: dict[GuardedConn, None] = {}  # in deadline order

    def accept(self, listener) -> None:
        try:
            client_sock, client_addr = listener.accept()
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        conn = GuardedConn(self.cfg, client_sock, client_addr, listener.getsockname(),
                           self._forget)
        if conn.peer and not Limits.exempt.matches(conn.peer):
            if self.open_per_peer[conn.peer] >= Limits.max_connections_per_peer:
                self._refuse(client_sock, TOO_MANY)
                return
            self.open_per_peer[conn.peer] += 1
        else:
            conn.peer = ""  # not counted
        self.nr_conns += 1
        conn.head_deadline = time.monotonic() + Limits.header_timeout_seconds
        self.enqueue_req(conn)

    def enqueue_req(self, conn: GuardedConn) -> None:
        """Only a connection with a complete head goes to a thread; others are read here."""
        if conn.head_ready:
            conn.head_ready = False
            conn.data_ready = True
            super().enqueue_req(conn)
            return
        if conn.parser is not None:  # kept alive: pipelined bytes may be buffered already
            conn.head[:0] = conn.parser.unreader.take_buffered()
            conn.head_deadline = time.monotonic() + Limits.header_timeout_seconds
        conn.sock.setblocking(False)
        self.reading_heads[conn] = None
        self.poller.register(conn.sock, selectors.EVENT_READ,
                             partial(self._on_head_readable, conn))
        if conn.head:
            self._head_progress(conn)

    def _on_head_readable(self, conn: GuardedConn, _sock) -> None:
        try:
            data = conn.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away
            self._drop(conn)
            return
        conn.head += data
        self._head_progress(conn)

    def _head_progress(self, conn: GuardedConn) -> None:
        if head_complete(conn.head):
            self._stop_reading(conn)
            if conn.parser is not None:
                conn.parser.unreader.unread(bytes(conn.head))
                conn.head.clear()
            conn.head_ready = True
            self.enqueue_req(conn)
        elif len(conn.head) > MAX_HEAD_BYTES:
            self._drop(conn, TOO_LARGE)

    def _stop_reading(self, conn: GuardedConn) -> None:
        self.reading_heads.pop(conn, None)
        with contextlib.suppress(OSError, KeyError, ValueError):
            self.poller.unregister(conn.sock)

    def _drop(self, conn: GuardedConn, answer: bytes | None = None) -> None:
        self._stop_reading(conn)
        if answer is not None:
            self._refuse(conn.sock, answer, close=False)
        self.nr_conns -= 1
        conn.close()

    @staticmethod
    def _refuse(sock: socket.socket, answer: bytes, close: bool = True) -> None:
        """Best effort, never blocking: the answer fits one send on a fresh socket."""
        with contextlib.suppress(OSError):
            sock.setblocking(False)
            sock.send(answer)
        if close:
            with contextlib.suppress(OSError):
                sock.close()

    def _forget(self, conn: GuardedConn) -> None:
        if conn.peer:
            self.open_per_peer[conn.peer] -= 1
            if self.open_per_peer[conn.peer] <= 0:
                del self.open_per_peer[conn.peer]

    def murder_pending(self) -> None:
        """Also close heads past their deadline (every loop turn, about once a second), and,
        once the worker is stopping, heads that have not started."""
        super().murder_pending()
        now = time.monotonic()
        for conn in list(self.reading_heads):
            if conn.head_deadline <= now or not (self.alive or conn.head):
                self._drop(conn, TIMED_OUT if conn.head else None)
            elif self.alive:
                break  # the rest are due later
