"""Slow-client benchmark: single `track` latency alone, then beside 50 connections that stall or
trickle their bodies, against the same `gateway serve` (SQLite, ingest only), side by side.

    .venv/bin/python bench/slow_clients.py [--seconds N] [--slow 50] [--workers 2]

The slow connections announce a 1,000-byte body and send 10 bytes; half then send nothing, half
one byte every 200 ms. Each is cut off at the body deadline (408) and replaced at once, so the
server always has `--slow` of them. Target (issue 9): p99 of the other clients < 100 ms, and
every slow connection answered 408 at the deadline, not after gunicorn's 60 s worker timeout.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
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
    parser.add_argument("--slow", type=int, default=50)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--deadline", type=int, default=10, help="[server] body_timeout_seconds")
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
            deadline = time.monotonic() + 30
            while True:
                try:
                    if requests.get(url + "/health", timeout=1).ok:
                        break
                except requests.RequestException:
                    if time.monotonic() > deadline:
                        raise
                time.sleep(0.2)
            cpu_before = tree_cpu_seconds(server.pid)
            alone = latencies(url, args.seconds)
            cpu_alone = tree_cpu_seconds(server.pid) - cpu_before
            crowd = SlowCrowd(port, args.slow)
            crowd.start()
            time.sleep(1.0)
            cpu_before = tree_cpu_seconds(server.pid)
            beside = latencies(url, args.seconds)
            cpu_beside = tree_cpu_seconds(server.pid) - cpu_before
            time.sleep(args.deadline + 1)  # let every slow connection meet its deadline once
            crowd.stop.set()
        finally:
            server.terminate()
            server.wait(timeout=60)
    print(f"single track, {args.workers} worker process(es), body deadline {args.deadline} s")
    print(f"  {'':24}| {'alone':>9} | {f'beside {args.slow} slow':>16}")
    for name, q in (("p50 ms", 0.5), ("p99 ms", 0.99)):
        print(f"  {name:24}| {pct(alone, q):9.1f} | {pct(beside, q):16.1f}")
    print(f"  {'requests':24}| {len(alone):9,} | {len(beside):16,}")
    print(f"  {'CPU s per 1,000 requests':24}| {1000 * cpu_alone / len(alone):9.2f} | "
          f"{1000 * cpu_beside / len(beside):16.2f}")
    held = sorted(crowd.held)
    if held:  # -1: still being read when the benchmark stopped
        print(f"  slow connections answered: {dict(sorted(crowd.answers.items()))}; held "
              f"p50 {pct(held, 0.5):.1f} s, max {held[-1]:.1f} s")
    verdict = "met" if pct(beside, 0.99) < 100 else "MISSED"
    print(f"  target p99 beside slow clients < 100 ms: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
