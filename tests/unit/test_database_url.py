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
