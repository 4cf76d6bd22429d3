"""Engine construction and migrations for SQLite (embedded default) and PostgreSQL.

SQLite needs care to be a safe multi-process store: WAL so readers never block the writer,
a busy timeout so concurrent gunicorn workers wait instead of failing, and `BEGIN IMMEDIATE` so
a writing transaction (`write_transaction`) takes the write lock up front — a deferred
transaction that reads first and writes later can fail with SQLITE_BUSY without the busy handler
ever being consulted.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import stat
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError

from gateway.store.writer_lock import WriterLock, writer_lock

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_CACHE_KIB = 65_536  # per connection, at most: pages are cached as they are used
SQLITE_MMAP_BYTES = 1 << 30  # address space, not memory: the OS page cache backs it
# The WAL file keeps the size of the largest transaction it ever held (a bulk load, `gateway
# copy`, a migration, an unpaced prune: 98-294 MB measured) unless told to shrink back when it
# restarts; this is the size it shrinks back to.
SQLITE_WAL_KEEP_BYTES = 16 << 20  # four times what the 1,000-page autocheckpoint lets it grow to
SUPPORTED_BACKENDS = ("sqlite", "postgresql")


class DatabaseProblem(Exception):
    """The database cannot be used as configured; the message says what to do. `exit_code` is 2
    when the URL itself is wrong (a usage/config mistake), 1 when the database is."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def parse_url(url: str) -> URL:
    """The URL, checked for what we can drive: sqlite, or postgresql with psycopg installed."""
    try:
        parsed = make_url(normalise_url(url))
        backend = parsed.get_backend_name()
        parsed.port  # noqa: B018 - a bad port only shows when read
    except (ArgumentError, ValueError):
        raise DatabaseProblem(
            f"cannot parse database_url {mask_url(url)!r}: expected sqlite:///path/to/file.db "
            "or postgresql://user@host/database", 2) from None
    if backend not in SUPPORTED_BACKENDS:
        raise DatabaseProblem(
            f"database_url {mask_url(url)!r}: {backend} is not supported; "
            "only sqlite and postgresql are", 2)
    if backend == "postgresql" and importlib.util.find_spec("psycopg") is None:
        raise DatabaseProblem("postgresql URLs need: pip install 'event-gateway[postgres]'", 2)
    if backend == "postgresql":
        postgres_prepare_threshold(parsed)  # a bad value is a config mistake, found at load
    return parsed


# libpq takes a password in the query too (`?password=…`, `&sslpassword=…`)
_QUERY_SECRET = re.compile(r"(?i)([?&](?:ssl)?password=)[^&#]*")


def mask_url(url: str) -> str:
    """The URL with every password (`user:pass@` and `?password=`) replaced by ***, fit to
    print: the one helper for every place a database URL is shown or logged."""
    try:
        text = make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        text = re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)
    return _QUERY_SECRET.sub(r"\1***", text)


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names, or None (not SQLite, in memory, or a `file:` URI)."""
    parsed = parse_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:" \
            or database.startswith("file:"):
        return None
    return Path(database)


def require_existing(url: str) -> None:
    """Read-only commands never create a database: refuse a SQLite file that is not there."""
    path = sqlite_file(url)
    if path is not None and not path.is_file():
        raise DatabaseProblem(f"no database at {path}: run gateway serve or gateway migrate first")


def describe_database_error(exc: BaseException, url: str) -> str:
    """One line for a failure to reach or use the database, naming the URL (password masked)
    and, where the driver says it, the short reason."""
    if isinstance(exc, DatabaseProblem):
        return str(exc)
    text = str(getattr(exc, "orig", None) or exc).strip()
    if _is_missing_table(text) or "Can't locate revision" in text:
        return schema_problem("not migrated" if _is_missing_table(text) else "unknown")
    if isinstance(exc, OperationalError | InterfaceError):
        return f"cannot connect to the database at {mask_url(url)}: {_short_reason(text)}"
    first = text.splitlines()[0] if text else type(exc).__name__
    return f"database error at {mask_url(url)}: {first}"


def _is_missing_table(text: str) -> bool:
    return "no such table" in text or bool(re.search(r'relation "[^"]+" does not exist', text))


def _short_reason(text: str) -> str:
    first = text.splitlines()[0] if text else "unknown error"
    for pattern, reason in ((r"Connection refused", "connection refused"),
                            (r'(database "[^"]+" does not exist)', None),
                            (r'(role "[^"]+" does not exist)', None),
                            (r"(password authentication failed[^\n]*)", None),
                            (r"failed to resolve host '([^']+)'", "unknown host {0}"),
                            (r"(unable to open database file)", None),
                            (r"(timeout expired)", None)):
        found = re.search(pattern, text)
        if found:
            return reason.format(*found.groups()) if reason else found.group(1)
    return first.rsplit("failed: ", 1)[-1].replace("FATAL:", "").strip()


def schema_problem(state: str) -> str:
    """What to do about a schema that is not `current`."""
    if state == "not migrated":
        return "the schema is not migrated: run gateway migrate"
    if state == "behind":
        return "the schema is behind this gateway: run gateway migrate"
    return "the schema is newer than this gateway knows: upgrade the gateway"


def normalise_url(url: str) -> str:
    """Let users write plain `postgresql://` URLs; we drive PostgreSQL through psycopg 3."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def is_sqlite(url: str) -> bool:
    return parse_url(url).get_backend_name() == "sqlite"


def make_engine(url: str, create_folder: bool = False) -> Engine:
    """One engine per process (create it after gunicorn forks). Only writers that may start a
    new SQLite database (serve, worker, migrate) pass `create_folder`."""
    parse_url(url)
    path = sqlite_file(url)
    url = normalise_url(url)
    if path is None and not is_sqlite(url):
        parsed, prepare = postgres_prepare_threshold(make_url(url))
        return create_engine(parsed, pool_size=10, max_overflow=20, pool_pre_ping=True,
                             connect_args={"prepare_threshold": prepare})
    if path is not None and create_folder:
        path.parent.mkdir(parents=True, exist_ok=True)
    if path is not None:
        create_private(path)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    _SQLITE_WRITE_LOCKS[engine] = writer_lock(path)
    return engine


PREPARE_THRESHOLD_DEFAULT = 5  # psycopg's: a statement run 5 times on a connection is prepared
_NO_PREPARE = ("none", "off", "false", "no", "never")


def postgres_prepare_threshold(url: URL) -> tuple[URL, int | None]:
    """The URL without `prepare_threshold`, and that parameter as psycopg takes it.

    psycopg 3 prepares a statement on the server once a connection has run it 5 times, under a
    name (`_pg3_0`, …) unique only on that connection. Behind a pooler in transaction mode
    (PgBouncer before 1.21, or without `max_prepared_statements`) the next transaction may run
    on another server connection: "prepared statement "_pg3_2" does not exist", "… already
    exists", or another client's statement under the same name. `?prepare_threshold=none`
    turns server-side preparing off (README "Behind PgBouncer"); a number sets the
    threshold. The query string gives text, which psycopg would reject with a TypeError."""
    raw = url.query.get("prepare_threshold")
    if raw is None:
        return url, PREPARE_THRESHOLD_DEFAULT
    text = (raw[-1] if isinstance(raw, tuple) else raw).strip().lower()
    if text in _NO_PREPARE:
        value = None
    elif text.isdigit() and len(text) <= 9:
        value = int(text)
    else:
        raise DatabaseProblem(
            "database_url: prepare_threshold must be a whole number (statements are prepared "
            "on the server after that many runs) or none (never: for PgBouncer in transaction "
            "mode)", 2)
    return url.difference_update_query(["prepare_threshold"]), value


POOLERS = ("none", "pgbouncer")  # `[database] pooler`


def for_pooler(url: str, pooler: str) -> str:
    """The URL the engines use behind `pooler`: for PgBouncer, server-side prepared statements
    off (`prepare_threshold=none`) unless the URL already says how to prepare."""
    if pooler == "none":
        return url
    parsed = parse_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise DatabaseProblem(f"[database] pooler = {pooler!r} needs a postgresql database_url",
                              2)
    if "prepare_threshold" in parsed.query:
        return url
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}prepare_threshold=none"


def create_private(path: Path) -> None:
    """Create a SQLite file that is not there yet as an empty file of mode 0600 before SQLite
    first opens it: it holds every event and identity, and SQLite gives the -wal and -shm files
    it creates the main file's mode. An existing file is left to `make_private` (serve and
    migrate); a missing folder is reported by the connection."""
    with suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))


_SQLITE_WRITE_LOCKS: weakref.WeakKeyDictionary[Engine, WriterLock] = weakref.WeakKeyDictionary()




def _sqlite_on_connect(dbapi_connection, _record) -> None:
    # Hand transaction control to SQLAlchemy's "begin" event (BEGIN IMMEDIATE below).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit survives power loss, not only a process crash (measured: +0.14 ms a commit)
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    # At 10 M events the indexes outgrow SQLite's default 2 MiB page cache, and every insert
    # into the random-messageId unique index re-read its pages with a system call each:
    # batch throughput fell to 34 % of the empty database's (bench/scale.py). Reads through a
    # memory map share the OS page cache between connections and processes (74 % then).
    cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    cursor.execute(f"PRAGMA mmap_size={SQLITE_MMAP_BYTES}")
    cursor.execute(f"PRAGMA journal_size_limit={SQLITE_WAL_KEEP_BYTES}")
    cursor.close()


def _sqlite_on_begin(connection) -> None:
    immediate = connection.get_execution_options().get("write", False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def sqlite_writer_lock(engine: Engine) -> WriterLock | None:
    """The writer lock `write_transaction` takes on this engine (None: not SQLite)."""
    return _SQLITE_WRITE_LOCKS.get(engine)


@contextmanager
def write_transaction(engine: Engine, background: bool = False) -> Iterator[Connection]:
    """A transaction that will write: on SQLite it takes the write lock up front. A
    `background` one (retention) does not announce itself, so it is the one that yields."""
    lock = _SQLITE_WRITE_LOCKS.get(engine)
    held = nullcontext() if lock is None else lock.background() if background else lock
    with held, engine.connect() as connection:
        connection = connection.execution_options(write=True)
        with connection.begin():
            yield connection


def migrate(url: str, target: str = "head") -> None:
    """Bring the schema to the newest Alembic revision (`gateway migrate`), or to `target`."""
    from alembic import command

    path = sqlite_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        make_private(path)
    command.upgrade(alembic_config(url), target)


def make_private(path: Path) -> list[Path]:
    """A SQLite database made before files were created 0600 (and its -wal and -shm) loses
    its group and other permissions when `serve` or `migrate` starts on it, if this user owns
    it; logged, so an operator who shared it with a group on purpose knows why that stopped.
    Returns what changed."""
    changed = []
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            info = file.stat()
            mode = stat.S_IMODE(info.st_mode)
            if info.st_uid == os.getuid() and mode & 0o077:
                file.chmod(mode & 0o700)  # the owner's bits stay: a read-only file stays so
                changed.append(file)
                log.warning("%s was open to group or others (mode %04o): now %04o", file,
                            mode, mode & 0o700)
        except OSError as exc:  # not there, or not ours to change: gateway check warns
            log.debug("left the mode of %s: %s", file, exc)
    return changed


def alembic_config(url: str):
    from alembic.config import Config as AlembicConfig

    import migrations

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return cfg


def schema_is_current(url: str) -> bool:
    """Is the database at the newest Alembic revision? (`serve` checks PostgreSQL with this.)"""
    engine = make_engine(url)
    try:
        return schema_state(engine) == "current"
    finally:
        engine.dispose()


def schema_state(engine: Engine) -> str:
    """`current`, `not migrated` (no revision), `behind` (an older revision we know) or
    `unknown` (a revision this gateway has never heard of: the database is newer)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from alembic.util.exc import CommandError

    url = engine.url.render_as_string(hide_password=False)
    scripts = ScriptDirectory.from_config(alembic_config(url))
    with engine.connect() as connection:
        revision = MigrationContext.configure(connection).get_current_revision()
    if revision is None:
        return "not migrated"
    if revision == scripts.get_current_head():
        return "current"
    try:
        scripts.get_revision(revision)
    except CommandError:
        return "unknown"
    pending = scripts.iterate_revisions(scripts.get_current_head(), revision)
    if all(getattr(script.module, "runs_after_rollout", False) for script in pending):
        return "current"  # this code runs before those too (`gateway migrate --expand-only`)
    return "behind"


def require_current_schema(engine: Engine) -> None:
    """Admin commands and the worker need every table: say `gateway migrate` if not."""
    state = schema_state(engine)
    if state != "current":
        raise DatabaseProblem(schema_problem(state))
