"""No client can hold ingest hostage: connections that stall or trickle their bodies are cut
off at the body deadline with a 408, and meanwhile everybody else is answered at once (threaded
workers: a slow body holds one thread, never the process). Against a real `gateway serve`."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import WRITE_KEY, LiveGateway, base_config
from tests.helpers import basic

pytestmark = pytest.mark.slow  # `gateway serve`, and clients that trickle for seconds

SLOW = 50
DEADLINE = 2


def slow_request(port: int, trickle: bool, stop: threading.Event) -> socket.socket:
    """Announce a 1,000-byte body, send 10 bytes, then nothing (or one byte now and then)."""
    sock = socket.create_connection(("127.0.0.1", port))
    head = (b"POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n")
    sock.sendall(head + b'{"userId":')
    if trickle:
        def drip() -> None:
            while not stop.is_set():
                try:
                    sock.send(b" ")
                except OSError:
                    return
                time.sleep(0.2)
        threading.Thread(target=drip, daemon=True).start()
    return sock


def status_of(sock: socket.socket, timeout: float) -> int | None:
    sock.settimeout(timeout)
    try:
        line = sock.recv(4096).split(b"\r\n", 1)[0]
    except OSError:
        return None
    parts = line.split()
    return int(parts[1]) if len(parts) > 1 else None


def test_stalled_and_trickling_bodies_get_408_and_block_nobody(tmp_path: Path) -> None:
    raw = base_config(f"sqlite:///{tmp_path / 'g.db'}",
                      server={"body_timeout_seconds": DEADLINE})
    gateway = LiveGateway(tmp_path, raw, workers=1)
    stop = threading.Event()
    try:
        started = time.monotonic()
        slow = [slow_request(gateway.port, trickle=n % 2 == 1, stop=stop) for n in range(SLOW)]
        session = requests.Session()
        latencies = []
        for n in range(100):
            begun = time.perf_counter()
            response = session.post(gateway.url + "/v1/track", headers=basic(WRITE_KEY),
                                    json={"userId": f"u{n}", "event": "e"}, timeout=30)
            latencies.append(time.perf_counter() - begun)
            assert response.status_code == 200
        latencies.sort()
        # generous bound for a shared CI machine; bench/slow_clients.py measures the real p99
        assert latencies[98] < 1.0, latencies[-5:]

        statuses = [status_of(sock, timeout=DEADLINE + 10) for sock in slow]
        waited = time.monotonic() - started
        assert statuses == [408] * SLOW
        assert waited < DEADLINE + 10  # nobody waited for gunicorn's 60 s worker timeout
    finally:
        stop.set()
        gateway.stop()


ATTACKER = "127.0.0.2"  # one peer address, other than the honest clients' 127.0.0.1
TRICKLERS = 500
HEAD_DEADLINE = 3
PER_PEER = 40


class HeadTricklers:
    """`count` connections from one peer, each sending a request line and then one header line
    every `every` seconds, never finishing the head: what each was answered, and when."""

    def __init__(self, port: int, count: int, every: float) -> None:
        self.stop = threading.Event()
        self.answers: list[tuple[bytes, float]] = []
        self.lock = threading.Lock()
        self.sockets = []
        for _ in range(count):
            sock = socket.socket()
            sock.bind((ATTACKER, 0))
            sock.settimeout(5)
            sock.connect(("127.0.0.1", port))
            sock.sendall(b"POST /v1/track HTTP/1.1\r\nHost: x\r\n")
            self.sockets.append((sock, time.monotonic()))
        self.thread = threading.Thread(target=self._drip, args=(every,), daemon=True)
        self.thread.start()

    def _drip(self, every: float) -> None:
        live = list(self.sockets)
        n = 0
        while live and not self.stop.wait(every):
            n += 1
            for sock, opened in list(live):
                try:
                    sock.setblocking(False)
                    answer = sock.recv(4096)  # an answer, or the server closed it
                except BlockingIOError:
                    try:
                        sock.send(f"X-Trickle-{n}: {n}\r\n".encode())
                        continue
                    except OSError:
                        answer = b""
                except OSError:
                    answer = b""
                live.remove((sock, opened))
                with self.lock:
                    self.answers.append((answer.split(b"\r\n", 1)[0], time.monotonic() - opened))
                sock.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        for sock, _ in self.sockets:
            sock.close()


def test_trickling_request_heads_hold_no_thread_and_meet_their_deadline(tmp_path: Path) -> None:
    """500 connections from one peer that never finish their request head: the others still
    get `track` and `/health` answered at once; past the per-peer cap connections are refused
    at once (429 or closed), the rest are answered 408 at the head deadline."""
    raw = base_config(f"sqlite:///{tmp_path / 'g.db'}", destinations=[],  # health: no worker
                      server={"header_timeout_seconds": HEAD_DEADLINE, "threads": 4,
                              "max_connections_per_peer": PER_PEER})
    gateway = LiveGateway(tmp_path, raw, workers=1)
    crowd = None
    try:
        crowd = HeadTricklers(gateway.port, TRICKLERS, every=0.5)
        session = requests.Session()
        latencies = []
        health = []
        for n in range(60):
            begun = time.perf_counter()
            response = session.post(gateway.url + "/v1/track", headers=basic(WRITE_KEY),
                                    json={"userId": f"u{n}", "event": "e"}, timeout=30)
            latencies.append(time.perf_counter() - begun)
            assert response.status_code == 200
            if n % 10 == 0:
                health.append(requests.get(gateway.url + "/health", timeout=5).status_code)
            time.sleep(0.05)
        latencies.sort()
        assert latencies[-2] < 1.0, latencies[-5:]  # bench/slow_clients.py measures the real p99
        assert health == [200] * len(health)

        deadline = time.monotonic() + HEAD_DEADLINE + 10
        while len(crowd.answers) < TRICKLERS and time.monotonic() < deadline:
            time.sleep(0.2)
        answers = list(crowd.answers)
        assert len(answers) == TRICKLERS, f"{len(answers)} of {TRICKLERS} answered"
        timed_out = [held for status, held in answers if status.startswith(b"HTTP/1.1 408")]
        refused = [held for status, held in answers if not status.startswith(b"HTTP/1.1 408")]
        assert len(timed_out) == PER_PEER, answers[:5]
        assert all(HEAD_DEADLINE - 1 <= held < HEAD_DEADLINE + 3 for held in timed_out)
        assert len(refused) == TRICKLERS - PER_PEER
        assert all(status in (b"", b"HTTP/1.1 429 Too Many Requests")
                   for status, _ in answers if not status.startswith(b"HTTP/1.1 408"))
    finally:
        if crowd is not None:
            crowd.close()
        gateway.stop()


def test_heads_in_pieces_pipelined_and_oversized(tmp_path: Path) -> None:
    """Reading heads off-thread keeps HTTP/1.1 whole: a head sent in pieces, two requests
    pipelined in one packet, and a head past the size cap (431, closed)."""
    gateway = LiveGateway(tmp_path, base_config(f"sqlite:///{tmp_path / 'g.db'}"), workers=1)
    try:
        body = b'{"userId":"u1","event":"e"}'
        auth = basic(WRITE_KEY)["Authorization"].encode()
        request = (b"POST /v1/track HTTP/1.1\r\nHost: x\r\nAuthorization: " + auth +
                   b"\r\nContent-Type: application/json\r\nContent-Length: "
                   + str(len(body)).encode() + b"\r\n\r\n" + body)
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
            for start in range(0, len(request), 7):
                sock.sendall(request[start:start + 7])
                time.sleep(0.01)
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
            sock.sendall(request + request)  # pipelined on the kept-alive connection
            answers = b""
            while answers.count(b"HTTP/1.1 200") < 2:
                chunk = sock.recv(4096)
                assert chunk, answers
                answers += chunk
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            try:
                for n in range(40):
                    sock.sendall(b"X-Big-%d: %s\r\n" % (n, b"a" * 4000))
            except OSError:
                pass  # closed under us: the answer is already waiting
            assert sock.recv(4096).startswith(b"HTTP/1.1 431")
    finally:
        gateway.stop()
