"""Delivery benchmark: the worker's deliveries/s beside a bare loop of the same client library
(urllib3, same threads) to the same stand-in, with the worker's CPU seconds per 1,000
deliveries, and end-to-end events/s (SDK-style batches in, all delivered out).

    .venv/bin/python bench/delivery.py [--events 20000] [--postgres URL] [--clients 4]
    .venv/bin/python bench/delivery.py --hanging [--events 5000] [--postgres URL]

`--hanging`: only the isolation figure — a healthy webhook destination's deliveries/s and p99
send latency alone, and beside a destination that accepts connections and never answers.

End to end also prints the CPU seconds per 1,000 events of every party on the machine (the
gateway's processes, the PostgreSQL server's, the load generator, the stand-in), and so the
most events/s the machine's cores could carry at that cost: a miss then shows whether it is the
cores or the waiting.

Everything runs on 127.0.0.1; loops are bounded by counts and deadlines.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson
import requests
import urllib3
from sqlalchemy import func, select, text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.ingest import ADMIN_TOKEN, machine_info, tree_cpu_seconds  # noqa: E402
from gateway.config import WorkerSettings  # noqa: E402
from gateway.store.db import make_engine, migrate, normalise_url  # noqa: E402
from gateway.store.models import deliveries, delivery_attempts  # noqa: E402

WRITE_KEY = "wk_bench_delivery"
USERS = 2000
THREADS = WorkerSettings().concurrency
TARGET_RATIO = 0.6
TARGET_E2E = {"webhook": 2000.0, "customerio-v2": 5000.0}


# -- a fast stand-in: asyncio HTTP/1.1 keep-alive, answers 200 at once --------------------------

def _standin_main(port: int) -> None:
    response = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:].strip())
                if length:
                    await reader.readexactly(length)
                writer.write(response)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=512)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


def _hanging_main(port: int) -> None:
    """Accept, read, never answer: a destination that hangs."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.read(65536):
                pass
        except ConnectionError:
            pass

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=512)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


STANDIN_PIDS: dict[str, int] = {}  # stand-in URL -> its process (for its CPU seconds)


@contextmanager
def standin(main=_standin_main) -> Iterator[str]:
    port = free_port()
    process = multiprocessing.Process(target=main, args=(port,), daemon=True)
    process.start()
    wait_for_port(port)
    url = f"http://127.0.0.1:{port}"
    STANDIN_PIDS[url] = process.pid
    try:
        yield url
    finally:
        process.terminate()
        process.join(5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def wait_until_healthy(port: int, seconds: float = 30) -> None:
    """Until /health says 200: the HTTP server answers and a delivery worker beats."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"the gateway on {port} did not become healthy")


# -- configuration and data ---------------------------------------------------------------------

DESTINATIONS = {
    "webhook": 'type = "webhook"\n[destinations.settings]\n'
               'webhookUrl = "https://hooks.example/in"\napiKey = "bench-hook-key"\n',
    "customerio-v2": 'type = "customerio"\n[destinations.settings]\nsiteID = "bench"\n'
                     'apiKey = "bench-key"\nv2Batching = true\n',
}


def write_config(path: Path, database_url: str, endpoint: str,
                 destination: str = "webhook", stuck: str | None = None,
                 limits: str = "", worker: str = "", transform: bool = False) -> None:
    """One destination "dest"; with `stuck`, a second webhook "stuck" there (first in the
    file, so its deliveries are the older rows of each event). `limits` and `worker`: more
    lines of its [destinations.limits] table and of [worker]. `transform`: "dest" runs
    TRANSFORMATION on each event first."""
    stuck_table = (f'[[destinations]]\nname = "stuck"\nendpoint = "{stuck}"\n'
                   f'{DESTINATIONS["webhook"]}\n') if stuck else ""
    path.write_text(
        f'database_url = "{database_url}"\nadmin_token = "{ADMIN_TOKEN}"\n\n'
        + (TRANSFORMATION_TABLE if transform else "")
        + f'[[sources]]\nname = "web"\nwrite_key = "{WRITE_KEY}"\n\n{stuck_table}'
        f'[[destinations]]\nname = "dest"\nendpoint = "{endpoint}"\n'
        + ('transformations = ["mask-cards"]\n' if transform else "") +
        f'{DESTINATIONS[destination]}'
        + (f'[destinations.limits]\n{limits}' if limits else '')
        + f'\n[worker]\npoll_interval_ms = 20\n{worker}')


# --transform: a realistic cheap transformation, the README's card masking (examples/), which
# walks every string of the event
TRANSFORMATION_TABLE = ('[[transformations]]\nname = "mask-cards"\n'
                        'function = "examples.transforms:mask_card_numbers"\n\n')


def batches(events: int, size: int = 100) -> Iterator[bytes]:
    sent = 0
    while sent < events:
        count = min(size, events - sent)
        batch = [{"type": "track", "event": "Order Completed",
                  "userId": f"user-{(sent + i) % USERS}",
                  "messageId": str(uuid.uuid4()), "timestamp": "2026-11-24T12:00:00.000Z",
                  "properties": {"revenue": 9.99, "sku": "sku-1"},
                  "context": {"library": {"name": "analytics-python", "version": "2.4.0"}}}
                 for i in range(count)]
        sent += count
        yield orjson.dumps({"batch": batch, "sentAt": "2026-11-24T12:00:00.100Z"})


def ingest_in_process(config_path: Path, events: int) -> None:
    os.environ["GATEWAY_CONFIG"] = str(config_path)
    from gateway import create_app

    app = create_app()
    client = app.test_client()
    headers = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
    for body in batches(events):
        assert client.post("/v1/batch", data=body, headers=headers).status_code == 200
    app.extensions["gateway.engine"].dispose()


def delivered(database_url: str, destination: str | None = None) -> tuple[int, int]:
    engine = make_engine(database_url)
    mine = [] if destination is None else [deliveries.c.destination == destination]
    try:
        with engine.connect() as connection:
            done = connection.execute(select(func.count()).select_from(deliveries).where(
                deliveries.c.state == "delivered", *mine)).scalar_one()
            total = connection.execute(select(func.count()).select_from(deliveries)).scalar_one()
        return done, total
    finally:
        engine.dispose()


def wait_all_delivered(database_url: str, expected: int, seconds: float) -> float:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, _ = delivered(database_url)
        if done >= expected:
            return time.monotonic()
        time.sleep(0.1)
    raise RuntimeError(f"only {delivered(database_url)[0]} of {expected} delivered in time")


def p99_ms(database_url: str, destination: str) -> float:
    """p99 of the destination's attempt durations (the send latency each delivery saw)."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            durations = sorted(connection.execute(
                select(delivery_attempts.c.duration_ms)
                .join(deliveries, deliveries.c.id == delivery_attempts.c.delivery_id)
                .where(deliveries.c.destination == destination)).scalars())
    finally:
        engine.dispose()
    return float(durations[min(len(durations) - 1, int(len(durations) * 0.99))]) \
        if durations else float("nan")


def attempt_window(database_url: str, destination: str | None = None) -> tuple[float, int]:
    """Seconds from the first attempt's start to the last attempt's end, and attempts made."""
    engine = make_engine(database_url)
    query = select(delivery_attempts.c.started_at, delivery_attempts.c.duration_ms)
    if destination is not None:
        query = query.join(deliveries, deliveries.c.id == delivery_attempts.c.delivery_id) \
            .where(deliveries.c.destination == destination)
    try:
        with engine.connect() as connection:
            rows = connection.execute(query).all()
    finally:
        engine.dispose()
    first = min(r.started_at for r in rows)
    last = max(r.started_at.timestamp() + r.duration_ms / 1000 for r in rows)
    return last - first.timestamp(), len(rows)


# -- the three measurements ---------------------------------------------------------------------

def ceiling(url: str, events: int) -> tuple[float, float]:
    """A bare urllib3 loop per thread (the worker's client library), same thread count, same
    bodies, same server; with its CPU seconds per 1,000 requests."""
    body = orjson.dumps({"type": "track", "event": "Order Completed", "userId": "user-1",
                         "properties": {"revenue": 9.99}, "messageId": str(uuid.uuid4())})
    per_thread = events // THREADS
    errors: list[int] = []

    pool = urllib3.PoolManager(maxsize=THREADS, retries=False)

    def loop() -> None:
        for _ in range(per_thread):
            response = pool.request("POST", url + "/in", body=body, timeout=10,
                                    headers={"Content-Type": "application/json"})
            if response.status != 200:
                errors.append(response.status)

    threads = [threading.Thread(target=loop) for _ in range(THREADS)]
    cpu = time.process_time()
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    assert not errors, f"ceiling saw {len(errors)} non-200 answers"
    return per_thread * THREADS / elapsed, cpu / (per_thread * THREADS) * 1000


def worker_rate(workdir: Path, database_url: str, url: str,
                events: int, transform: bool = False) -> tuple[float, int, float]:
    """The worker process alone on a full queue: deliveries/s, attempts, CPU s per 1,000."""
    config = workdir / "worker.toml"
    write_config(config, database_url, url, transform=transform)
    ingest_in_process(config, events)
    process = subprocess.Popen([sys.executable, "-m", "gateway.cli", "--config", str(config),
                                "worker"], cwd=workdir, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL,
                               env=os.environ | {"PYTHONPATH": str(REPO)})
    try:
        wait_all_delivered(database_url, events, seconds=300)
        cpu = tree_cpu_seconds(process.pid)  # includes start-up: an upper bound
    finally:
        process.terminate()
        process.wait(30)
    seconds, attempts = attempt_window(database_url)
    return events / seconds, attempts, cpu / events * 1000


def healthy_rate(workdir: Path, database_url: str, url: str, events: int,
                 stuck: str | None, seconds: float = 120) -> tuple[float, int, float]:
    """The healthy destination's deliveries/s (its attempts' window), alone or beside a
    hanging one; a run that does not finish in `seconds` counts what was delivered."""
    config = workdir / ("beside.toml" if stuck else "alone.toml")
    write_config(config, database_url, url, stuck=stuck)
    ingest_in_process(config, events)
    process = subprocess.Popen([sys.executable, "-m", "gateway.cli", "--config", str(config),
                                "worker"], cwd=workdir, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    started = time.monotonic()
    try:
        while time.monotonic() - started < seconds:
            if delivered(database_url, "dest")[0] >= events:
                break
            time.sleep(0.1)
    finally:
        process.kill()  # in-flight sends to the hanging destination would take 30 s to end
        process.wait(30)
    done = delivered(database_url, "dest")[0]
    p99 = p99_ms(database_url, "dest")
    if done < events:
        return done / seconds, done, p99
    window, _ = attempt_window(database_url, "dest")
    return events / window, done, p99


def hanging_figure(workdir: Path, kinds: list[str], postgres: str | None, events: int) -> None:
    print(f"\nisolation: {events} events, each to a healthy webhook destination and (beside) "
          "to one that accepts connections and never answers")
    with standin() as url, standin(_hanging_main) as stuck:
        for kind in kinds:
            rates = {}
            for mode in ("alone", "beside"):
                with database(kind, workdir, postgres, mode) as db_url:
                    rates[mode] = healthy_rate(workdir, db_url, url, events,
                                               stuck if mode == "beside" else None)
            (alone, _, p99_alone), (beside, done, p99_beside) = rates["alone"], rates["beside"]
            ratio = beside / alone
            print(f"  {kind:<10} healthy alone {alone:>7,.0f} deliveries/s p99 {p99_alone:.0f} "
                  f"ms   beside a hanging destination {beside:>7,.0f} deliveries/s p99 "
                  f"{p99_beside:.0f} ms ({done} of {events})   ratio {ratio:.0%} "
                  f"({'PASS' if ratio >= 0.9 else 'MISS'} target >= 90%)")


CLIENTS = 4  # concurrent SDK connections posting batches (as bench/ingest.py; --clients)


@dataclass(frozen=True)
class EndToEnd:
    rate: float  # events/s, first batch posted to last delivery recorded
    posting: float  # events/s of the posting phase alone
    gateway_cpu: float  # CPU s per 1,000 events: gunicorn + worker (ingest and delivery)
    client_cpu: float  # the load generator (this process's posting threads)
    standin_cpu: float  # the destination's stand-in
    database_cpu: float  # the PostgreSQL server's processes (0 for SQLite: in the gateway's)

    @property
    def cpu(self) -> float:
        return self.gateway_cpu + self.client_cpu + self.standin_cpu + self.database_cpu

    def most(self, cores: int) -> float:
        """The most events/s these cores could carry at this CPU per event."""
        return cores / self.cpu * 1000


def end_to_end(workdir: Path, database_url: str, url: str, events: int,
               destination: str, clients: int = CLIENTS) -> EndToEnd:
    """Events/s from the first batch posted to the last delivery recorded, and the ingest
    phase's own events/s (the posting alone), so a miss shows which side held it back; with
    the CPU seconds each party spent per 1,000 events, so a miss shows whether the machine's
    cores could carry the target at all."""
    config = workdir / f"e2e-{destination}.toml"
    write_config(config, database_url, url, destination)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "--config", str(config), "serve", "--bind",
         f"127.0.0.1:{port}", "--workers", str(os.cpu_count() or 1)],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_healthy(port)  # serve binds the port before gunicorn and the worker start
        bodies = list(batches(events))
        failures: list[str] = []

        def post(mine: list[bytes]) -> None:
            session = requests.Session()
            session.auth = (WRITE_KEY, "")
            for body in mine:
                response = session.post(f"http://127.0.0.1:{port}/v1/batch", data=body,
                                        headers={"Content-Type": "application/json"},
                                        timeout=30)
                if response.status_code != 200:
                    failures.append(response.text)

        posters = [threading.Thread(target=post, args=(bodies[n::clients],))
                   for n in range(clients)]
        cpu_before = (tree_cpu_seconds(server.pid), time.process_time(),
                      tree_cpu_seconds(STANDIN_PIDS[url]), postgres_cpu_seconds())
        started = time.monotonic()
        for poster in posters:
            poster.start()
        for poster in posters:
            poster.join()
        ingested = time.monotonic()
        assert not failures, failures[:1]
        # the client's CPU is read before the wait: polling the database is not load
        client_cpu = time.process_time() - cpu_before[1]
        finished = wait_all_delivered(database_url, events, seconds=300)
        gateway_cpu = tree_cpu_seconds(server.pid) - cpu_before[0]
        standin_cpu = tree_cpu_seconds(STANDIN_PIDS[url]) - cpu_before[2]
        database_cpu = postgres_cpu_seconds() - cpu_before[3] if "postgresql" in database_url \
            else 0.0
        per = 1000 / events
        return EndToEnd(events / (finished - started), events / (ingested - started),
                        gateway_cpu * per, client_cpu * per, standin_cpu * per,
                        database_cpu * per)
    finally:
        server.terminate()
        server.wait(40)


def postgres_cpu_seconds() -> float:
    """CPU seconds of every local PostgreSQL process (the server shares the cores too; the
    backends are the postmaster's children, not ours). Includes other sessions' work: the
    machine should be otherwise idle."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if stat[stat.index("(") + 1:stat.rindex(")")] not in ("postgres", "postmaster"):
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


# -- several workers on one PostgreSQL -----------------------------------------------------------

@dataclass
class ScaleOut:
    rate: float  # deliveries/s from the first attempt to the last
    busiest_second: int  # the most attempts started in one second, after the first two
    database_cpu: float  # PostgreSQL's CPU seconds per 1,000 deliveries
    workers_cpu: float  # the workers' CPU seconds per 1,000 deliveries


def attempts_per_second(database_url: str) -> list[int]:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            starts = sorted(s.timestamp() for s in connection.execute(
                select(delivery_attempts.c.started_at)).scalars())
    finally:
        engine.dispose()
    counts = [0] * (int(starts[-1] - starts[0]) + 1)
    for at in starts:
        counts[int(at - starts[0])] += 1
    return counts


def scale_out(workdir: Path, database_url: str, url: str, events: int, workers: int,
              rate: float) -> ScaleOut:
    """A backlog of `events` to one webhook destination (`rate` per second, 0 = none), then
    `workers` worker processes draining it while PostgreSQL's CPU is read. Each counts the
    others within a heartbeat (1 s here): the busiest second is taken after the first two."""
    config = workdir / f"scale-{workers}-{rate:g}.toml"
    write_config(config, database_url, url, limits=f"rate_per_second = {rate:g}\n",
                 worker="heartbeat_seconds = 1\n")
    ingest_in_process(config, events)  # the backlog first: PostgreSQL's CPU is delivery's
    database_before = postgres_cpu_seconds()
    processes = [subprocess.Popen([sys.executable, "-m", "gateway.cli", "--config", str(config),
                                   "worker"], cwd=workdir, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for _ in range(workers)]
    try:
        wait_all_delivered(database_url, events, seconds=60 + (events / rate if rate else 0) * 3)
        database_cpu = postgres_cpu_seconds() - database_before
        workers_cpu = sum(tree_cpu_seconds(p.pid) for p in processes)  # start-up included
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)
    seconds, _ = attempt_window(database_url)
    per_second = attempts_per_second(database_url)
    return ScaleOut(events / seconds, max(per_second[2:-1] or [0]),
                    database_cpu / events * 1000, workers_cpu / events * 1000)


def scale_out_figures(postgres: str, events: int, workers: int, rate: float) -> None:
    """The rate a limited destination gets from several workers, and what its backlog costs
    PostgreSQL beside the same backlog unthrottled."""
    print(f"{workers} `gateway worker` processes on one PostgreSQL; a backlog of {events} "
          f"events over {USERS} users to one webhook destination; stand-in answers at once")
    with tempfile.TemporaryDirectory() as tmp, standin() as url:
        workdir = Path(tmp)
        runs = {}
        for limit in (0.0, rate):
            with database("postgresql", workdir, postgres, "scale") as db_url:
                runs[limit] = scale_out(workdir, db_url, url, events, workers, limit)
        free, limited = runs[0.0], runs[rate]
        share = limited.rate / rate
        calm = "PASS" if limited.busiest_second <= rate * 1.2 else "MISS"
        print(f"  unthrottled      {free.rate:>8,.0f} deliveries/s; PostgreSQL CPU "
              f"{free.database_cpu:.3f} s per 1,000, workers {free.workers_cpu:.3f}")
        print(f"  at {rate:g}/s         {limited.rate:>8,.1f} deliveries/s = {share:.0%} of the "
              f"rate ({'PASS' if share >= 0.8 else 'MISS'} >= 80 %), busiest second after the "
              f"burst {limited.busiest_second} ({calm} <= 120 %); PostgreSQL CPU "
              f"{limited.database_cpu:.3f} s per 1,000 = "
              f"{limited.database_cpu / max(free.database_cpu, 1e-9):.1f}x unthrottled "
              f"({'PASS' if limited.database_cpu <= 2 * free.database_cpu else 'MISS'} <= 2x), "
              f"workers {limited.workers_cpu:.3f}")


# -- databases ----------------------------------------------------------------------------------

@contextmanager
def database(kind: str, workdir: Path, postgres: str | None, name: str) -> Iterator[str]:
    if kind == "sqlite":
        url = f"sqlite:///{workdir / (name + '.db')}"
        migrate(url)
        yield url
        return
    assert postgres
    schema = f"bench_{name}_{uuid.uuid4().hex[:8]}"
    admin = make_engine(postgres)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in postgres else "?"
    url = f"{normalise_url(postgres)}{separator}options=-csearch_path%3D{schema}"
    migrate(url)
    try:
        yield url
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def transform_figures(kinds: list[str], postgres: str | None, events: int) -> None:
    """The worker alone on a full queue, without then with a transformation, same run."""
    print(f"worker threads: {THREADS}; {events} events; webhook destination; the same run "
          "without and with the transformation mask-cards (examples/transforms.py)")
    with tempfile.TemporaryDirectory() as tmp, standin() as url:
        workdir = Path(tmp)
        for kind in kinds:
            figures = {}
            for transform in (False, True):
                name = "worker-transform" if transform else "worker"  # a file each
                with database(kind, workdir, postgres, name) as db_url:
                    figures[transform] = worker_rate(workdir, db_url, url, events, transform)
            (plain, _, plain_cpu), (with_t, _, with_cpu) = figures[False], figures[True]
            print(f"\n{kind}\n  without  {plain:>8,.0f} deliveries/s, worker CPU "
                  f"{plain_cpu:.3f} s per 1,000\n  with     {with_t:>8,.0f} deliveries/s, "
                  f"worker CPU {with_cpu:.3f} s per 1,000 ({with_cpu / plain_cpu - 1:+.0%})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--postgres", help="also measure on PostgreSQL (a temporary schema)")
    parser.add_argument("--clients", type=int, default=CLIENTS,
                        help="concurrent connections posting batches end to end (default 4)")
    parser.add_argument("--hanging", action="store_true",
                        help="only the isolation figure: alone vs beside a hanging destination")
    parser.add_argument("--workers", type=int,
                        help="only the scale-out figure (needs --postgres): this many worker "
                             "processes, a destination at --rate, and PostgreSQL's CPU")
    parser.add_argument("--rate", type=float, default=100.0,
                        help="with --workers: the destination's rate_per_second (default 100)")
    parser.add_argument("--transform", action="store_true",
                        help="only the worker alone, without and with a destination "
                             "transformation (examples/transforms.py mask_card_numbers)")
    args = parser.parse_args()
    print(machine_info())
    if args.transform:
        transform_figures(["sqlite"] + (["postgresql"] if args.postgres else []),
                          args.postgres, args.events)
        return 0
    if args.workers:
        if not args.postgres:
            parser.error("--workers needs --postgres")
        scale_out_figures(args.postgres, min(args.events, 3000), args.workers, args.rate)
        return 0
    if args.hanging:
        with tempfile.TemporaryDirectory() as tmp:
            hanging_figure(Path(tmp), ["sqlite"] + (["postgresql"] if args.postgres else []),
                           args.postgres, args.events)
        return 0
    print(f"worker threads: {THREADS}; {args.events} events over {USERS} users; webhook "
          "destination; stand-in: asyncio keep-alive server answering 200 at once; end to "
          f"end: {args.clients} clients posting 100-event batches")
    kinds = ["sqlite"] + (["postgresql"] if args.postgres else [])
    with tempfile.TemporaryDirectory() as tmp, standin() as url:
        workdir = Path(tmp)
        bare, bare_cpu = ceiling(url, args.events)
        print(f"\nceiling (bare urllib3 loop, {THREADS} threads): {bare:,.0f} requests/s, "
              f"{bare_cpu:.2f} CPU s per 1,000")
        for kind in kinds:
            with database(kind, workdir, args.postgres, "worker") as db_url:
                rate, attempts, cpu = worker_rate(workdir, db_url, url, args.events)
            e2e = {}
            for destination in DESTINATIONS:
                with database(kind, workdir, args.postgres, "e2e") as db_url:
                    e2e[destination] = end_to_end(workdir, db_url, url, args.events,
                                                  destination, args.clients)
            ratio = rate / bare
            print(f"\n{kind}")
            print(f"  delivery      {rate:>9,.0f} deliveries/s   ceiling {bare:,.0f}   "
                  f"ratio {ratio:.0%}  ({'PASS' if ratio >= TARGET_RATIO else 'MISS'} "
                  f"target >= {TARGET_RATIO:.0%}); attempts {attempts} for {args.events}; "
                  f"worker CPU {cpu:.2f} s per 1,000 deliveries")
            cores = os.cpu_count() or 1
            for destination, run in e2e.items():
                target = TARGET_E2E[destination]
                verdict = "PASS" if run.rate >= target else "MISS"
                print(f"  end to end    {run.rate:>9,.0f} events/s to {destination:<14} "
                      f"(batches in, all delivered out; the posting alone {run.posting:,.0f} "
                      f"events/s)   {verdict} target >= {target:,.0f}")
                server = f" + PostgreSQL {run.database_cpu:.3f}" if kind != "sqlite" else ""
                print(f"                CPU s per 1,000 events: gateway {run.gateway_cpu:.3f}"
                      f"{server} + load generator {run.client_cpu:.3f} + stand-in "
                      f"{run.standin_cpu:.3f} = {run.cpu:.3f}: {cores} cores carry at most "
                      f"{run.most(cores):,.0f} events/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
