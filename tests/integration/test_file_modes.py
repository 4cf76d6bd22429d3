"""The SQLite database holds every event and identity, the config every secret: both are the
service user's alone. A new database (and the -wal and -shm files SQLite gives the main file's
mode) is created 0600 whatever the umask; `gateway check` warns about a config or database
file that group or others can open."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from gateway.cli import main
from gateway.store.db import make_engine, make_private
from tests.conftest import ADMIN_TOKEN, WRITE_KEY, write_toml


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """022: what a service manager or a login shell usually gives (files 0644 by default)."""
    before = os.umask(0o022)
    yield
    os.umask(before)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def write_config(folder: Path) -> Path:
    path = folder / "gateway.toml"
    write_toml(path, {"database_url": "sqlite:///gateway.db", "admin_token": ADMIN_TOKEN,
                      "sources": [{"name": "web", "write_key": WRITE_KEY}]})
    return path


def test_a_new_database_and_its_wal_and_shm_are_0600(tmp_path: Path, permissive_umask,
                                                     capsys) -> None:
    config = write_config(tmp_path)
    os.chmod(config, 0o600)
    assert main(["--config", str(config), "migrate"]) == 0
    database = tmp_path / "gateway.db"
    assert mode(database) == 0o600
    engine = make_engine(f"sqlite:///{database}")
    try:
        with engine.begin() as connection:  # a write: SQLite creates -wal and -shm now
            connection.execute(text("CREATE TABLE probe (x INTEGER)"))
        for suffix in ("-wal", "-shm"):
            assert mode(tmp_path / f"gateway.db{suffix}") == 0o600, suffix
        capsys.readouterr()
        assert main(["--config", str(config), "check"]) == 0
        assert "WARN" not in capsys.readouterr().out
    finally:
        engine.dispose()
    # a database in a new folder (serve, worker and migrate create it) too
    elsewhere = make_engine(f"sqlite:///{tmp_path / 'new' / 'g.db'}", create_folder=True)
    try:
        with elsewhere.connect() as connection:
            connection.execute(text("SELECT 1"))
        assert mode(tmp_path / "new" / "g.db") == 0o600
    finally:
        elsewhere.dispose()


def test_check_warns_about_files_others_can_read_and_migrate_narrows_the_database(
        tmp_path: Path, permissive_umask, capsys, caplog: pytest.LogCaptureFixture) -> None:
    config = write_config(tmp_path)  # written 0644 under this umask
    assert main(["--config", str(config), "migrate"]) == 0
    database = tmp_path / "gateway.db"
    os.chmod(database, 0o644)  # a database created before this release
    engine = make_engine(f"sqlite:///{database}")
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE probe (x INTEGER)"))
        assert mode(tmp_path / "gateway.db-wal") == 0o644  # SQLite follows the main file
        capsys.readouterr()
        assert main(["--config", str(config), "check"]) == 0  # a warning, not a failure
        out = capsys.readouterr().out
    finally:
        engine.dispose()
    warnings = [line for line in out.splitlines() if line.startswith("WARN")]
    assert len(warnings) == 4, out  # the config, the database, its -wal and -shm
    assert f"{config} has mode 0644: group or others can read it; run chmod 600 {config}" \
        in warnings[0] and warnings[0].split()[1:3] == ["config", "file"]
    assert f"{database} has mode 0644" in warnings[1]
    assert f"chmod 600 {database}-wal" in warnings[2]
    assert f"chmod 600 {database}-shm" in warnings[3]
    os.chmod(config, 0o640)  # group-readable is still readable by others than the service
    # serve and migrate narrow the database (and its -wal and -shm) to 0600, saying so
    (tmp_path / "gateway.db-wal").touch()  # left by a process that stopped (0644, empty)
    with caplog.at_level(logging.WARNING, logger="gateway.store.db"):
        assert main(["--config", str(config), "migrate"]) == 0
    assert mode(database) == 0o600  # (SQLite removed the -wal when migrate closed)
    assert f"{database} was open to group or others (mode 0644): now 0600" in caplog.text
    assert f"{database}-wal was open to group or others (mode 0644): now 0600" in caplog.text
    capsys.readouterr()
    assert main(["--config", str(config), "check"]) == 0
    out = capsys.readouterr().out
    assert f"{config} has mode 0640" in out and f"{database}" not in out.split("schema")[1]


def test_narrowing_keeps_the_owners_bits(tmp_path: Path) -> None:
    """A database made read-only on purpose stays read-only: only group and others lose."""
    database = tmp_path / "g.db"
    database.touch()
    os.chmod(database, 0o444)
    assert make_private(database) == [database]
    assert mode(database) == 0o400
    assert make_private(database) == []  # nothing left to narrow
