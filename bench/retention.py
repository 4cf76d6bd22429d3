"""Retention benchmark: ingest latency and CPU while the pruning loop works through a backlog.

    .venv/bin/python bench/retention.py [--postgres URL] [--events 1000000] [--seconds 8]

Per database: a fresh migrated database gets a backlog of `--events` expired events (60 days
old, ~300-byte payloads), each with a delivered delivery and its attempt, by straight SQL. A
real `gateway serve --no-worker` (bench/ingest.py's servers and load tools) then takes the same
traffic `--settle` times unmeasured (the first run on a database that has taken no traffic yet
is the fastest: SQLite read track p99 4.2 / 6.9 / 6.9 ms with no pruning at all), then three
times measured: without pruning, with the pruning loop running (gateway/retention.py's `run`,
the code the delivery worker runs, in its own process with the default [retention] settings),
and without again (to show drift on a shared machine). `--control` leaves the pruner process
idle and the backlog in place: what the method reads when pruning costs nothing. Traffic:
single `track` calls
paced open loop at `--rate` requests/s (latency from the scheduled send time) and 100-event
batches closed loop. Reported: p50/p99, events/s, server CPU s per 1,000 events, the pruner's
rows deleted and CPU per 1,000 rows in the window, the time to prune the whole backlog, and the
SQLite file size before and after.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sqlalchemy import func, inspect, select, text  # noqa: E402

from bench.ingest import (  # noqa: E402
    ADMIN_TOKEN,
    Measure,
    _free_port,
    database,
    machine_info,
    run_scenario,
    running,
    tree_cpu_seconds,
    write_config,
)
from gateway.config import RetentionSettings  # noqa: E402
from gateway.retention import Pruner  # noqa: E402
from gateway.store import partitions  # noqa: E402
from gateway.store.db import make_engine, sqlite_file  # noqa: E402
from gateway.store.models import (  # noqa: E402
    deliveries,
    delivery_attempts,
    events,
    message_ids,
)

PAYLOAD = "x" * 240  # with the JSON around it, ~300 bytes a payload


def load_backlog(engine: Any, count: int) -> float:
    """`count` events received 60 days ago, each with a delivered delivery and one attempt
    (on partitioned PostgreSQL, in the weeks they fall in, with their message_ids keys)."""
    started = time.monotonic()
    partitions.ensure(engine, datetime.now(UTC) - timedelta(days=61), datetime.now(UTC))
    chunk = 200_000
    with engine.begin() as c:
        for first in range(0, count, chunk):
            n = min(chunk, count - first)
            if engine.dialect.name == "sqlite":
                c.execute(text(
                    "WITH RECURSIVE seq(i) AS (SELECT :first UNION ALL SELECT i + 1 FROM seq "
                    "WHERE i < :last) INSERT INTO events (source, message_id, type, event, "
                    "user_id, timestamp, received_at, payload) SELECT 'bench', 'old-' || i, "
                    "'track', 'Old Event', 'user-' || (i % 100000), "
                    "datetime('now', '-60 days', '+' || (i % 86400) || ' seconds'), "
                    "datetime('now', '-60 days', '+' || (i % 86400) || ' seconds'), "
                    "'{\"type\":\"track\",\"event\":\"Old Event\",\"userId\":\"user-' || i || "
                    "'\",\"pad\":\"' || :pad || '\"}' FROM seq"),
                    {"first": first, "last": first + n - 1, "pad": PAYLOAD})
            else:
                c.execute(text(
                    "INSERT INTO events (source, message_id, type, event, user_id, timestamp, "
                    "received_at, payload) SELECT 'bench', 'old-' || i, 'track', 'Old Event', "
                    "'user-' || (i % 100000), now() - interval '60 days' + i % 86400 * "
                    "interval '1 second', now() - interval '60 days' + i % 86400 * "
                    "interval '1 second', '{\"type\":\"track\",\"event\":\"Old Event\","
                    "\"userId\":\"user-' || i || '\",\"pad\":\"' || :pad || '\"}' "
                    "FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS i"),
                    {"first": first, "last": first + n - 1, "pad": PAYLOAD})
        c.execute(text(
            "INSERT INTO deliveries (event_id, destination, user_key, state, attempts, "
            "next_attempt_at, created_at, updated_at) SELECT id, 'customerio', user_id, "
            "'delivered', 1, received_at, received_at, received_at FROM events"))
        c.execute(text(
            "INSERT INTO delivery_attempts (delivery_id, number, started_at, duration_ms, "
            "status) SELECT id, 1, created_at, 12, 200 FROM deliveries"))
    if has_message_ids(engine):
        with engine.begin() as c:
            c.execute(text("INSERT INTO message_ids (source, message_id, received_at) "
                           "SELECT source, message_id, received_at FROM events"))
    if engine.dialect.name == "postgresql":
        with engine.connect() as c:
            c.execution_options(isolation_level="AUTOCOMMIT").execute(
                text("ANALYZE events, deliveries, delivery_attempts"))
    return time.monotonic() - started


def has_message_ids(engine: Any) -> bool:
    """PostgreSQL from migration 0013 on keeps a key per event in message_ids."""
    return engine.dialect.name == "postgresql" and inspect(engine).has_table("message_ids")


def pruned_tables(engine: Any) -> list[Any]:
    return [events, deliveries, delivery_attempts] + (
        [message_ids] if has_message_ids(engine) else [])


def count_backlog(engine: Any) -> int:
    """Rows of the pruned tables still in the database."""
    with engine.connect() as c:
        return sum(c.scalar(select(func.count()).select_from(t)) or 0
                   for t in pruned_tables(engine))


def prune_forever(database_url: str, idle: bool = False) -> None:
    """The child process: gateway.retention.run with the default [retention] settings (or,
    for `--control`, nothing at all)."""
    if idle:
        time.sleep(24 * 3600)
    import logging
    import threading

    from gateway import retention

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from gateway.config import from_mapping

    config = from_mapping({"database_url": database_url, "admin_token": ADMIN_TOKEN})
    engine = make_engine(database_url)
    retention.run(engine, config, threading.Event())


@dataclass
class Phase:
    name: str
    track: Measure
    batch: Measure
    pruned_rows: int = 0
    pruner_cpu_s: float = 0.0
    pruned_in_track: int = 0  # of pruned_rows, while the paced single track calls ran


def measure(name: str, pool: Any, opts: argparse.Namespace, port: int, pid: int,
            engine: Any, pruner: subprocess.Popen | None) -> Phase:
    print(f"  {name} …", flush=True)
    before_rows = count_backlog(engine)
    before_cpu = tree_cpu_seconds(pruner.pid) if pruner else 0.0
    track = run_scenario(pool, port, "/v1/track", opts, rate=opts.rate, server_pid=pid)
    per_event = len(pruned_tables(engine))  # rows ingest adds per event
    # rows the pruner deleted = rows that went away, net of the rows ingest added (an event,
    # two deliveries)
    in_track = before_rows + track.events_ok * per_event - count_backlog(engine) \
        if pruner else 0
    batch = run_scenario(pool, port, "/v1/batch", opts, server_pid=pid)
    cpu = tree_cpu_seconds(pruner.pid) - before_cpu if pruner else 0.0
    ingested = track.events_ok + batch.events_ok
    # rows the pruner deleted = rows that went away, net of the rows ingest added (an event,
    # two deliveries, and on PostgreSQL its key)
    pruned = before_rows + ingested * per_event - count_backlog(engine) if pruner else 0
    return Phase(name, track, batch, pruned, cpu, in_track)


def bench_database(label: str, pool: Any, opts: argparse.Namespace, tmp: Path,
                   postgres_url: str | None) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="retention-", dir=tmp))
    with database("retention", workdir, postgres_url) as url:
        config_path = workdir / "gateway.toml"
        write_config(config_path, url)
        engine = make_engine(url)
        file = sqlite_file(url)
        try:
            print(f"{label}: loading {opts.events:,} expired events (+ a delivery and an "
                  "attempt each) …", flush=True)
            loaded = load_backlog(engine, opts.events)
            size_loaded = os.path.getsize(file) if file else None
            port = _free_port()
            phases = []
            with running("gateway", workdir, config_path, port, opts.workers) as pid:
                for _ in range(opts.settle):
                    measure("settling (not reported)", pool, opts, port, pid, engine, None)
                phases.append(measure("without pruning", pool, opts, port, pid, engine, None))
                log = open(workdir / "pruner.log", "wb")  # noqa: SIM115 - closed below
                pruner = subprocess.Popen(
                    [sys.executable, str(Path(__file__).resolve()), "_prune", url,
                     *(["--idle"] if opts.control else [])],
                    stdout=log, stderr=subprocess.STDOUT,
                    env=os.environ | {"PYTHONPATH": str(REPO)})
                try:
                    time.sleep(1.0)  # the loop's first batches
                    phases.append(measure("with the pruner idle (control)" if opts.control
                                          else "with pruning", pool, opts, port, pid, engine,
                                          pruner))
                    pruner_total_cpu = tree_cpu_seconds(pruner.pid)
                finally:
                    pruner.terminate()
                    pruner.wait(timeout=30)
                    log.close()
                    pruner_log = (workdir / "pruner.log").read_text(errors="replace")
                if not opts.control:
                    print("  pruning the rest of the backlog, unpaced …", flush=True)
                with engine.connect() as c:
                    left_after_window = c.scalar(select(func.count()).select_from(events).where(
                        events.c.event == "Old Event"))
                started = time.monotonic()
                if not opts.control:
                    Pruner(engine, RetentionSettings(batch_size=500)).prune_all()
                rest_s = time.monotonic() - started
                phases.append(measure("without pruning (again)", pool, opts, port, pid, engine,
                                      None))
            if file:
                with engine.connect() as c:
                    c.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").all()
            size_after = os.path.getsize(file) if file else None
        finally:
            engine.dispose()
    return {"label": label, "phases": phases, "loaded_s": loaded, "size_loaded": size_loaded,
            "size_after": size_after, "left_after_window": left_after_window,
            "rest_s": rest_s, "pruner_total_cpu": pruner_total_cpu,
            "pruner_log": pruner_log}


def report(result: dict[str, Any], opts: argparse.Namespace) -> None:
    phases: list[Phase] = result["phases"]
    print(f"\n{result['label']}: backlog {opts.events:,} events + {opts.events:,} deliveries + "
          f"{opts.events:,} attempts, loaded in {result['loaded_s']:.0f} s")
    print(f"| | {' | '.join(p.name for p in phases)} |")
    print("|---|" + "---|" * len(phases))
    rows = [
        (f"single track p50 ms (open loop, {opts.rate:g} req/s)", lambda p: p.track.p50_ms, 1),
        ("single track p99 ms", lambda p: p.track.p99_ms, 1),
        ("batch p99 ms (closed loop)", lambda p: p.batch.p99_ms, 0),
        ("batch events/s", lambda p: p.batch.events_per_s, 0),
        ("server CPU s / 1,000 events, track", lambda p: p.track.cpu_per_1000, 2),
        ("server CPU s / 1,000 events, batch", lambda p: p.batch.cpu_per_1000, 3),
        ("rows pruned in the window", lambda p: p.pruned_rows, 0),
        ("pruner CPU s in the window", lambda p: p.pruner_cpu_s, 1),
    ]
    for title, pick, digits in rows:
        print(f"| {title} | " + " | ".join(f"{pick(p):,.{digits}f}" for p in phases) + " |")
    base = [p for p in phases if p.name.startswith("without")]
    with_pruning = next(p for p in phases if p.name.startswith("with "))
    for what, pick in (("single track p99", lambda p: p.track.p99_ms),
                       ("batch p99", lambda p: p.batch.p99_ms)):
        reference = sum(pick(p) for p in base) / len(base)
        change = pick(with_pruning) / reference - 1 if reference else float("nan")
        verdict = "met" if change < 0.20 else "MISS"
        print(f"{what}: with pruning {change:+.0%} against the mean without "
              f"(target < +20 %: {verdict})")
    if with_pruning.pruned_rows:
        window = opts.seconds * 2 + opts.warmup * 2  # the two scenarios, warm-ups included
        half = opts.seconds + opts.warmup
        in_batch = with_pruning.pruned_rows - with_pruning.pruned_in_track
        print(f"paced pruner (default [retention]): {with_pruning.pruned_rows:,} rows in the "
              f"window, about {with_pruning.pruned_rows / window:,.0f} rows/s "
              f"({with_pruning.pruned_in_track / half:,.0f} beside the paced track calls, "
              f"{in_batch / half:,.0f} beside the closed-loop batches); CPU "
              f"{with_pruning.pruner_cpu_s / with_pruning.pruned_rows * 1000:.3f} s per 1,000 "
              f"rows deleted; pruner CPU over its whole run {result['pruner_total_cpu']:.1f} s")
    if opts.control:
        print("control run: the pruner process stayed idle and the backlog in place, so the "
              "change above is the method's own drift")
    else:
        print(f"the rest of the backlog ({result['left_after_window']:,} events with their "
              f"deliveries and attempts) pruned unpaced (batch 500, no traffic) in "
              f"{result['rest_s']:.0f} s")
    if result["size_loaded"]:
        print(f"SQLite file: {result['size_loaded'] / 1e6:,.0f} MB loaded → "
              f"{result['size_after'] / 1e6:,.0f} MB after pruning (incremental vacuum)")
    if result["pruner_log"].strip():
        print("pruner log:\n" + result["pruner_log"][-6000:])
    for p in phases:
        for measure_ in (p.track, p.batch):
            if measure_.failures:
                print(f"PROBLEM: {p.name}: non-200 answers {measure_.failures}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_prune"]:
        prune_forever(argv[1], idle="--idle" in argv[2:])
        return 0
    cores = os.cpu_count() or 1
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", metavar="URL", help="also run on PostgreSQL")
    parser.add_argument("--events", type=int, default=1_000_000, help="expired events loaded")
    parser.add_argument("--rate", type=float, default=100.0,
                        help="single track requests/s, paced (open loop)")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.5)
    parser.add_argument("--workers", type=int, default=cores)
    parser.add_argument("--clients", type=int, default=2 * cores)
    parser.add_argument("--processes", type=int, default=min(2, cores))
    parser.add_argument("--open-threads", type=int, default=8)
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--settle", type=int, default=1,
                        help="unmeasured runs of the same traffic before the first measured one")
    parser.add_argument("--control", action="store_true",
                        help="the pruner process idle: how far the runs drift on their own")
    opts = parser.parse_args(argv)
    print(machine_info())
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gateway-retention-") as tmp, \
            multiprocessing.get_context("spawn").Pool(opts.processes) as pool:
        pool.map(time.sleep, [0.0] * opts.processes)
        if not opts.skip_sqlite:
            report(bench_database("SQLite", pool, opts, Path(tmp), None), opts)
        if opts.postgres:
            report(bench_database("PostgreSQL", pool, opts, Path(tmp), opts.postgres), opts)
    print(f"\ntotal time {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
