"""Engine construction and migrations for SQLite (embedded default) and PostgreSQL.

SQLite needs care to be a safe multi-process store: WAL so readers never block the writer,
a busy timeout so concurrent gunicorn workers wait instead of failing, and `BEGIN IMMEDIATE` so
a writing transaction (`write_transaction`) takes the write lock up front — a deferred
transaction that reads first and writes later can fail with SQLITE_BUSY without the busy handler
ever being consulted.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

SQLITE_BUSY_TIMEOUT_MS = 30_000


def normalise_url(url: str) -> str:
    """Let users write plain `postgresql://` URLs; we drive PostgreSQL through psycopg 3."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def is_sqlite(url: str) -> bool:
    return make_url(normalise_url(url)).get_backend_name() == "sqlite"


def make_engine(url: str) -> Engine:
    """One engine per process (create it after gunicorn forks)."""
    url = normalise_url(url)
    if not is_sqlite(url):
        return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    _SQLITE_WRITE_LOCKS[engine] = threading.RLock()
    return engine


# One writer at a time per process and SQLite file: threads queue on a fair Python lock instead
# of SQLite's busy handler, which sleeps and polls (unfair, and p99 spikes under many threads).
_SQLITE_WRITE_LOCKS: weakref.WeakKeyDictionary[Engine, threading.RLock] = (
    weakref.WeakKeyDictionary())


def _sqlite_on_connect(dbapi_connection, _record) -> None:
    # Hand transaction control to SQLAlchemy's "begin" event (BEGIN IMMEDIATE below).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit survives power loss, not only a process crash (measured: +0.14 ms a commit)
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_on_begin(connection) -> None:
    immediate = connection.get_execution_options().get("write", False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that will write: on SQLite it takes the write lock up front."""
    lock = _SQLITE_WRITE_LOCKS.get(engine)
    with lock or nullcontext(), engine.connect() as connection:
        connection = connection.execution_options(write=True)
        with connection.begin():
            yield connection


def migrate(url: str) -> None:
    """Bring the schema to the newest Alembic revision (`gateway migrate`)."""
    from alembic import command

    command.upgrade(alembic_config(url), "head")


def alembic_config(url: str):
    from alembic.config import Config as AlembicConfig

    import migrations

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return cfg


def schema_is_current(url: str) -> bool:
    """Is the database at the newest Alembic revision? (`serve` checks PostgreSQL with this.)"""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision() == head
    finally:
        engine.dispose()
