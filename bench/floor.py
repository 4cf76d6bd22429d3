"""The floor under ingest's CPU: what the least SQL the outbox invariant needs costs, in process.

    .venv/bin/python bench/floor.py [--postgres URL] [--batches N] [--singles N]

Three writers of the same messages, measured in this process (CPU seconds of this process only:
on PostgreSQL the server's own work is not counted, for any of the three):

* bare store: one executemany INSERT of the events rows, then commit — bench/ingest.py's
  bare-store ceiling without HTTP;
* outbox floor: what docs/design.md §2.1 and the contract need at the least, written as directly as
  SQLAlchemy Core allows and with no validation: the dedup-aware insert (`ON CONFLICT DO NOTHING
  RETURNING`), the identity read of every key, the profiles' last-seen update, two delivery rows
  per event (INSERT … SELECT), one commit;
* gateway: `normalise_batch` (marshmallow) + `ingest.store`, the real code without HTTP.

The ratio gateway ÷ bare store is the "CPU per event ≤ 2×" target; the floor ÷ bare store
says how much of it the contract itself takes before any code of ours runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import orjson  # noqa: E402
from sqlalchemy import Engine, insert  # noqa: E402

from bench.ingest import ADMIN_TOKEN  # noqa: E402
from bench.ingest import database as bench_database  # noqa: E402
from gateway import ingest  # noqa: E402
from gateway.config import from_mapping  # noqa: E402
from gateway.identity import statements  # noqa: E402
from gateway.messages import RequestInfo, normalise_batch  # noqa: E402
from gateway.store import outbox  # noqa: E402
from gateway.store.db import make_engine, write_transaction  # noqa: E402
from gateway.store.models import events, identities, identity_keys  # noqa: E402

USERS = 1000
SOURCE = "bench"
DESTINATIONS = ("hook", "cio")


def message(n: int, now: datetime) -> dict[str, Any]:
    return {"type": "track", "userId": f"userId-{n % USERS}",
            "anonymousId": f"anonymousId-{n % USERS}", "event": "Order Completed",
            "messageId": str(uuid.uuid4()), "timestamp": now.isoformat(),
            "properties": {"revenue": 9.99, "sku": "abc"},
            "context": {"library": {"name": "analytics-python", "version": "2.3.0"}}}


def event_row(m: dict[str, Any], now: datetime) -> dict[str, Any]:
    return {"source": SOURCE, "message_id": m["messageId"], "type": m["type"],
            "event": m["event"], "user_id": m["userId"], "anonymous_id": m["anonymousId"],
            "timestamp": now, "received_at": now, "payload": orjson.dumps(m)}


def bare_store(engine: Engine) -> Callable[[list[dict[str, Any]], datetime], None]:
    statement = insert(events)

    def write(batch: list[dict[str, Any]], now: datetime) -> None:
        with write_transaction(engine) as connection:
            connection.execute(statement, [event_row(m, now) for m in batch])

    return write


def outbox_floor(engine: Engine) -> Callable[[list[dict[str, Any]], datetime], None]:
    insert_events = ingest._INSERT_EVENTS[engine.dialect.name]
    queue = outbox._queue_statement(DESTINATIONS)
    load = statements.load_statement(("userId", "anonymousId"))

    def write(batch: list[dict[str, Any]], now: datetime) -> None:
        with write_transaction(engine) as connection:
            new = [row.id for row in connection.execute(
                insert_events, [event_row(m, now) for m in batch])]
            keys = {"userId": sorted({m["userId"] for m in batch}),
                    "anonymousId": sorted({m["anonymousId"] for m in batch})}
            profiles = {row.id for row in connection.execute(load, keys)}
            connection.execute(statements.UPDATE_SEEN[engine.dialect.name], [
                {"b_id": p, "b_first": now, "b_last": now} for p in profiles])
            connection.execute(queue, {"event_ids": new, "at": None, "replay_id": None})

    return write


def gateway(engine: Engine, url: str) -> Callable[[list[dict[str, Any]], datetime], None]:
    config = from_mapping({
        "database_url": url, "admin_token": ADMIN_TOKEN,
        "sources": [{"name": SOURCE, "write_key": "wk_bench"}],
        "destinations": [
            {"name": "hook", "type": "webhook",
             "settings": {"webhookUrl": "http://127.0.0.1:9/hook"}},
            {"name": "cio", "type": "customerio", "settings": {"siteID": "s", "apiKey": "k"}}]})

    def write(batch: list[dict[str, Any]], now: datetime) -> None:
        info = RequestInfo(received_at=now, ip="127.0.0.1", sent_at=None, context=None,
                           integrations=None)
        messages, rejected = normalise_batch(batch, info, config.limits)
        assert not rejected, rejected
        ingest.store(engine, config, SOURCE, messages, now)

    return write


@contextmanager
def database(postgres_url: str | None) -> Iterator[str]:
    """A fresh, migrated database (bench/ingest.py's: a SQLite file or a throwaway schema)."""
    with tempfile.TemporaryDirectory(prefix="gateway-floor-") as tmp, \
            bench_database("floor", Path(tmp), postgres_url) as url:
        yield url


def load_profiles(engine: Engine) -> None:
    now = datetime.now(UTC)
    with write_transaction(engine) as connection:
        ids = [row.id for row in connection.execute(
            insert(identities).returning(identities.c.id, sort_by_parameter_order=True),
            [{"traits": {}, "first_seen": now, "last_seen": now} for _ in range(USERS)])]
        connection.execute(insert(identity_keys), [
            {"kind": kind, "value": f"{kind}-{n}", "identity_id": ids[n]}
            for n in range(USERS) for kind in ("userId", "anonymousId")])


def measure(write: Callable[[list[dict[str, Any]], datetime], None], size: int,
            count: int) -> float:
    """CPU microseconds per event over `count` writes of `size` fresh messages."""
    now = datetime.now(UTC)
    batches = [[message(n * size + i, now) for i in range(size)] for n in range(count + 10)]
    for batch in batches[:10]:  # warm: statements compiled, connections pooled
        write(batch, now)
    started = time.process_time()
    for batch in batches[10:]:
        write(batch, now)
    return (time.process_time() - started) / (count * size) * 1e6


def run(postgres_url: str | None, opts: argparse.Namespace) -> None:
    with database(postgres_url) as url:
        engine = make_engine(url)
        load_profiles(engine)
        writers = {"bare store": bare_store(engine), "outbox floor": outbox_floor(engine),
                   "gateway": gateway(engine, url)}
        label = "PostgreSQL" if postgres_url else "SQLite"
        for size, count in ((100, opts.batches), (1, opts.singles)):
            costs = {name: measure(write, size, count) for name, write in writers.items()}
            bare = costs["bare store"]
            cells = "  ".join(f"{name} {cost:6.1f} µs ({cost / bare:.1f}×)"
                              for name, cost in costs.items())
            print(f"{label:10s} {'batch of 100' if size > 1 else 'single     '}  {cells}",
                  flush=True)
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", metavar="URL", help="also PostgreSQL (a temporary schema)")
    parser.add_argument("--batches", type=int, default=200, help="100-message writes measured")
    parser.add_argument("--singles", type=int, default=2000, help="1-message writes measured")
    opts = parser.parse_args(argv)
    print("CPU of this process per event (× = ÷ bare store); lone writes: no group commit")
    run(None, opts)
    if opts.postgres:
        run(opts.postgres, opts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
