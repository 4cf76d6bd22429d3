"""The PostgreSQL URL's `prepare_threshold`: read as psycopg takes it (a number or none), so a
URL written for PgBouncer works instead of failing on text psycopg cannot compare."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from gateway.store.db import DatabaseProblem, parse_url, postgres_prepare_threshold

BASE = "postgresql+psycopg://gw:secret@db.internal:6432/gateway"


@pytest.mark.parametrize(("query", "expected"), [
    ("", 5), ("?prepare_threshold=none", None), ("?prepare_threshold=None", None),
    ("?prepare_threshold=off", None), ("?prepare_threshold=0", 0),
    ("?prepare_threshold=12", 12), ("?sslmode=require&prepare_threshold=none", None),
])
def test_prepare_threshold_is_a_number_or_none(query: str, expected: int | None) -> None:
    url, threshold = postgres_prepare_threshold(make_url(BASE + query))
    assert threshold == expected
    assert "prepare_threshold" not in url.query  # psycopg gets it as a connect argument
    assert url.query.get("sslmode") == ("require" if "sslmode" in query else None)


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "9999999999"])
def test_a_bad_prepare_threshold_is_a_config_mistake(value: str) -> None:
    with pytest.raises(DatabaseProblem) as caught:
        parse_url(f"postgresql://gw:secret@db.internal/gateway?prepare_threshold={value}")
    assert caught.value.exit_code == 2
    assert "prepare_threshold must be a whole number" in str(caught.value)
    assert "secret" not in str(caught.value)


TOKEN = "Zq8vN3xT1pL6wR9yK2mB5cJ7dF4gH0sA"


def test_the_pgbouncer_pooler_turns_server_side_prepares_off() -> None:
    from gateway.config import from_mapping

    def url(database_url: str, **env: str) -> str:
        raw = {"database_url": database_url, "admin_token": TOKEN}
        if not env:
            raw["database"] = {"pooler": "pgbouncer"}
        return from_mapping(raw, env=env).database_url

    assert url("postgresql://gw@pool:6432/gw") == "postgresql://gw@pool:6432/gw?prepare_threshold=none"
    assert url("postgresql://gw@pool/gw?sslmode=require").endswith(
        "?sslmode=require&prepare_threshold=none")
    assert url("postgresql://gw@pool/gw?prepare_threshold=9").endswith("?prepare_threshold=9")
    assert url("postgresql://gw@pool/gw", GATEWAY_DATABASE_POOLER="pgbouncer").endswith(
        "?prepare_threshold=none")


@pytest.mark.parametrize(("database", "url", "message"), [
    ({"pooler": "pgbouncr"}, "postgresql://gw@pool/gw",
     "[database]: field 'pooler': must be one of none, pgbouncer, not 'pgbouncr'"),
    ({"poolr": "pgbouncer"}, "postgresql://gw@pool/gw",
     "[database]: unknown field 'poolr' (did you mean 'pooler'?)"),
    ({"pooler": "pgbouncer"}, "sqlite:///gateway.db",
     "[database] pooler = 'pgbouncer' needs a postgresql database_url"),
])
def test_a_bad_database_table_is_one_clear_line(database: dict, url: str, message: str) -> None:
    from gateway.config import ConfigFileError, from_mapping

    with pytest.raises(ConfigFileError) as caught:
        from_mapping({"database_url": url, "admin_token": TOKEN, "database": database})
    assert str(caught.value) == f"<config>: {message}"
