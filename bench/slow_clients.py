"""Slow-client benchmark: single `track` latency alone, then beside connections that stall or
trickle their bodies, then beside connections that trickle their request *heads*, against the
same `gateway serve` (SQLite, ingest only), side by side.

    .venv/bin/python bench/slow_clients.py [--seconds N] [--slow 50] [--heads 500] [--workers 2]

Slow bodies: connections announce a 1,000-byte body and send 10 bytes; half then send nothing,
half one byte every 200 ms. Each is cut off at the body deadline (408) and replaced at once, so
the server always has `--slow` of them. Target: p99 of the other clients < 100 ms, and
every slow connection answered 408 at the deadline, not after gunicorn's 60 s worker timeout.

Slow heads: `--heads` connections from one other peer address (127.0.0.2) each send a
request line, then one header line every `--head-every` seconds, never finishing the head; each
one answered or refused is replaced at once. Target: p99 of the other clients < 100 ms and
`/health` (probed every 0.5 s, 5 s timeout) answering every probe.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.ingest import ADMIN_TOKEN, tree_cpu_seconds  # noqa: E402

WRITE_KEY = "wk_bench"


def write_config(folder: Path, deadline: int) -> Path:
    path = folder / "gateway.toml"
    path.write_text(f'database_url = "sqlite:///{folder / "gateway.db"}"\n'
                    f'admin_token = "{ADMIN_TOKEN}"\n'
                    f"[server]\nbody_timeout_seconds = {deadline}\n"
                    f"header_timeout_seconds = {deadline}\n"
                    f'[[sources]]\nname = "web"\nwrite_key = "{WRITE_KEY}"\n')
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SlowCrowd:
    """`size` slow connections at all times; counts the answers they get and when."""

    def __init__(self, port: int, size: int) -> None:
        self.port = port
        self.size = size
        self.stop = threading.Event()
        self.answers: dict[int, int] = {}
        self.held: list[float] = []
        self.lock = threading.Lock()

    def start(self) -> None:
        for n in range(self.size):
            threading.Thread(target=self._one, args=(n % 2 == 1,), daemon=True).start()

    def _one(self, trickle: bool) -> None:
        head = (b"POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
                b"Content-Type: application/json\r\n\r\n{\"userId\":")
        while not self.stop.is_set():
            began = time.monotonic()
            try:
                with socket.create_connection(("127.0.0.1", self.port)) as sock:
                    sock.sendall(head)
                    sock.settimeout(0.2 if trickle else 90)
                    status = self._wait_answer(sock, trickle)
            except OSError:
                status = 0
            with self.lock:
                self.answers[status] = self.answers.get(status, 0) + 1
                self.held.append(time.monotonic() - began)

    def _wait_answer(self, sock: socket.socket, trickle: bool) -> int:
        while not self.stop.is_set():
            try:
                line = sock.recv(4096).split(b"\r\n", 1)[0].split()
                return int(line[1]) if len(line) > 1 else 0
            except TimeoutError:
                if trickle:
                    sock.send(b" ")
        return -1


class HeadCrowd:
    """`size` connections from one peer that never finish their request head; one thread
    keeps them all (a selector), replacing each that is answered or refused."""

    ATTACKER = "127.0.0.2"

    def __init__(self, port: int, size: int, every: float) -> None:
        self.port = port
        self.size = size
        self.every = every
        self.stop = threading.Event()
        self.answers: dict[str, int] = {}
        self.held: list[float] = []

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def _open(self, selector: selectors.BaseSelector) -> None:
        sock = socket.socket()
        try:
            sock.bind((self.ATTACKER, 0))
            sock.connect(("127.0.0.1", self.port))
            sock.sendall(b"POST /v1/track HTTP/1.1\r\nHost: x\r\n")
        except OSError:
            sock.close()
            self._count("connect failed", 0.0)
            return
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, time.monotonic())

    def _count(self, answer: str, held: float) -> None:
        self.answers[answer] = self.answers.get(answer, 0) + 1
        self.held.append(held)

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        for _ in range(self.size):
            self._open(selector)
        next_drip = time.monotonic() + self.every
        n = 0
        reopen: deque[float] = deque()
        while not self.stop.is_set():
            answered = 0
            for key, _ in selector.select(timeout=0.1):
                try:
                    data = key.fileobj.recv(4096)
                except OSError:
                    data = b""
                parts = data.split(b"\r\n", 1)[0].split()
                self._count(parts[1].decode() if len(parts) > 1 else "closed",
                            time.monotonic() - key.data)
                selector.unregister(key.fileobj)
                key.fileobj.close()
                answered += 1
            # each answered or refused connection comes back 0.1 s later: the crowd stays
            # `size` strong without turning into a connection flood (a firewall's job)
            reopen.extend([time.monotonic() + 0.1] * answered)
            while reopen and reopen[0] <= time.monotonic():
                reopen.popleft()
                self._open(selector)
            if time.monotonic() >= next_drip:
                n += 1
                next_drip += self.every
                for key in list(selector.get_map().values()):
                    with contextlib.suppress(OSError):
                        key.fileobj.send(f"X-Trickle-{n}: {n}\r\n".encode())
        for key in list(selector.get_map().values()):
            key.fileobj.close()


class HealthProbe:
    """`GET /health` every 0.5 s with a 5 s timeout: how many of the probes were answered 200."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = threading.Event()
        self.sent = 0
        self.ok = 0

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self.stop.wait(0.5):
            self.sent += 1
            with contextlib.suppress(requests.RequestException):
                self.ok += requests.get(self.url + "/health", timeout=5).status_code == 200


def latencies(url: str, seconds: float) -> list[float]:
    session = requests.Session()
    out: list[float] = []
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
        began = time.perf_counter()
        response = session.post(url + "/v1/track", auth=(WRITE_KEY, ""), timeout=120,
                                json={"userId": f"u{n % 500}", "event": "Bench"})
        out.append((time.perf_counter() - began) * 1000)
        assert response.status_code == 200, response.text
    return sorted(out)


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(len(values) * q))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--slow", type=int, default=50, help="connections with slow bodies")
    parser.add_argument("--heads", type=int, default=500, help="connections with slow heads")
    parser.add_argument("--head-every", type=float, default=7.0,
                        help="seconds between the slow heads' header lines")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--deadline", type=int, default=10,
                        help="[server] body_timeout_seconds and header_timeout_seconds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        config = write_config(Path(folder), args.deadline)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "--config", str(config), "serve", "--bind",
             f"127.0.0.1:{port}", "--workers", str(args.workers), "--no-worker"], cwd=folder,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=os.environ | {"PYTHONPATH": str(REPO)})
        try:
            wait_healthy(url)
            alone = measure(server.pid, url, args.seconds)
            bodies = SlowCrowd(port, args.slow)
            bodies.start()
            time.sleep(1.0)
            beside_bodies = measure(server.pid, url, args.seconds)
            time.sleep(args.deadline + 1)  # let every slow connection meet its deadline once
            bodies.stop.set()
            heads = HeadCrowd(port, args.heads, args.head_every)
            heads.start()
            probe = HealthProbe(url)
            probe.start()
            time.sleep(1.0)
            beside_heads = measure(server.pid, url, max(args.seconds, args.deadline + 2))
            probe.stop.set()
            heads.stop.set()
        finally:
            server.terminate()
            server.wait(timeout=60)
    print(f"single track, {args.workers} worker process(es), body and head deadline "
          f"{args.deadline} s")
    columns = (("alone", alone), (f"beside {args.slow} slow bodies", beside_bodies),
               (f"beside {args.heads} slow heads", beside_heads))
    print(f"  {'':24}" + "".join(f"| {name:>26} " for name, _ in columns))
    for name, q in (("p50 ms", 0.5), ("p99 ms", 0.99)):
        print(f"  {name:24}" + "".join(f"| {pct(m[0], q):26.1f} " for _, m in columns))
    print(f"  {'requests':24}" + "".join(f"| {len(m[0]):26,} " for _, m in columns))
    print(f"  {'CPU s per 1,000 requests':24}"
          + "".join(f"| {1000 * m[1] / len(m[0]):26.2f} " for _, m in columns))
    for name, crowd in (("slow bodies", bodies), ("slow heads", heads)):
        held = sorted(crowd.held)
        if held:  # -1: still being read when the benchmark stopped
            print(f"  {name} answered: {dict(sorted(crowd.answers.items()))}; held "
                  f"p50 {pct(held, 0.5):.1f} s, max {held[-1]:.1f} s")
    print(f"  /health beside slow heads: {probe.ok} of {probe.sent} probes answered 200")
    worst = max(pct(beside_bodies[0], 0.99), pct(beside_heads[0], 0.99))
    verdict = "met" if worst < 100 and probe.ok == probe.sent else "MISSED"
    print(f"  target p99 beside slow clients < 100 ms, every health probe answered: {verdict}")
    return 0


def wait_healthy(url: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(url + "/health", timeout=1).ok:
                return
        except requests.RequestException:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def measure(pid: int, url: str, seconds: float) -> tuple[list[float], float]:
    """Sorted latencies (ms) of `seconds` of single tracks, and the server's CPU seconds."""
    cpu_before = tree_cpu_seconds(pid)
    out = latencies(url, seconds)
    return out, tree_cpu_seconds(pid) - cpu_before


if __name__ == "__main__":
    sys.exit(main())
