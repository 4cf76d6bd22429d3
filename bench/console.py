"""The console's pages timed against a large database: every page must stay fast at size
(target: under 300 ms with 10 M events).

Loads events, deliveries and profiles with bench/scale.py's straight-SQL loader (two deliveries
per event: 98 % delivered, 1 % dead, 1 % skipped), adds attempts for the newest deliveries, then
times each page through the real app (signed in, Flask's test client: the page's own work, no
network) — the median and the worst of several runs.

    .venv/bin/python -m bench.console --events 2000000 [--postgres URL]
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select, text

from bench.ingest import ADMIN_TOKEN
from bench.scale import load
from gateway import create_app
from gateway.config import from_mapping
from gateway.store.db import make_engine, migrate
from gateway.store.models import deliveries, events

TOKEN = ADMIN_TOKEN


def config(url: str) -> dict[str, Any]:
    settings = {"siteID": "s", "apiKey": "k"}
    return {"database_url": url, "admin_token": TOKEN,
            "sources": [{"name": "bench", "write_key": "wk_bench"}],
            "destinations": [
                {"name": "customerio", "type": "customerio", "sources": ["bench"],
                 "settings": settings},
                {"name": "kustomer", "type": "kustomer", "sources": ["bench"],
                 "settings": {"apiKey": "k"}}]}


def add_attempts(engine: Engine, count: int) -> None:
    """One attempt for each of the newest `count` deliveries, started in the last hour."""
    dialect = engine.dialect.name
    now = "datetime('now', '-' || (n % 3600) || ' seconds')" if dialect == "sqlite" else \
        "now() - make_interval(secs => n % 3600)"
    with engine.begin() as connection:
        top = connection.execute(select(func.max(deliveries.c.id))).scalar_one()
        connection.execute(text(
            "INSERT INTO delivery_attempts (delivery_id, number, started_at, duration_ms, "
            "status, error_class, excerpt) "
            f"SELECT id, 1, {now}, 20, CASE WHEN n % 50 = 0 THEN 500 ELSE 200 END, NULL, "
            "'{\"ok\": true}' FROM (SELECT id, id AS n FROM deliveries WHERE id > :low) AS d"),
            {"low": top - count})


def pages(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        newest = connection.execute(select(func.max(events.c.id))).scalar_one()
        middle = newest // 2
        message = connection.execute(select(events.c.message_id)
                                     .where(events.c.id == middle)).scalar_one()
        user = connection.execute(select(events.c.user_id)
                                  .where(events.c.id == middle)).scalar_one()
    return ["/console/", "/console/?type=page", "/console/?event=Event%203",
            f"/console/?user={user}", f"/console/?before={middle}",
            f"/console/events/{newest}", f"/console/events/{middle}",
            "/console/deliveries", "/console/deliveries?state=dead&destination=customerio",
            "/console/deliveries?state=delivered", "/console/destinations", "/console/sources",
            f"/console/explain?message_id={message}", "/console/explain?message_id=missing"]


def time_pages(url: str, runs: int) -> list[tuple[str, float, float]]:
    app = create_app(from_mapping(config(url)))
    client = app.test_client()
    login = client.get("/console/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf" value="([^"]+)"', login).group(1)
    assert client.post("/console/login", data={"csrf": csrf, "token": TOKEN}).status_code == 302
    out = []
    engine = app.extensions["gateway.engine"]
    for path in pages(engine):
        seconds = []
        for _ in range(runs):
            started = time.perf_counter()
            answer = client.get(path)
            seconds.append(time.perf_counter() - started)
            assert answer.status_code == 200, (path, answer.status_code)
        out.append((path, statistics.median(seconds), max(seconds)))
    engine.dispose()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--profiles", type=int, default=200_000)
    parser.add_argument("--attempts", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--postgres", metavar="URL", help="a PostgreSQL database instead")
    opts = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        url = opts.postgres or f"sqlite:///{Path(tmp) / 'console.db'}"
        migrate(url)
        engine = make_engine(url)
        started = time.monotonic()
        load(engine, opts.profiles, opts.events)
        add_attempts(engine, opts.attempts)
        engine.dispose()
        print(f"loaded {opts.events:,} events, {2 * opts.events:,} deliveries, "
              f"{opts.attempts:,} attempts in {time.monotonic() - started:.0f} s "
              f"({url.split(':')[0]})")
        print(f"{'page':<58} {'median ms':>10} {'max ms':>8}")
        for path, median, worst in time_pages(url, opts.runs):
            print(f"{path[:58]:<58} {median * 1000:>10.1f} {worst * 1000:>8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
