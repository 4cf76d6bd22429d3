"""The gateway behind a real PgBouncer in transaction pooling mode (Debian's `pgbouncer`).

Transaction pooling hands each transaction whichever server connection is free, so anything
kept on a connection between transactions is lost or, worse, seen by another client: psycopg's
server-side prepared statements (named `_pg3_0`, … per connection) and session advisory locks.
The control test proves this harness really pools that way (the default settings fail through
it); the others run the gateway through it with `?prepare_threshold=none` and find no error.
"""

from __future__ import annotations

import ast
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from gateway.store.db import make_engine, migrate, normalise_url
from tests.conftest import ADMIN_TOKEN, POSTGRES_URL, WRITE_KEY, LiveGateway, free_port
from tests.helpers import basic, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

PGBOUNCER = shutil.which("pgbouncer") or next(
    (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.path.exists(p)), None)
PREPARE_ERRORS = ("prepared statement", "bind message supplies")


class PgBouncer:
    """A PgBouncer on a free port in front of a fresh database, two server connections at most
    (so that client transactions share them)."""

    def __init__(self, upstream: str) -> None:
        server = make_url(upstream)
        self.database = f"gw_bouncer_{uuid.uuid4().hex[:10]}"
        self.admin = create_engine(normalise_url(upstream), isolation_level="AUTOCOMMIT")
        with self.admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{self.database}"'))
        self.port = free_port()
        # PgBouncer refuses to run as root and then drops to `nobody`: its files must be readable
        self.folder = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
        self.folder.chmod(0o755)
        ini = self.folder / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"{self.database} = host={server.host or '127.0.0.1'} port={server.port or 5432} "
            f"dbname={self.database} user={server.username or 'postgres'}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            "auth_type = any\npool_mode = transaction\ndefault_pool_size = 2\n"
            "max_client_conn = 500\n")
        ini.chmod(0o644)
        self.log = open(self.folder / "pgbouncer.log", "wb")  # noqa: SIM115 - closed in stop()
        as_root = ["-u", "nobody"] if os.geteuid() == 0 else []
        self.process = subprocess.Popen([PGBOUNCER, *as_root, str(ini)], stdout=self.log,
                                        stderr=subprocess.STDOUT)
        user = server.username or "postgres"
        self.url = f"postgresql://{user}@127.0.0.1:{self.port}/{self.database}"
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError((self.folder / "pgbouncer.log").read_text())
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("pgbouncer did not listen")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self.log.close()
        with self.admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)'))
        self.admin.dispose()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def pgbouncer() -> Iterator[PgBouncer]:
    if not POSTGRES_URL:
        pytest.skip("GATEWAY_TEST_POSTGRES_URL is not set")
    if PGBOUNCER is None:
        pytest.skip("no pgbouncer binary (apt-get install pgbouncer; .ci/run installs it)")
    bouncer = PgBouncer(POSTGRES_URL)
    yield bouncer
    bouncer.stop()


def hammer(url: str, threads: int = 8, rounds: int = 40) -> list[str]:
    """The same few statements from many threads, many times each: what prepares them."""
    engine = make_engine(url)
    errors: list[str] = []

    def run(n: int) -> None:
        for i in range(rounds):
            try:
                with engine.begin() as connection:
                    connection.execute(text("SELECT CAST(:a AS integer) + 1"), {"a": i})
                    connection.execute(text("SELECT count(*) FROM events WHERE user_id = :u"),
                                       {"u": f"user-{n}"})
            except Exception as exc:  # every failure is the finding
                errors.append(str(exc).splitlines()[0])

    workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    engine.dispose()
    return errors


def test_the_harness_pools_by_transaction(pgbouncer: PgBouncer) -> None:
    """Control: psycopg's default (prepare after 5 runs) breaks through this PgBouncer, so the
    tests below would see it if the gateway prepared statements."""
    migrate(pgbouncer.url + "?prepare_threshold=none")
    errors = hammer(pgbouncer.url)
    assert any(marker in error for error in errors for marker in PREPARE_ERRORS), errors[:3]


def test_prepare_threshold_none_runs_clean_through_the_pooler(pgbouncer: PgBouncer) -> None:
    url = pgbouncer.url + "?prepare_threshold=none"
    migrate(url)  # migrations run through the pooler too
    assert hammer(url) == []


def test_the_gateway_ingests_and_delivers_through_pgbouncer(
        pgbouncer: PgBouncer, standin, tmp_path: Path) -> None:
    """`gateway serve` (two HTTP workers and the delivery worker) behind PgBouncer with
    `[database] pooler = "pgbouncer"`: every event answered 200 is stored once and
    delivered, and the log has no statement error."""
    url = pgbouncer.url + "?prepare_threshold=none"
    raw = {"database_url": pgbouncer.url, "admin_token": ADMIN_TOKEN,
           "database": {"pooler": "pgbouncer"},  # what turns prepares off for serve
           "sources": [{"name": "web", "write_key": WRITE_KEY}],
           "destinations": [{"name": "hook", "type": "webhook", "endpoint": standin.url,
                             "settings": {"webhookUrl": "https://hooks.example/in"}}],
           "worker": {"poll_interval_ms": 50}}
    migrate(url)  # `gateway migrate` before serve, as on any PostgreSQL
    gateway = LiveGateway(tmp_path, raw, workers=2, delivery_worker=True)
    try:
        sent: list[str] = []
        failures: list[int] = []

        def client(n: int) -> None:
            with requests.Session() as session:
                for i in range(25):
                    message_id = f"m-{n}-{i}"
                    answer = session.post(f"{gateway.url}/v1/track", headers=basic(WRITE_KEY),
                                          json={"userId": f"user-{n}", "event": "Pooled",
                                                "messageId": message_id}, timeout=30)
                    (sent.append(message_id) if answer.status_code == 200
                     else failures.append(answer.status_code))

        clients = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join()
        assert failures == [] and len(sent) == 200
        engine = make_engine(url)

        def states() -> dict[str, int]:
            with engine.connect() as connection:
                return dict(connection.execute(
                    text("SELECT state, count(*) FROM deliveries GROUP BY state")).all())

        wait_for(lambda: states() == {"delivered": 200}, 60, lambda: states())
        with engine.connect() as connection:
            stored = connection.execute(text("SELECT count(*) FROM events")).scalar()
        engine.dispose()
        assert len({r.json["messageId"] for r in standin.requests}) == 200
        assert stored == 200
    finally:
        gateway.stop()
    log = Path(gateway.log.name).read_text(errors="replace")
    assert not any(marker in log for marker in PREPARE_ERRORS), log[-2000:]


def test_every_advisory_lock_is_transaction_scoped() -> None:
    """Session advisory locks outlive the transaction and stay on a pooled server connection
    another client then holds: only `pg_advisory_xact_lock*` may be taken."""
    root = Path(__file__).resolve().parents[2] / "gateway"
    calls = [node.value for path in root.rglob("*.py")
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Constant) and isinstance(node.value, str)
             and "pg_advisory" in node.value]
    assert calls, "the gateway takes advisory locks (suppression, identity): found none"
    for sql in calls:
        for name in (word for word in sql.replace("(", " ").split() if "pg_advisory" in word):
            assert name.startswith("pg_advisory_xact_lock"), sql
