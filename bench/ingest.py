"""Ingest benchmark: a raw WSGI ceiling, a bare-store ceiling and the gateway, side by side.

    .venv/bin/python bench/ingest.py [--postgres URL] [--seconds N]
    .venv/bin/python bench/ingest.py --plan [--postgres URL]   # a 20-event tracking plan vs none

Every server runs under gunicorn through `gateway.cli.httpserver.run_gunicorn` itself (threaded
workers, one per core, access log off, control socket off), so the three differ only in the WSGI
app:

* raw: reads the body, answers 200 {"success":true};
* bare-store: reads + orjson-parses the body and executemany-inserts one `events` row per message
  into the migrated schema (no validation, no identity, no deliveries);
* gateway: `python -m gateway.cli serve` with one source and two destinations.

`--plan` runs the gateway twice instead, without and with a 20-event tracking plan (Segment's
Config API export, `additionalProperties: false`, required properties, types and enums; the
traffic fits it, as most production traffic does), and reports events/s and CPU per 1,000
events both ways, plus the in-process cost of checking one fitting and one failing message.

The load comes from other processes (threads in a spawn pool) speaking HTTP/1.1 over plain
sockets, one connection per request: the cheapest
client we can write in Python, since on a small machine it shares the cores with the server.
"""

from __future__ import annotations

import argparse
import base64
import multiprocessing
import os
import platform
import random
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.pool import Pool
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # benchmark this checkout, wherever Python was started

import orjson  # noqa: E402
from sqlalchemy import create_engine, func, insert, select, text  # noqa: E402

from gateway.store.db import make_engine, migrate, normalise_url, write_transaction  # noqa: E402
from gateway.store.models import deliveries, events  # noqa: E402

WRITE_KEY = "wk_bench"
ADMIN_TOKEN = "bench-admin-token-k3v9q2x7m4w8p6z1"  # 32+ characters: the config refuses less
SOURCE = "bench"
USERS = 1000
BATCH_SIZE = 100
TEMPLATES = 32  # distinct message mixes per client thread; messageIds are fresh per request
ID_SLOT = "MESSAGE-ID-SLOT"  # replaced by a fresh uuid4 per request
TIME_SLOT = "TIMESTAMP-SLOT"  # single calls: replaced by the send time (27 characters)
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
SUCCESS = b'{"success":true}'
SERVERS = ("raw", "bare-store", "gateway")
TIMEOUT_S = 30.0


# --------------------------------------------------------------------------------------------
# The two ceiling apps (run inside a gunicorn worker, created after fork)


def raw_app() -> Callable[..., list[bytes]]:
    """Read the body, answer success: HTTP + gunicorn + WSGI and nothing else."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        _read_body(environ)
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(SUCCESS)))])
        return [SUCCESS]

    return app


def bare_store_app(database_url: str) -> Callable[..., list[bytes]]:
    """Parse the body and insert its messages as `events` rows, nothing more."""
    engine = make_engine(database_url)
    statement = insert(events)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        body = _read_body(environ)
        if environ["REQUEST_METHOD"] == "POST":
            data = orjson.loads(body)
            path = environ.get("PATH_INFO", "")
            messages = data["batch"] if path.endswith("/batch") else [data]
            kind = path.rsplit("/", 1)[-1]
            now = datetime.now(UTC)
            rows = [{
                "source": SOURCE,
                "message_id": m["messageId"],
                "type": m.get("type") or kind,
                "event": m.get("event"),
                "user_id": m.get("userId"),
                "anonymous_id": m.get("anonymousId"),
                "timestamp": datetime.fromisoformat(m["timestamp"]),
                "received_at": now,
                "payload": orjson.dumps(m),
            } for m in messages]
            with write_transaction(engine) as connection:
                connection.execute(statement, rows)
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(SUCCESS)))])
        return [SUCCESS]

    return app


def _read_body(environ: dict[str, Any]) -> bytes:
    body: bytes = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    return body


def serve_ceiling(kind: str, config_path: str, bind: str, workers: int) -> None:
    """`bench/ingest.py _serve KIND …`: gunicorn exactly as `gateway serve` sets it up, with the
    gateway's app factory swapped for a ceiling app (workers call it after fork)."""
    import gateway
    from gateway.cli import httpserver, supervisor

    os.environ["GATEWAY_CONFIG"] = config_path

    def factory(loaded: Any) -> Callable[..., list[bytes]]:
        return raw_app() if kind == "raw" else bare_store_app(loaded.database_url)

    gateway.create_app = factory  # type: ignore[assignment]  # run_gunicorn imports it late
    host, _, port = bind.rpartition(":")
    listener = supervisor.listen(host, int(port))
    httpserver.run_gunicorn([listener.fileno()], workers)


# --------------------------------------------------------------------------------------------
# Traffic: Segment-python-like messages, serialised once into request templates


def _uuid4s(count: int) -> list[str]:
    """Random version-4 UUIDs, several times cheaper than str(uuid.uuid4())."""
    hexes = os.urandom(16 * count).hex()
    out = []
    for i in range(0, 32 * count, 32):
        h = hexes[i:i + 32]
        out.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}")
    return out


@dataclass(frozen=True)
class Users:
    """Who the traffic is about: `count` users, the n-th is USER_FORMAT of n * step; with
    `anonymous`, every message also carries that user's anonymousId (both identity keys)."""

    count: int = USERS
    step: int = 1
    user_format: str = "user-{:04d}"
    anonymous_format: str = ""  # e.g. "anon-{:08d}"; empty: no anonymousId


def _message(rng: random.Random, now: datetime, track_share: float = 0.8,
             users: Users = Users()) -> dict[str, Any]:
    """One message as analytics-python enqueues it (by default 80 % track, 20 % identify)."""
    user = rng.randrange(users.count) * users.step
    user_id = users.user_format.format(user)
    message: dict[str, Any] = {
        "messageId": ID_SLOT,
        "timestamp": (now - timedelta(milliseconds=rng.randrange(5000))).isoformat(),
        "userId": user_id,
        "context": {"library": {"name": "analytics-python", "version": "2.3.3"}},
        "integrations": {},
    }
    if users.anonymous_format:
        message["anonymousId"] = users.anonymous_format.format(user)
    if rng.random() < track_share:
        message.update(type="track", event=rng.choice(
            ["Order Completed", "Product Viewed", "Signed In", "Checkout Started"]), properties={
            "order_id": f"o-{rng.randrange(10**9)}", "revenue": round(rng.uniform(5, 500), 2),
            "currency": "USD", "coupon": rng.choice([None, "WINTER10"]),
            "products": [{"sku": f"sku-{rng.randrange(999)}", "quantity": rng.randrange(1, 4),
                          "price": round(rng.uniform(1, 99), 2)}
                         for _ in range(rng.randrange(1, 4))]})
    else:
        message.update(type="identify", traits={
            "email": f"{user_id}@example.com", "name": f"User {user}",
            "plan": rng.choice(["free", "pro", "enterprise"]), "logins": rng.randrange(100)})
    return message


class Traffic:
    """Request bytes for one client thread: a template per message mix, fresh messageIds.

    Batches carry a fixed `sentAt`, so the gateway's clock-skew correction (timestamp =
    receivedAt - (sentAt - timestamp)) makes their event times advance like live traffic; single
    calls carry no `sentAt` and get the send time as their timestamp.
    """

    def __init__(self, port: int, path: str, seed: int,
                 users: Users = Users()) -> None:
        rng = random.Random(seed)
        now = datetime.now(UTC)
        self.per_request = BATCH_SIZE if path == "/v1/batch" else 1
        self.templates: list[str] = []
        for _ in range(TEMPLATES):
            if self.per_request == 1:
                body: dict[str, Any] = _message(rng, now, track_share=1.0, users=users)
                body["timestamp"] = TIME_SLOT  # after messageId: the slots' order
            else:
                body = {"batch": [_message(rng, now, users=users) for _ in range(BATCH_SIZE)],
                        "sentAt": now.isoformat()}
            raw = orjson.dumps(body).decode()
            length = (len(raw.encode()) + (36 - len(ID_SLOT)) * self.per_request
                      + (27 - len(TIME_SLOT)) * (self.per_request == 1))
            escaped = raw.replace("%", "%%").replace(ID_SLOT, "%s").replace(TIME_SLOT, "%s")
            self.templates.append(
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Authorization: Basic {_basic(WRITE_KEY)}\r\n"
                "Content-Type: application/json\r\nUser-Agent: analytics-python/2.3.3\r\n"
                f"Content-Length: {length}\r\nConnection: close\r\n\r\n{escaped}")
        self.rng = rng

    def next(self) -> bytes:
        template = self.templates[self.rng.randrange(TEMPLATES)]
        if self.per_request == 1:
            args = (*_uuid4s(1), datetime.now(UTC).strftime(TIME_FORMAT))
            return (template % args).encode()
        return (template % tuple(_uuid4s(self.per_request))).encode()


def _basic(username: str) -> str:
    return base64.b64encode(f"{username}:".encode()).decode()


def send(port: int, request: bytes) -> tuple[int, bytes]:
    """One request on a fresh connection; the server closes it after the response."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    response = b"".join(chunks)
    return int(response[9:12]), response


# --------------------------------------------------------------------------------------------
# Load generation (runs in the spawn pool's processes)


@dataclass(frozen=True)
class Job:
    port: int
    path: str
    start_at: float  # wall clock: every process starts together
    warmup: float
    seconds: float
    threads: int
    index: int  # this process among `processes`
    processes: int
    rate: float = 0.0  # total requests/s over all processes (open loop); 0 = closed loop
    users: Users = Users()


def drive(job: Job) -> dict[str, Any]:
    """Run one process's share of a scenario; plain types back (they cross processes)."""
    begin = time.monotonic() + max(0.0, job.start_at - time.time())
    measure_from, stop = begin + job.warmup, begin + job.warmup + job.seconds
    tallies: list[dict[str, Any]] = [
        {"lat": [], "ok": 0, "events_ok": 0, "fail": Counter(), "sample": ""}
        for _ in range(job.threads)]
    threads = [threading.Thread(target=_client, args=(job, t, begin, measure_from, stop, tally))
               for t, tally in enumerate(tallies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    fail: Counter[str] = Counter()
    for tally in tallies:
        fail.update(tally["fail"])
    return {"lat": [x for t in tallies for x in t["lat"]],
            "ok": sum(t["ok"] for t in tallies),
            "events_ok": sum(t["events_ok"] for t in tallies),
            "fail": dict(fail), "sample": next((t["sample"] for t in tallies if t["sample"]), "")}


def _client(job: Job, thread: int, begin: float, measure_from: float, stop: float,
            tally: dict[str, Any]) -> None:
    """Closed loop (next request when the last one answered) or paced open loop at job.rate,
    where latency counts from the scheduled send time (no coordinated omission)."""
    slot, slots = job.index * job.threads + thread, job.processes * job.threads
    traffic = Traffic(job.port, job.path, seed=slot * 7919 + int(job.start_at), users=job.users)
    k = 0
    while True:
        request = traffic.next()
        if job.rate:
            start = begin + (k * slots + slot) / job.rate
            k += 1
            if start >= stop:
                return
            time.sleep(max(0.0, start - time.monotonic()))
        else:
            start = time.monotonic()
            if start >= stop:
                return
        try:
            status, response = send(job.port, request)
        except (OSError, ValueError) as exc:
            status, response = 0, repr(exc).encode()
        end = time.monotonic()
        if status == 200:
            tally["events_ok"] += traffic.per_request
        else:
            tally["fail"][str(status or response.decode(errors="replace")[:60])] += 1
            tally["sample"] = tally["sample"] or response[-300:].decode(errors="replace")
        # open loop: requests scheduled inside the window; closed loop: completed inside it
        in_window = start >= measure_from if job.rate else measure_from <= end <= stop
        if in_window and status == 200:
            tally["ok"] += 1
            tally["lat"].append((end - start) * 1000)


@dataclass
class Measure:
    """One scenario against one server."""

    requests_per_s: float
    events_per_s: float
    p50_ms: float
    p99_ms: float
    events_ok: int  # events in every 200 answer, warm-up included: what the DB must hold
    failures: dict[str, int] = field(default_factory=dict)
    sample: str = ""
    cpu_s: float = float("nan")  # CPU seconds of the server's process tree in the window
    window_s: float = 0.0  # the measured window's length

    @property
    def cpu_per_1000(self) -> float:
        """Server CPU seconds per 1,000 events answered 200 in the measured window."""
        events = self.events_per_s * self.window_s
        return self.cpu_s / events * 1000 if events else float("nan")


def tree_cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of `pid` and every live descendant, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            stat = Path(f"/proc/{current}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
        todo += children.get(current, [])
    return total / os.sysconf("SC_CLK_TCK")


class CpuWindow:
    """Samples the server tree's CPU at the start and at the end of the measured window (wall
    clock, the same instants the load processes measure between)."""

    def __init__(self, pid: int | None, start: float, end: float) -> None:
        self.pid, self.start, self.end = pid, start, end
        self.samples: list[float] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        if pid is not None:
            self.thread.start()

    def _run(self) -> None:
        assert self.pid is not None
        for when in (self.start, self.end):
            time.sleep(max(0.0, when - time.time()))
            self.samples.append(tree_cpu_seconds(self.pid))

    def seconds(self) -> float:
        if self.pid is None:
            return float("nan")
        self.thread.join()
        return self.samples[1] - self.samples[0]


def run_scenario(pool: Pool, port: int, path: str, opts: argparse.Namespace,
                 rate: float = 0.0, server_pid: int | None = None,
                 users: Users = Users()) -> Measure:
    threads = opts.open_threads if rate else max(1, opts.clients // opts.processes)
    start_at = time.time() + 0.3
    jobs = [Job(port, path, start_at, opts.warmup, opts.seconds, threads, i, opts.processes,
                rate, users) for i in range(opts.processes)]
    cpu = CpuWindow(server_pid, start_at + opts.warmup, start_at + opts.warmup + opts.seconds)
    parts = pool.map(drive, jobs, chunksize=1)
    latencies = sorted(x for part in parts for x in part["lat"])
    ok = sum(part["ok"] for part in parts)
    failures: Counter[str] = Counter()
    for part in parts:
        failures.update(part["fail"])
    per_request = BATCH_SIZE if path == "/v1/batch" else 1
    return Measure(ok / opts.seconds, ok * per_request / opts.seconds,
                   _percentile(latencies, 0.50), _percentile(latencies, 0.99),
                   sum(part["events_ok"] for part in parts), dict(failures),
                   next((part["sample"] for part in parts if part["sample"]), ""),
                   cpu.seconds(), opts.seconds)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, max(0, int(q * len(values) + 0.5) - 1))]


# --------------------------------------------------------------------------------------------
# Servers and databases


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --transform: the source runs the README's card masking (examples/transforms.py), a realistic
# cheap transformation that walks every string of the event
TRANSFORMATION_TABLE = ('[[transformations]]\nname = "mask-cards"\n'
                        'function = "examples.transforms:mask_card_numbers"\n\n')


def write_config(path: Path, database_url: str, transform: bool = False, plan: str = "") -> None:
    """One source, two destinations (every accepted event queues two delivery rows);
    `transform`: the source runs TRANSFORMATION_TABLE's transformation first; with `plan`
    ("fitting" or "failing"), the source follows the 20-event plan written beside the config."""
    planned = ""
    if plan:
        (path.parent / "plan.json").write_bytes(orjson.dumps(bench_plan(
            failing=plan == "failing")))
        planned = "tracking_plan = \"bench\"\n"
    path.write_text(
        f"database_url = {_toml_string(database_url)}\nadmin_token = \"{ADMIN_TOKEN}\"\n\n"
        + (TRANSFORMATION_TABLE if transform else "")
        + f"[[sources]]\nname = \"{SOURCE}\"\nwrite_key = \"{WRITE_KEY}\"\n{planned}"
        + ('transformations = ["mask-cards"]\n' if transform else "") + "\n"
        "[[destinations]]\nname = \"customerio\"\ntype = \"customerio\"\n"
        "[destinations.settings]\nsiteID = \"bench-site\"\napiKey = \"bench-key\"\n\n"
        "[[destinations]]\nname = \"kustomer\"\ntype = \"kustomer\"\n[destinations.settings]\n"
        "apiKey = \"bench-key\"\n"
        + ("\n[[tracking_plans]]\nname = \"bench\"\nfile = \"plan.json\"\n" if plan else ""))


TRACKED = ("Order Completed", "Product Viewed", "Signed In", "Checkout Started")


def bench_plan(events: int = 20, failing: bool = False) -> dict[str, Any]:
    """A Config API export the bench traffic fits: its four track events, identify, a global
    rule, and filler events up to `events` (a plan's size costs nothing per message: one
    lookup by name). `failing`: "Signed In" also requires a `method` the traffic never sends,
    so a fifth of the messages (80 % track, a quarter of them) are flagged."""
    schema_url = "http://json-schema.org/draft-07/schema#"
    product = {"type": "object", "additionalProperties": False,
               "required": ["sku", "quantity", "price"],
               "properties": {"sku": {"type": "string"}, "quantity": {"type": "integer",
                                                                       "minimum": 1},
                              "price": {"type": "number", "minimum": 0}}}
    order = {"type": "object", "additionalProperties": False,
             "required": ["order_id", "revenue", "currency", "products"],
             "properties": {"order_id": {"type": "string"}, "revenue": {"type": "number"},
                            "currency": {"type": "string", "enum": ["USD", "EUR", "GBP"]},
                            "coupon": {"type": ["string", "null"]},
                            "products": {"type": "array", "items": product, "minItems": 1}}}

    def message(properties: dict[str, Any] | None = None,
                traits: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"$schema": schema_url, "type": "object", "properties": {
            "context": {}, "properties": properties or {}, "traits": traits or {}}}

    names = [*TRACKED, *(f"Feature {n} Used" for n in range(1, events - len(TRACKED) + 1))]
    return {"display_name": "bench", "rules": {
        "global": {"$schema": schema_url, "type": "object", "required": ["context"],
                   "properties": {"context": {"type": "object", "required": ["library"]}}},
        "identify": message(traits={
            "type": "object", "additionalProperties": False, "required": ["email"],
            "properties": {"email": {"type": "string"}, "name": {"type": "string"},
                           "plan": {"type": "string", "enum": ["free", "pro", "enterprise"]},
                           "logins": {"type": "integer", "minimum": 0}}}),
        "events": [{"name": name, "version": 1, "rules": message(
            {**order, "required": [*order["required"], "method"],
             "properties": {**order["properties"], "method": {"type": "string"}}}
            if failing and name == "Signed In" else order)} for name in names]}}


def check_cost(rounds: int = 20_000) -> tuple[float, float]:
    """Microseconds to check one fitting and one failing track message, in process."""
    from gateway.plans.load import parse
    from gateway.plans.validate import Plan

    plan = Plan("bench", parse(bench_plan()))
    rng = random.Random(7)
    fitting = _message(rng, datetime.now(UTC), track_share=1.0)
    failing = orjson.loads(orjson.dumps(fitting))
    failing["properties"].update(revenue="12.5", currency="CHF", gift=True)
    costs = []
    for payload in (fitting, failing):
        started = time.perf_counter()
        for _ in range(rounds):
            plan.check(payload)
        costs.append((time.perf_counter() - started) / rounds * 1e6)
    return costs[0], costs[1]


@contextmanager
def running(kind: str, workdir: Path, config_path: Path, port: int,
            workers: int) -> Iterator[int]:
    """Start one server, wait for it to answer, stop it (SIGTERM, then SIGKILL) afterwards;
    yields its pid (the root of the process tree whose CPU is measured)."""
    bind = f"127.0.0.1:{port}"
    if kind == "gateway":
        command = [sys.executable, "-m", "gateway.cli", "--config", str(config_path), "serve",
                   "--bind", bind, "--workers", str(workers), "--no-worker"]  # ingest only
    else:
        command = [sys.executable, str(Path(__file__).resolve()), "_serve", kind,
                   str(config_path), bind, str(workers)]
    env = os.environ | {"PYTHONPATH": str(REPO)}
    log_path = workdir / f"{kind}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                                   env=env)
        try:
            _wait_ready(process, port, log_path)
            yield process.pid
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


def _wait_ready(process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    probe = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited:\n{log_path.read_text(errors='replace')}")
        try:
            if send(port, probe.encode())[0] == 200:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server did not start:\n{log_path.read_text(errors='replace')}")


@contextmanager
def database(kind: str, workdir: Path, postgres_url: str | None) -> Iterator[str]:
    """A fresh, migrated database: a SQLite file, or a throwaway PostgreSQL schema."""
    if postgres_url is None:
        url = f"sqlite:///{workdir / 'bench.db'}"
        migrate(url)
        yield url
        return
    schema = f"bench_{kind.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(normalise_url(postgres_url))
    try:
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        separator = "&" if "?" in postgres_url else "?"
        url = f"{postgres_url}{separator}options=-csearch_path%3D{schema}"
        migrate(url)
        yield url
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def count_rows(url: str) -> tuple[int, int]:
    """(events, deliveries) stored."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return (connection.scalar(select(func.count()).select_from(events)) or 0,
                    connection.scalar(select(func.count()).select_from(deliveries)) or 0)
    finally:
        engine.dispose()


@dataclass
class ServerRun:
    kind: str
    scenarios: dict[str, Measure]
    stored: tuple[int, int] | None = None  # (events, deliveries) after the run
    log_tail: str = ""  # the server log around its first error, when it answered non-200


def bench_server(kind: str, pool: Pool, opts: argparse.Namespace, tmp: Path,
                 postgres_url: str | None, workers: int, transform: bool = False,
                 plan: str = "") -> ServerRun:
    label = kind + (f" + {plan} plan" if plan else "")
    label = label if postgres_url is None else f"{label} (postgresql)"
    label += " + transformation" if transform else ""
    workdir = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=tmp))
    with database(kind, workdir, postgres_url) as url:
        config_path = workdir / "gateway.toml"
        write_config(config_path, url, transform, plan)
        port = _free_port()
        scenarios: dict[str, Measure] = {}
        with running(kind, workdir, config_path, port, workers) as pid:
            for name, path in (("batch", "/v1/batch"), ("track", "/v1/track")):
                print(f"  {label}: {name} …", flush=True)
                scenarios[name] = run_scenario(pool, port, path, opts, server_pid=pid)
            if kind == "gateway" and not transform:
                rate = scenarios["track"].requests_per_s / 2
                print(f"  {label}: track at half load ({rate:.0f} req/s) …", flush=True)
                scenarios["half"] = run_scenario(pool, port, "/v1/track", opts, rate=rate,
                                                 server_pid=pid)
        stored = None if kind == "raw" else count_rows(url)
    log_tail = ""
    if any(m.failures for m in scenarios.values()):  # the temp dir goes: keep why
        lines = (workdir / f"{kind}.log").read_text(errors="replace").splitlines()
        errors = [i for i, line in enumerate(lines) if " ERROR " in line]
        log_tail = "\n".join(lines[errors[0]:errors[0] + 40] if errors else lines[-40:])
    return ServerRun(kind, scenarios, stored, log_tail)


# --------------------------------------------------------------------------------------------
# Report


def machine_info() -> str:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import gunicorn

    return (f"cpu: {model} | cores: {os.cpu_count()} | python {platform.python_version()} | "
            f"sqlite {sqlite3.sqlite_version} | gunicorn {gunicorn.__version__}")


def _fmt(value: float, digits: int = 0) -> str:
    return "-" if value != value else f"{value:,.{digits}f}"


def report(runs: dict[str, ServerRun], title: str) -> list[str]:
    """The side-by-side table, ratios and targets; returns the problems found."""
    raw, bare, gw = (runs[k].scenarios for k in SERVERS)
    rows: list[tuple[str, str, str, str, str]] = []

    def row(name: str, pick: Callable[[Measure], float], digits: int, base: dict[str, Measure],
            scenario: str, ratio: bool) -> None:
        values = [pick(s[scenario]) for s in (raw, bare, gw)]
        share = f"{values[2] / pick(base[scenario]):.0%}" if ratio else ""
        rows.append((name, _fmt(values[0], digits), _fmt(values[1], digits),
                     _fmt(values[2], digits), share))

    row("batch  events/s", lambda m: m.events_per_s, 0, bare, "batch", True)
    row("batch  requests/s", lambda m: m.requests_per_s, 1, bare, "batch", True)
    row("batch  p50 ms", lambda m: m.p50_ms, 1, bare, "batch", False)
    row("batch  p99 ms", lambda m: m.p99_ms, 1, bare, "batch", False)
    row("batch  CPU s/1000 events", lambda m: m.cpu_per_1000, 3, bare, "batch", True)
    row("track  requests/s", lambda m: m.requests_per_s, 0, bare, "track", True)
    row("track  p50 ms", lambda m: m.p50_ms, 1, bare, "track", False)
    row("track  p99 ms", lambda m: m.p99_ms, 1, bare, "track", False)
    row("track  CPU s/1000 events", lambda m: m.cpu_per_1000, 3, bare, "track", True)
    header = ("scenario", "raw ceiling", "bare-store ceiling", "gateway", "ratio")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    print(f"\n{title}")
    for r in [header, *rows]:
        print("  " + " | ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i])
                                for i, c in enumerate(r)))
    print("  (ratio: gateway/bare-store; CPU: the server's whole process tree, from /proc, in "
          "the measured window)")

    problems: list[str] = []
    batch_ratio = gw["batch"].events_per_s / bare["batch"].events_per_s
    track_ratio = gw["track"].requests_per_s / bare["track"].requests_per_s
    cpu_ratio = gw["batch"].cpu_per_1000 / bare["batch"].cpu_per_1000
    half = gw["half"]
    for line, ok in (
        (f"batch ingest gateway/bare-store: {batch_ratio:.0%} (target >= 50 %)", batch_ratio >= .5),
        (f"single track gateway/bare-store: {track_ratio:.0%} (target >= 200 %: group commit "
         "beats one commit per request)", track_ratio >= 2),
        (f"batch CPU per event gateway/bare-store: {cpu_ratio:.1f}x (target <= 2x)",
         cpu_ratio <= 2),
        (f"track at half load ({half.requests_per_s:.0f} req/s): p50 {half.p50_ms:.1f} ms, "
         f"p99 {half.p99_ms:.1f} ms (target p99 < 25 ms)", half.p99_ms < 25),
    ):
        print(f"  {'PASS' if ok else 'MISS'}  {line}")
    for kind, run in runs.items():
        for name, measure in run.scenarios.items():
            if measure.failures:
                problems.append(f"{kind} {name}: non-200 answers {measure.failures}; "
                                f"e.g. {measure.sample!r}")
        if run.log_tail:
            problems.append(f"{kind} server log:\n{run.log_tail}")
        if run.stored is not None:
            expected = sum(m.events_ok for m in run.scenarios.values())
            events_n, deliveries_n = run.stored
            wanted = (expected, 2 * expected) if kind == "gateway" else (expected, 0)
            status = "ok" if (events_n, deliveries_n) == wanted else "MISMATCH"
            print(f"  stored by {kind}: {events_n:,} events, {deliveries_n:,} deliveries "
                  f"(expected {wanted[0]:,} / {wanted[1]:,}): {status}")
            if status != "ok":
                problems.append(f"{kind}: stored {run.stored}, expected {wanted}")
    non200 = sum(sum(m.failures.values()) for r in runs.values() for m in r.scenarios.values())
    print(f"  non-200 answers: {non200}")
    return problems


def transform_report(plain: ServerRun, transformed: ServerRun) -> list[str]:
    """The gateway without and with a source transformation, same run: events/s and CPU."""
    print("  with the source transformation mask-cards (examples/transforms.py):")
    for name in ("batch", "track"):
        a, b = plain.scenarios[name], transformed.scenarios[name]
        print(f"    {name:<5} events/s {a.events_per_s:,.0f} -> {b.events_per_s:,.0f}; CPU s per "
              f"1,000 events {a.cpu_per_1000:.3f} -> {b.cpu_per_1000:.3f} "
              f"({b.cpu_per_1000 / a.cpu_per_1000 - 1:+.0%})")
    problems = [f"gateway + transformation {name}: non-200 answers {m.failures}"
                for name, m in transformed.scenarios.items() if m.failures]
    if transformed.stored is not None:
        expected = sum(m.events_ok for m in transformed.scenarios.values())
        if transformed.stored != (expected, 2 * expected):
            problems.append(f"gateway + transformation: stored {transformed.stored}, "
                            f"expected {(expected, 2 * expected)}")
    return problems


PLAN_RUNS = {"gateway": "no plan", "fitting": "plan, all fit", "failing": "plan, 20 % flagged"}


def report_plan(runs: dict[str, ServerRun], title: str) -> list[str]:
    """The gateway without a plan beside it with the plan (all messages fit; a fifth flagged):
    the plan's share of events/s and its CPU cost."""
    base = runs["gateway"].scenarios
    columns = list(runs)
    print(f"\n{title}")
    widths = [max(len(PLAN_RUNS[c]), 8) for c in columns]
    print("  " + "scenario".ljust(25) + " | " + " | ".join(
        PLAN_RUNS[c].rjust(w) for c, w in zip(columns, widths, strict=True)))
    for name, pick, digits in (
            ("batch  events/s", lambda m: m.events_per_s, 0),
            ("batch  p99 ms", lambda m: m.p99_ms, 1),
            ("batch  CPU s/1000 events", lambda m: m.cpu_per_1000, 3),
            ("track  requests/s", lambda m: m.requests_per_s, 0),
            ("track  p99 ms", lambda m: m.p99_ms, 1),
            ("track  CPU s/1000 events", lambda m: m.cpu_per_1000, 3)):
        scenario = name.split()[0]
        cells = []
        for column, width in zip(columns, widths, strict=True):
            value = pick(runs[column].scenarios[scenario])
            share = "" if column == "gateway" else \
                f" ({value / pick(base[scenario]):.0%})"
            cells.append((_fmt(value, digits) + share).rjust(width))
        print(f"  {name:<25} | " + " | ".join(cells))
    problems: list[str] = []
    for column in columns[1:]:
        for scenario, pick in (("batch", lambda m: m.events_per_s),
                               ("track", lambda m: m.requests_per_s)):
            share = pick(runs[column].scenarios[scenario]) / pick(base[scenario])
            print(f"  {'PASS' if share >= 0.8 else 'MISS'}  {scenario} events/s, "
                  f"{PLAN_RUNS[column]}: {share:.0%} of no plan (target >= 80 %)")
    for kind, run in runs.items():
        for name, measure in run.scenarios.items():
            if measure.failures:
                problems.append(f"{kind} {name}: non-200 answers {measure.failures}")
        expected = sum(m.events_ok for m in run.scenarios.values())
        if run.stored != (expected, 2 * expected):
            problems.append(f"{kind}: stored {run.stored}, expected {expected} events")
    return problems


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_serve"]:
        kind, config_path, bind, workers = argv[1:5]
        serve_ceiling(kind, config_path, bind, int(workers))
        return 0
    cores = os.cpu_count() or 1
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", metavar="URL",
                        help="also run bare-store and gateway on PostgreSQL (a temporary schema)")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per scenario")
    parser.add_argument("--warmup", type=float, default=1.5, help="unmeasured seconds before")
    parser.add_argument("--workers", type=int, default=cores, help="gunicorn workers (cores)")
    parser.add_argument("--clients", type=int, default=2 * cores,
                        help="concurrent closed-loop clients (default: 2 per core)")
    parser.add_argument("--processes", type=int, default=min(2, cores),
                        help="load-generator processes")
    parser.add_argument("--open-threads", type=int, default=8,
                        help="threads per load process for the paced half-load run")
    parser.add_argument("--transform", action="store_true",
                        help="also run the gateway with a source transformation "
                             "(examples/transforms.py mask_card_numbers) and compare")
    parser.add_argument("--plan", action="store_true",
                        help="the gateway without and with a 20-event tracking plan")
    opts = parser.parse_args(argv)

    print(machine_info())
    print(f"servers: gunicorn sync, {opts.workers} worker(s); load: {opts.processes} process(es),"
          f" {opts.clients} closed-loop connection(s); {opts.warmup:g} s warm-up + "
          f"{opts.seconds:g} s measured per scenario; batches of {BATCH_SIZE}", flush=True)
    started = time.monotonic()
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp, \
            multiprocessing.get_context("spawn").Pool(opts.processes) as pool:
        pool.map(time.sleep, [0.0] * opts.processes)  # processes up before the first scenario
        if opts.plan:
            fitting, failing = check_cost()
            print(f"plan check in process: {fitting:.1f} µs a fitting track message, "
                  f"{failing:.1f} µs a failing one (every error listed)", flush=True)
            for url, title in ((None, "SQLite (WAL)"), (opts.postgres, "PostgreSQL")):
                if title == "PostgreSQL" and not url:
                    continue
                runs = {plan or "gateway": bench_server("gateway", pool, opts, Path(tmp), url,
                                                        opts.workers, plan)
                        for plan in ("", "fitting", "failing")}
                problems += report_plan(runs, title)
            print(f"\ntotal time {time.monotonic() - started:.0f} s")
            for problem in problems:
                print(f"PROBLEM: {problem}")
            return 1 if problems else 0
        runs = {kind: bench_server(kind, pool, opts, Path(tmp), None, opts.workers)
                for kind in SERVERS}
        problems += report(runs, "SQLite (WAL)")
        if opts.transform:
            problems += transform_report(runs["gateway"], bench_server(
                "gateway", pool, opts, Path(tmp), None, opts.workers, transform=True))
        if opts.postgres:
            pg_runs = {"raw": runs["raw"]} | {
                kind: bench_server(kind, pool, opts, Path(tmp), opts.postgres, opts.workers)
                for kind in SERVERS[1:]}
            problems += report(pg_runs, "PostgreSQL (raw ceiling from the run above)")
            if opts.transform:
                problems += transform_report(pg_runs["gateway"], bench_server(
                    "gateway", pool, opts, Path(tmp), opts.postgres, opts.workers,
                    transform=True))
    print(f"\ntotal time {time.monotonic() - started:.0f} s")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
