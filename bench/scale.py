"""Scale benchmark: does ingest cost stay flat as the data grows, and are the admin queries fast?

    .venv/bin/python bench/scale.py [--postgres URL] [--profiles N] [--events N] [--seconds N]

For SQLite (and PostgreSQL with --postgres, in a throwaway schema), in one run:

1. the empty, migrated database: a real `gateway serve --no-worker` takes single `track` calls
   (userId + anonymousId, so the identity lookup runs with two keys) and 100-event batches
   (80 % track, 20 % identify with an email), first without the admin indexes of migration 0003,
   then with them: server CPU seconds per 1,000 events (the whole process tree, from /proc, in
   the measured window), throughput, p50/p99;
2. the server stopped, the database is filled with straight SQL (INSERT … SELECT from a
   recursive CTE / generate_series, secondary indexes dropped first and rebuilt after):
   `--profiles` identities with a userId, an anonymousId and (every other one) an email key,
   `--events` events over 30 days, two delivery rows per event;
3. the loaded database: the same traffic, again without and with the admin indexes, then every
   admin query (gateway.queries, the functions behind the admin API and CLI) timed.

The traffic is about 1,000 users spread evenly over the loaded profiles, in both phases, so the
server does the same work per request; only the size of the tables differs.
"""

from __future__ import annotations

import argparse
import importlib
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sqlalchemy import Engine, func, select, text  # noqa: E402

from bench.ingest import (  # noqa: E402
    Measure,
    Users,
    _fmt,
    _free_port,
    database,
    machine_info,
    run_scenario,
    running,
    write_config,
)
from gateway import queries  # noqa: E402
from gateway.store.db import make_engine  # noqa: E402
from gateway.store.models import deliveries, events, identities, identity_keys  # noqa: E402

ADMIN_INDEXES: tuple[tuple[str, str, list[str]], ...] = importlib.import_module(
    "migrations.versions.0003_admin_indexes").INDEXES
LOADED_TABLES = (events, deliveries, identity_keys)
ACTIVE_USERS = 1000
USER_FORMAT = "user-{:08d}"
ANONYMOUS_FORMAT = "anon-{:08d}"
SPAN_S = 30 * 86400  # the loaded events' received_at spread
START_EPOCH = 1_760_000_000  # 2025-10-09: the loaded events are older than the live ones
EVENT_NAMES = 50
SCENARIOS = (("track", "/v1/track"), ("batch", "/v1/batch"))


# --------------------------------------------------------------------------------------------
# Indexes


def drop_indexes(engine: Engine, names: list[str]) -> None:
    with engine.begin() as connection:
        for name in names:
            connection.execute(text(f"DROP INDEX IF EXISTS {name}"))


def create_admin_indexes(engine: Engine) -> float:
    started = time.monotonic()
    with engine.begin() as connection:
        for name, table, columns in ADMIN_INDEXES:
            connection.execute(text(f"CREATE INDEX IF NOT EXISTS {name} ON {table} "
                                    f"({', '.join(columns)})"))
    return time.monotonic() - started


def base_indexes() -> list[Any]:
    """The secondary indexes of the loaded tables that are not the admin ones (the unique
    constraints stay: SQLite cannot drop them)."""
    admin = {name for name, _, _ in ADMIN_INDEXES}
    return [index for table in LOADED_TABLES for index in table.indexes
            if index.name not in admin]


# --------------------------------------------------------------------------------------------
# Loading


def load(engine: Engine, profiles: int, event_count: int) -> dict[str, float]:
    """Fill the database with straight SQL; returns seconds per step."""
    timings: dict[str, float] = {}
    sqlite = engine.dialect.name == "sqlite"
    drop_indexes(engine, [index.name for index in base_indexes()])
    with engine.begin() as connection:
        first_profile = (connection.scalar(select(func.max(identities.c.id))) or 0) + 1
        first_event = (connection.scalar(select(func.max(events.c.id))) or 0) + 1
    params = {"profiles": profiles, "events": event_count, "p0": first_profile,
              "e0": first_event, "start": START_EPOCH, "span": SPAN_S, "names": EVENT_NAMES}
    if sqlite:
        def series(limit: str) -> str:
            return (f"WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq "
                    f"WHERE n < :{limit}) ")
        def pad(expr: str, width: int = 8) -> str:
            return f"printf('%0{width}d', {expr})"
        when = ("strftime('%Y-%m-%d %H:%M:%S', :start + {} * :span / :events, 'unixepoch') "
                "|| '.000000'").format
    else:
        def series(limit: str) -> str:
            return f"WITH seq(n) AS (SELECT generate_series(1, CAST(:{limit} AS bigint))) "
        def pad(expr: str, width: int = 8) -> str:
            return f"lpad(CAST({expr} AS text), {width}, '0')"
        when = "to_timestamp(:start + {} * :span / :events)".format
    user = "((n * 7919) % :profiles) + 1"  # event n's profile, spread over all of them
    steps = {
        "identities": series("profiles") + (
            "INSERT INTO identities (id, traits, traits_updated_at, first_seen, last_seen) "
            f"SELECT :p0 + n - 1, '{{\"plan\":\"free\"}}', NULL, {when('0')}, {when('0')} "
            "FROM seq"),
        "identity_keys": series("profiles") + (
            "INSERT INTO identity_keys (kind, value, identity_id) "
            f"SELECT 'userId', 'user-' || {pad('n')}, :p0 + n - 1 FROM seq UNION ALL "
            f"SELECT 'anonymousId', 'anon-' || {pad('n')}, :p0 + n - 1 FROM seq UNION ALL "
            f"SELECT 'email', 'user-' || {pad('n')} || '@example.com', :p0 + n - 1 FROM seq "
            "WHERE n % 2 = 1"),
        "events": series("events") + (
            "INSERT INTO events (id, source, message_id, type, event, user_id, anonymous_id, "
            "timestamp, received_at, payload) "
            "SELECT :e0 + n - 1, 'bench', 'gen-' || {pn}, t, "
            "CASE WHEN t = 'track' THEN 'Event ' || CAST(n % :names AS text) END, "
            "'user-' || {pu}, 'anon-' || {pu}, {w}, {w}, "
            "'{{\"type\":\"' || t || '\",\"userId\":\"user-' || {pu} || "
            "'\",\"properties\":{{\"revenue\":' || CAST(n % 500 AS text) || '}}}}' "
            "FROM (SELECT n, CASE WHEN n % 20 < 16 THEN 'track' WHEN n % 20 < 19 "
            "THEN 'identify' ELSE 'page' END AS t FROM seq) AS s"
        ).format(pn=pad("n", 10), pu=pad(user), w=when("n")),
        "deliveries": series("events") + (
            "INSERT INTO deliveries (event_id, destination, user_key, state, attempts, "
            "next_attempt_at, last_status, created_at, updated_at) "
            "SELECT :e0 + n - 1, d.name, 'user-' || {pu}, "
            "CASE WHEN n % 100 < 98 THEN 'delivered' WHEN n % 100 = 98 THEN 'dead' "
            "ELSE 'skipped' END, 1, {w}, 200, {w}, {w} FROM seq CROSS JOIN "
            "(SELECT 'customerio' AS name UNION ALL SELECT 'kustomer') AS d"
        ).format(pu=pad(user), w=when("n")),
    }
    for name, statement in steps.items():
        started = time.monotonic()
        with engine.begin() as connection:
            connection.execute(text(statement), params)
        timings[f"insert {name}"] = time.monotonic() - started
    started = time.monotonic()
    with engine.begin() as connection:
        for index in base_indexes():
            index.create(connection)
        if not sqlite:
            for table in ("identities", "events"):
                connection.execute(text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))"))
    timings["rebuild indexes"] = time.monotonic() - started
    if not sqlite:
        started = time.monotonic()
        with engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(
                text("VACUUM ANALYZE identities, identity_keys, events, deliveries"))
        timings["vacuum analyze"] = time.monotonic() - started
    return timings


# --------------------------------------------------------------------------------------------
# Admin queries


def admin_queries(profiles: int) -> list[tuple[str, Callable[[Any], Any]]]:
    someone = USER_FORMAT.format(profiles // 2 + 1)  # odd: has an email key
    hour = START_EPOCH + SPAN_S // 2
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(hour))
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(hour + 3600))
    return [
        ("events by user_id", lambda c: queries.list_events(c, {"user_id": someone})),
        ("events by type (identify)", lambda c: queries.list_events(c, {"type": "identify"})),
        ("events by event name", lambda c: queries.list_events(c, {"event": "Event 7"})),
        ("events in a one-hour range", lambda c: queries.list_events(
            c, {"since": since, "until": until})),
        ("events by email", lambda c: queries.list_events(
            c, {"email": f"{someone}@example.com"})),
        ("deliveries by state (dead)", lambda c: queries.list_deliveries(c, {"state": "dead"})),
        ("deliveries by state (delivered)", lambda c: queries.list_deliveries(
            c, {"state": "delivered"})),
        ("deliveries by destination", lambda c: queries.list_deliveries(
            c, {"destination": "kustomer"})),
        ("deliveries by destination + state", lambda c: queries.list_deliveries(
            c, {"destination": "kustomer", "state": "dead"})),
        ("identity by user_id", lambda c: queries.get_identity(c, {"user_id": someone})),
        ("identity by email", lambda c: queries.get_identity(
            c, {"email": f"{someone}@example.com"})),
    ]


def time_admin(engine: Engine, profiles: int) -> list[tuple[str, float, float, int]]:
    """(name, first run ms, best of 3 ms, rows) per query."""
    out = []
    for name, run in admin_queries(profiles):
        times, rows = [], 0
        for _ in range(3):
            with engine.connect() as connection:
                started = time.perf_counter()
                result = run(connection)
                times.append((time.perf_counter() - started) * 1000)
            rows = len(result.data) if hasattr(result, "data") else int(result is not None)
        out.append((name, times[0], min(times), rows))
    return out


# --------------------------------------------------------------------------------------------
# One database


@dataclass
class Phase:
    name: str
    scenarios: dict[str, Measure]


def measure_phase(name: str, label: str, pool: Any, opts: argparse.Namespace, workdir: Path,
                  config_path: Path, users: Users) -> Phase:
    port = _free_port()
    scenarios: dict[str, Measure] = {}
    with running("gateway", workdir, config_path, port, opts.workers) as pid:
        for scenario, path in SCENARIOS:
            print(f"  {label}, {name}: {scenario} …", flush=True)
            scenarios[scenario] = run_scenario(pool, port, path, opts, server_pid=pid,
                                               users=users)
    return Phase(name, scenarios)


def bench_database(label: str, pool: Any, opts: argparse.Namespace, tmp: Path,
                   postgres_url: str | None) -> dict[str, Any]:
    """The empty phase on one fresh database, the loaded phase on another (so the loaded
    profiles are the ones the traffic is about, and nothing the empty phase wrote is in the
    way of the load)."""
    users = Users(ACTIVE_USERS, max(1, opts.profiles // ACTIVE_USERS), USER_FORMAT,
                  ANONYMOUS_FORMAT)
    admin_names = [name for name, _, _ in ADMIN_INDEXES]
    phases: list[Phase] = []
    for size in ("empty", "loaded"):
        workdir = Path(tempfile.mkdtemp(prefix=f"scale-{size}-", dir=tmp))
        with database(f"scale_{size}", workdir, postgres_url) as url:
            config_path = workdir / "gateway.toml"
            write_config(config_path, url)
            engine = make_engine(url)
            try:
                drop_indexes(engine, admin_names)
                if size == "loaded":
                    print(f"  {label}: loading {opts.profiles:,} profiles, {opts.events:,} "
                          f"events, {2 * opts.events:,} deliveries …", flush=True)
                    started = time.monotonic()
                    timings = load(engine, opts.profiles, opts.events)
                    timings["load total"] = time.monotonic() - started
                    print("    " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()),
                          flush=True)
                phases.append(measure_phase(f"{size}, no admin indexes", label, pool, opts,
                                            workdir, config_path, users))
                built = create_admin_indexes(engine)
                if size == "loaded":
                    timings["build admin indexes"] = built
                    if engine.dialect.name == "postgresql":
                        with engine.connect() as connection:
                            connection.execution_options(isolation_level="AUTOCOMMIT").execute(
                                text("ANALYZE events, deliveries"))
                phases.append(measure_phase(size, label, pool, opts, workdir, config_path,
                                            users))
                if size == "loaded":
                    admin = time_admin(engine, opts.profiles)
                    with engine.connect() as connection:
                        sizes = {table.name: connection.scalar(
                            select(func.count()).select_from(table))
                            for table in (events, deliveries, identities, identity_keys)}
            finally:
                engine.dispose()
    return {"label": label, "phases": {p.name: p for p in phases}, "admin": admin,
            "timings": timings, "sizes": sizes}


# --------------------------------------------------------------------------------------------
# Report


def report(result: dict[str, Any], opts: argparse.Namespace) -> list[str]:
    phases: dict[str, Phase] = result["phases"]
    empty, loaded = phases["empty"], phases["loaded"]
    sizes = result["sizes"]
    print(f"\n{result['label']}: loaded = {sizes['identities']:,} profiles, "
          f"{sizes['identity_keys']:,} identity keys, {sizes['events']:,} events, "
          f"{sizes['deliveries']:,} deliveries")
    rows = [("scenario", "empty", "loaded", "loaded/empty")]
    misses: list[str] = []
    for scenario, _ in SCENARIOS:
        for name, pick, digits in (
                ("CPU s/1000 events", lambda m: m.cpu_per_1000, 3),
                ("events/s", lambda m: m.events_per_s, 0),
                ("p50 ms", lambda m: m.p50_ms, 1),
                ("p99 ms", lambda m: m.p99_ms, 1)):
            a, b = pick(empty.scenarios[scenario]), pick(loaded.scenarios[scenario])
            ratio = b / a if a else float("nan")
            rows.append((f"{scenario} {name}", _fmt(a, digits), _fmt(b, digits), f"{ratio:.2f}"))
            if name in ("CPU s/1000 events", "p99 ms") and not ratio <= 1.10:
                misses.append(f"{result['label']} {scenario} {name}: loaded/empty {ratio:.2f}")
    _table(rows)
    print("  load: " + ", ".join(f"{k} {v:.0f} s" for k, v in result["timings"].items()))
    print("  admin indexes (migration 0003), CPU s/1000 events without → with:")
    for size in ("empty", "loaded"):
        without, with_ = phases[f"{size}, no admin indexes"], phases[size]
        parts = []
        for scenario, _ in SCENARIOS:
            a = without.scenarios[scenario].cpu_per_1000
            b = with_.scenarios[scenario].cpu_per_1000
            parts.append(f"{scenario} {a:.3f} → {b:.3f} ({b / a - 1:+.0%})")
        print(f"    {size}: " + "; ".join(parts))
    print("  admin queries at that size (target < 100 ms; first run, best of 3):")
    for name, first, best, count in result["admin"]:
        flag = "ok" if max(first, best) < 100 else "MISS"
        print(f"    {flag:4}  {name:36} {first:8.1f} ms {best:8.1f} ms  ({count} rows)")
        if flag != "ok":
            misses.append(f"{result['label']} admin {name}: {first:.1f} ms")
    for phase in phases.values():
        for scenario, measure in phase.scenarios.items():
            if measure.failures:
                misses.append(f"{result['label']} {phase.name} {scenario}: non-200 "
                              f"{measure.failures}; e.g. {measure.sample!r}")
    return misses


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  " + " | ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i])
                                for i, c in enumerate(r)))


def main(argv: list[str] | None = None) -> int:
    cores = os.cpu_count() or 1
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", metavar="URL", help="also PostgreSQL (a temporary schema)")
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.5, help="unmeasured seconds before")
    parser.add_argument("--workers", type=int, default=cores, help="gunicorn workers (cores)")
    parser.add_argument("--clients", type=int, default=2 * cores)
    parser.add_argument("--processes", type=int, default=min(2, cores))
    parser.add_argument("--sqlite", action=argparse.BooleanOptionalAction, default=True,
                        help="run SQLite (--no-sqlite: PostgreSQL only)")
    opts = parser.parse_args(argv)
    opts.open_threads = 8  # run_scenario's open-loop setting (unused: closed loop here)
    print(machine_info())
    print(f"gateway serve --no-worker, {opts.workers} worker(s); {opts.clients} closed-loop "
          f"clients in {opts.processes} process(es); {opts.warmup:g} s warm-up + "
          f"{opts.seconds:g} s measured per run; {ACTIVE_USERS} active users, userId + "
          f"anonymousId on every message", flush=True)
    started = time.monotonic()
    results = []
    with tempfile.TemporaryDirectory(prefix="gateway-scale-") as tmp, \
            multiprocessing.get_context("spawn").Pool(opts.processes) as pool:
        pool.map(time.sleep, [0.0] * opts.processes)
        if opts.sqlite:
            results.append(bench_database("SQLite", pool, opts, Path(tmp), None))
        if opts.postgres:
            results.append(bench_database("PostgreSQL", pool, opts, Path(tmp), opts.postgres))
    misses = [miss for result in results for miss in report(result, opts)]
    print(f"\ntotal time {time.monotonic() - started:.0f} s")
    for miss in misses:
        print(f"MISS: {miss}")
    return 1 if any("non-200" in miss for miss in misses) else 0  # a target miss is reported


if __name__ == "__main__":
    sys.exit(main())
