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

With `[server] certfile` the worker serves TLS itself (`gateway/http/tls.py`), and the head is
read the same way, decrypted: the accepted socket is wrapped non-blocking, the handshake is
driven here (want-read / want-write → wait for that event), then the head is read until OpenSSL
needs more bytes from the network (decrypted bytes may sit in its buffer while the socket is
not readable), all under the head deadline, and the wrapped socket goes to the thread as is.
A client that never finishes its handshake is closed at the deadline, like one that sends
nothing.

This subclasses gunicorn 27's `ThreadWorker` (its `enqueue_req` is the one door to the thread
pool, for new, kept-alive and pipelined connections alike), hence the pinned major version.
"""

from __future__ import annotations

import contextlib
import errno
import json
import selectors
import socket
import ssl
import time
from collections import Counter
from functools import partial

from gunicorn import http
from gunicorn.workers.gthread import TConn, ThreadWorker

from gateway.http import shutdown, tls
from gateway.http.peers import PeerMatcher

MAX_HEAD_BYTES = 128 * 1024  # request line + headers; a real SDK sends a few KB
READ_SIZE = 64 * 1024


class ConnectionLimits:
    """Set by `gateway.cli.httpserver` before gunicorn forks its workers (inherited by each)."""

    header_timeout_seconds: float = 10.0
    max_connections_per_peer: int = 128
    exempt: PeerMatcher = PeerMatcher(())


def configure(header_timeout_seconds: float, max_connections_per_peer: int,
              trusted_proxies: tuple[str, ...]) -> None:
    ConnectionLimits.header_timeout_seconds = header_timeout_seconds
    ConnectionLimits.max_connections_per_peer = max_connections_per_peer
    ConnectionLimits.exempt = PeerMatcher(trusted_proxies)


def _answer(status: str, code: str, message: str, extra: str = "") -> bytes:
    """A whole answer in the API's error shape (`gateway/http/errors.py`), written raw."""
    body = json.dumps({"code": code, "message": message})
    return (f"HTTP/1.1 {status}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"{extra}Content-Length: {len(body)}\r\n\r\n{body}").encode()


TIMED_OUT = _answer("408 Request Timeout", "request_timeout",
                    "the request head was not received in time")
TOO_LARGE = _answer("431 Request Header Fields Too Large", "headers_too_large",
                    f"the request head is larger than {MAX_HEAD_BYTES} bytes")
PLAIN_HTTP = _answer("400 Bad Request", "tls_required",
                     "this port serves HTTPS only: use an https:// address")
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
        self.tls = False  # wrapped by the worker: the event loop drives its handshake
        self.handshaking = False
        self.waiting_for = selectors.EVENT_READ
        self._on_close = on_close

    def init(self) -> None:
        """Give the head read by the event loop to the parser gunicorn creates here. A TLS
        socket is wrapped and its handshake done already: gunicorn must not wrap it again."""
        fresh = self.parser is None
        if not self.tls:
            super().init()
        elif not self.initialized:
            self.initialized = True
            self.sock.setblocking(True)
            if self.parser is None:
                self.parser = http.get_parser(self.cfg, self.sock, self.client)
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
        self.tls_context: ssl.SSLContext | None = None

    def handle_exit(self, sig, frame) -> None:
        """SIGTERM: long responses end now rather than hold the graceful stop (shutdown.py).
        Set from the event loop, not here: a second SIGTERM landing inside Event.set would
        wait for ever on the lock the first one holds (a queue write is signal-safe)."""
        if self.alive:
            self.method_queue.defer(shutdown.stopping.set)
        super().handle_exit(sig, frame)

    def init_process(self) -> None:
        """Build the TLS context once per process (gunicorn would load the files for every
        connection); `gateway serve` checked them before starting."""
        if self.cfg.is_ssl:
            self.tls_context = tls.server_context(self.cfg)
        super().init_process()

    def accept(self, listener) -> None:
        try:
            client_sock, client_addr = listener.accept()
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        conn = GuardedConn(self.cfg, client_sock, client_addr, listener.getsockname(),
                           self._forget)
        if conn.peer and not ConnectionLimits.exempt.matches(conn.peer):
            if self.open_per_peer[conn.peer] >= ConnectionLimits.max_connections_per_peer:
                # over TLS an answer would need a handshake first: closed without one
                if self.tls_context is None:
                    self._refuse(client_sock, TOO_MANY)
                else:
                    with contextlib.suppress(OSError):
                        client_sock.close()
                return
            self.open_per_peer[conn.peer] += 1
        else:
            conn.peer = ""  # not counted
        if self.tls_context is not None:
            try:
                conn.sock = self.tls_context.wrap_socket(
                    client_sock, server_side=True, do_handshake_on_connect=False,
                    suppress_ragged_eofs=self.cfg.suppress_ragged_eofs)
            except OSError:  # the client is gone already
                conn.close()
                return
            conn.tls = conn.handshaking = True
        self.nr_conns += 1
        conn.head_deadline = time.monotonic() + ConnectionLimits.header_timeout_seconds
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
            conn.head_deadline = time.monotonic() + ConnectionLimits.header_timeout_seconds
        conn.sock.setblocking(False)
        self.reading_heads[conn] = None
        conn.waiting_for = selectors.EVENT_READ
        self.poller.register(conn.sock, selectors.EVENT_READ,
                             partial(self._on_head_readable, conn))
        if conn.tls:  # the handshake starts, or decrypted bytes may be buffered already
            self._tls_progress(conn)
        elif conn.head:
            self._head_progress(conn)

    def finish_request(self, conn: GuardedConn, fs) -> None:
        """A kept-alive TLS connection whose next request is decrypted already (in OpenSSL's
        buffer, so the socket will not turn readable) goes straight back to head reading."""
        if (conn.tls and not fs.cancelled() and fs.exception() is None
                and fs.result() is True and _pending(conn.sock)):
            self.enqueue_req(conn)
            return
        super().finish_request(conn, fs)

    def _on_head_readable(self, conn: GuardedConn, _sock) -> None:
        if conn.tls:
            self._tls_progress(conn)
            return
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

    def _tls_progress(self, conn: GuardedConn) -> None:
        """Drive the handshake, then read decrypted bytes until the head is complete (or too
        large) or OpenSSL needs more from the network; never blocks."""
        try:
            if conn.handshaking:
                conn.sock.do_handshake()
                conn.handshaking = False
            while not head_complete(conn.head) and len(conn.head) <= MAX_HEAD_BYTES:
                data = conn.sock.recv(READ_SIZE)
                if not data:  # the client went away
                    self._drop(conn)
                    return
                conn.head += data
        except ssl.SSLWantReadError:
            self._wait_for(conn, selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._wait_for(conn, selectors.EVENT_WRITE)
            return
        except ssl.SSLError as error:
            if conn.handshaking and error.reason == "HTTP_REQUEST":  # http:// on this port
                with contextlib.suppress(OSError):
                    socket.socket.send(conn.sock, PLAIN_HTTP)  # plain, past the TLS layer
            self._drop(conn)
            return
        except OSError:  # reset
            self._drop(conn)
            return
        self._head_progress(conn)

    def _wait_for(self, conn: GuardedConn, event: int) -> None:
        if conn.waiting_for != event:
            conn.waiting_for = event
            self.poller.modify(conn.sock, event, partial(self._on_head_readable, conn))

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


def _pending(sock: socket.socket) -> bool:
    """Decrypted bytes waiting in a TLS socket's buffer."""
    try:
        return isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
    except (OSError, ValueError):
        return False
