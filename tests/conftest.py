"""Shared fixtures: a migrated database per test (SQLite, and PostgreSQL when
GATEWAY_TEST_POSTGRES_URL is set), the app on it, and a real `gateway serve` on a free port."""

from __future__ import annotations

import gc
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, text

from gateway import create_app
from gateway.config import Config, from_mapping
from gateway.delivery.worker import Worker
from gateway.store.db import migrate, normalise_url
from tests.standin import StandIn

POSTGRES_URL = os.environ.get("GATEWAY_TEST_POSTGRES_URL")
WRITE_KEY = "wk_test_web"
OTHER_KEY = "wk_test_server"
ADMIN_TOKEN = "test-admin-token-k3v9q2x7m4w8p6z1"
EXPLAIN_SECRET = "explain-secret-9"
BROWSER_DIR = Path(__file__).resolve().parent / "integration" / "browser"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome-stable", "google-chrome")


def base_config(database_url: str, **overrides: Any) -> dict[str, Any]:
    """The config most tests use: two sources, a few destinations of different types."""
    raw: dict[str, Any] = {
        "database_url": database_url,
        "admin_token": ADMIN_TOKEN,
        "sources": [
            {"name": "web", "write_key": WRITE_KEY},
            {"name": "server", "write_key": OTHER_KEY},
            {"name": "retired", "write_key": "wk_disabled", "enabled": False},
        ],
        "destinations": [
            {"name": "cio", "type": "customerio", "sources": ["web", "server"],
             "settings": {"siteID": "site-1", "apiKey": "cio-key"}},
            {"name": "kustomer-main", "type": "kustomer", "sources": ["web"],
             "settings": {"apiKey": "kustomer-key"}},
            {"name": "paused", "type": "custify", "enabled": False,
             "settings": {"apiKey": "custify-key"}},
        ],
    }
    raw.update(overrides)
    return raw


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite file migrated to the newest revision, copied for each test: migrating
    costs ~0.1 s, a copy ~1 ms (SQLite removes the -wal when migrate closes it)."""
    path = tmp_path_factory.mktemp("migrated") / "gateway.db"
    migrate(f"sqlite:///{path}")
    assert not Path(f"{path}-wal").exists(), "the migrated file must stand alone"
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A freshly migrated database: a file for SQLite, a private schema on PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "gateway.db"
        shutil.copy2(request.getfixturevalue("migrated_sqlite"), path)  # mode 0600 too
        yield f"sqlite:///{path}"
        return
    if not POSTGRES_URL:
        pytest.skip("GATEWAY_TEST_POSTGRES_URL is not set")
    with pg_schema() as url:
        yield url


class pg_schema:
    """A throwaway PostgreSQL schema, migrated (unless `migrated` is False); dropped
    afterwards."""

    def __init__(self, migrated: bool = True) -> None:
        self.migrated = migrated

    def __enter__(self) -> str:
        assert POSTGRES_URL
        self.schema = f"t_{uuid.uuid4().hex[:12]}"
        self.admin = create_engine(normalise_url(POSTGRES_URL))
        with self.admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{self.schema}"'))
        separator = "&" if "?" in POSTGRES_URL else "?"
        url = f"{POSTGRES_URL}{separator}options=-csearch_path%3D{self.schema}"
        if self.migrated:
            migrate(url)
        return url

    def __exit__(self, *exc: Any) -> None:
        from gateway import rejections
        from gateway.plans import record as violations_record

        rejections.flush_all()  # no background write may hold a lock the DROP needs
        violations_record.flush_all()
        with self.admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{self.schema}" CASCADE'))
        self.admin.dispose()


@pytest.fixture
def config(database_url: str) -> Config:
    return from_mapping(base_config(database_url))


@pytest.fixture
def app(config: Config):
    application = create_app(config)
    yield application
    application.extensions["gateway.engine"].dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def engine(app):
    return app.extensions["gateway.engine"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_toml(path: Path, raw: dict[str, Any]) -> None:
    """Enough TOML for our config shape (top-level scalars, [[sources]], [[destinations]])."""
    lines = [f"{k} = {_toml(v)}" for k, v in raw.items() if not isinstance(v, list | dict)]
    for table, items in raw.items():
        if isinstance(items, dict):
            lines.append(f"[{table}]")
            lines += [f"{k} = {_toml(v)}" for k, v in items.items()]
    for table in ("sources", "destinations"):
        for item in raw.get(table, []):
            lines.append(f"[[{table}]]")
            lines += [f"{k} = {_toml(v)}" for k, v in item.items() if not isinstance(v, dict)]
            for k, v in item.items():
                if isinstance(v, dict):
                    lines.append(f"[{table}.{k}]")
                    lines += [f"{kk} = {_toml(vv)}" for kk, vv in v.items()]
    path.write_text("\n".join(lines) + "\n")


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table (e.g. [identity] limits = { userId = 2 })
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


SDK_SESSION_MODULES = ("segment.analytics.request", "rudderstack.analytics.request")


class LiveGateway:
    """`gateway serve` in a subprocess, as a user runs it."""

    def __init__(self, workdir: Path, raw_config: dict[str, Any], workers: int = 1,
                 delivery_worker: bool = False, host: str = "127.0.0.1",
                 tls_ca: str | None = None) -> None:
        """`tls_ca`: the config serves TLS (`[server] certfile`) with a certificate this CA
        file signed; `url` is then https and `verify` the CA, for requests."""
        self.port = free_port()
        self.url = f"{'https' if tls_ca else 'http'}://127.0.0.1:{self.port}"
        self.verify: str | bool = tls_ca or True
        self.config_path = workdir / "gateway.toml"
        write_toml(self.config_path, raw_config)
        self.log = open(workdir / "gateway.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "--config", str(self.config_path), "serve",
             "--bind", f"{host}:{self.port}", "--workers", str(workers),
             *([] if delivery_worker else ["--no-worker"])],
            cwd=workdir, stdout=self.log, stderr=subprocess.STDOUT)
        self.database_url = raw_config["database_url"]
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.log_text()}")
            try:  # serve binds the port first: early requests wait in the backlog
                with requests.Session() as session:  # closed now, not when collected
                    health = session.get(self.url + "/health", timeout=1, verify=self.verify,
                                         headers={"Connection": "close"})
                if health.status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gateway did not start: {self.log_text()}")

    def log_text(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def stop(self) -> None:
        # Clients the test dropped may still hold kept-alive connections in reference cycles
        # (SDK clients, sessions): collected now, they close, and the server's graceful stop
        # does not linger 2 s on each (gunicorn gives kept-alive connections that long).
        gc.collect()
        for name in SDK_SESSION_MODULES:  # the Python SDKs pool connections in a global Session
            module = sys.modules.get(name)
            if module is not None:
                module._session.close()  # usable again afterwards: its pools are made anew
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


@pytest.fixture
def live_gateway(database_url: str, tmp_path: Path) -> Iterator[LiveGateway]:
    gateway = LiveGateway(tmp_path, base_config(database_url))
    yield gateway
    gateway.stop()


@pytest.fixture
def standin() -> Iterator[StandIn]:
    """A destination stand-in on a free port (tests/standin.py), closed afterwards."""
    server = StandIn()
    yield server
    server.close()


@pytest.fixture(scope="module")
def chromium() -> str:
    """The path of a Chromium, or the test is skipped."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no Chromium found (apt-get install chromium; .ci/run installs it where it can)")


def explain_config(database_url: str, endpoint: str) -> dict[str, Any]:
    """Two sources and four destinations: one of each branch `explain` can tell."""
    return {
        "database_url": database_url, "admin_token": ADMIN_TOKEN,
        "sources": [{"name": "web", "write_key": WRITE_KEY},
                    {"name": "server", "write_key": "wk_server"}],
        "destinations": [
            {"name": "hook", "type": "webhook", "endpoint": endpoint, "sources": ["web"],
             "settings": {"webhookUrl": "https://h.example/in", "apiKey": EXPLAIN_SECRET}},
            {"name": "cfy", "type": "custify", "endpoint": endpoint, "sources": ["web"],
             "settings": {"apiKey": "cfy-key"}},
            {"name": "server-only", "type": "webhook", "endpoint": endpoint,
             "sources": ["server"], "settings": {"webhookUrl": "https://h.example/s"}},
            {"name": "off", "type": "webhook", "enabled": False, "sources": ["web"],
             "settings": {"webhookUrl": "https://h.example/o"}},
        ],
        "retry": {"base_delay_seconds": 600},
    }


@pytest.fixture
def explain_setup(database_url: str, tmp_path: Path) -> Iterator[tuple[Any, Worker, StandIn, Path]]:
    """The app on `explain_config`, its worker, the stand-in and the config file."""
    standin = StandIn()
    raw = explain_config(database_url, standin.url)
    path = tmp_path / "gateway.toml"
    write_toml(path, raw)
    app = create_app(from_mapping(raw))
    worker = Worker(app.extensions["gateway.engine"], app.extensions["gateway.config"])
    yield app, worker, standin, path
    worker.close()
    standin.close()
    app.extensions["gateway.engine"].dispose()
