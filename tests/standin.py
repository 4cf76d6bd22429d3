"""A real local HTTP server standing in for a destination API: it records every request and
answers from a script (status, headers, body, delay), then with 200 once the script runs out."""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Answer:
    status: int = 200
    body: Any = field(default_factory=lambda: {"ok": True})
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class StandIn:
    def __init__(self, port: int = 0) -> None:
        self.requests: list[Received] = []
        self.script: list[Answer] = []
        self.answer_for: Callable[[Received], Answer | None] | None = None
        self.lock = threading.Lock()
        handler = self._handler()
        self.server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # a short poll: shutdown() waits for the loop's next look, 0.5 s by default, which
        # was most of the fast tests' teardown
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # headers and body go out as two writes: with Nagle on, each keep-alive answer
            # would wait ~40 ms for the client's delayed ACK
            disable_nagle_algorithm = True

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if len(body) < length:  # the client died mid-request (a killed worker sends
                    self.close_connection = True  # its headers and body as two writes): a
                    return  # real destination never sees a truncated request either
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                received = Received(self.command, self.path, dict(self.headers), body)
                with stand_in.lock:
                    stand_in.requests.append(received)
                    answer = (stand_in.answer_for(received) if stand_in.answer_for else None) \
                        or (stand_in.script.pop(0) if stand_in.script else Answer())
                time.sleep(answer.delay)
                payload = json.dumps(answer.body).encode()
                self.send_response(answer.status)
                for name, value in {"Content-Type": "application/json", **answer.headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Hanging:
    """A destination that accepts connections, takes the request and never answers, until
    `release()` (or `close()`) drops every connection it holds. With `hang` False it drops
    each connection as soon as it is accepted (a destination that fails fast)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.held: list[socket.socket] = []
        self.accepted = 0
        self.hang = True
        self.lock = threading.Lock()
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                connection, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            with self.lock:
                self.accepted += 1
                if self.hang:
                    self.held.append(connection)
                    continue
            connection.close()

    def holding(self) -> int:
        with self.lock:
            return len(self.held)

    def release(self) -> None:
        """Drop every connection held so far: the clients waiting on them see it closed."""
        with self.lock:
            held, self.held = self.held, []
        for connection in held:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    def close(self) -> None:
        self.closed.set()
        self.thread.join(5)
        self.sock.close()
        self.release()
