"""A slow claim on PostgreSQL refreshes the deliveries table's statistics (claim.py says why);
on SQLite there is nothing to refresh."""

from __future__ import annotations

from sqlalchemy import text

from gateway.delivery.claim import refresh_statistics
from gateway.store.db import make_engine


def test_refresh_statistics(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        refreshed = refresh_statistics(engine)
        if engine.dialect.name != "postgresql":
            assert refreshed is False
            return
        assert refreshed is True
        with engine.connect() as connection:
            analyzed = connection.execute(text(
                "SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'deliveries' "
                "AND schemaname = current_schema()")).scalar_one()
        assert analyzed is not None
    finally:
        engine.dispose()
