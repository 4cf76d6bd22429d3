"""partitions: events, deliveries and delivery_attempts partitioned by week on PostgreSQL

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06

Retention then drops a whole week (gateway/store/partitions.py, gateway/retention.py) instead of
deleting it row by row. Each table is renamed `<table>_legacy` and attached, as it is, to a new
partitioned table of the old name, as the partition of everything before the conversion (an
empty table is dropped instead); the rest of this week and the weeks after get partitions of
their own. Nothing is copied: the conversion scans each table once (to prove its rows fit the
partition) and builds the new primary key of each (it must include the time column) and, for
events, the plain (source, message_id) index that replaces the unique one, so it takes seconds
per million rows and holds the tables meanwhile. The keys of
`events` go to `message_ids` (0013), which now deduplicates alone; the foreign keys between the
three tables go (a key cannot reference a partitioned table without its time column): ingest
writes them together, and retention and regulations delete them together.

Older nodes insert into `events` with ON CONFLICT (source, message_id), which no longer has a
unique index to match: run this once every node runs this release (`gateway migrate` after the
rollout; `gateway migrate --expand-only` stops before it). This release's code works before and
after it. SQLite is not partitioned: a no-op there.
"""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from alembic import op
from sqlalchemy import text

from gateway.store import partitions

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# renames the tables older nodes write (their ON CONFLICT needs a unique index events loses)
safe_while_older_nodes_run = False
# this release's code runs on the schema before and after it: `migrate --expand-only` leaves it
# for after the rollout
runs_after_rollout = True

DEDUP_KEY = "uq_events_source_message_id"


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    now = datetime.now(UTC)
    # every table at once, in the order ingest takes them (message_ids, then events, then
    # deliveries): a live node's transaction waits instead of deadlocking with this one
    op.execute("LOCK TABLE message_ids, events, deliveries, delivery_attempts "
               "IN ACCESS EXCLUSIVE MODE")
    for table in ("delivery_attempts", "deliveries"):  # the keys that point at the others
        for (name,) in bind.execute(text(
                "SELECT conname FROM pg_constraint WHERE contype = 'f' "
                "AND conrelid = to_regclass(:t)"), {"t": table}):
            op.execute(f'ALTER TABLE "{table}" DROP CONSTRAINT "{name}"')
    for table, column in partitions.PARTITIONED.items():
        _convert(bind, table, column, now)
    op.execute("INSERT INTO message_ids (source, message_id, received_at) "
               "SELECT source, message_id, received_at FROM events "
               "ON CONFLICT (source, message_id) DO NOTHING")
    for table in partitions.PARTITIONED:  # this week (and the next, a day before it starts)
        partitions.create(bind, table, now)
        partitions.create(bind, table, now + partitions.AHEAD)


def _convert(bind, table: str, column: str, now: datetime) -> None:
    legacy = f"{table}_legacy"
    # the legacy partition ends past its newest row (a node's clock may run ahead of ours)
    newest = bind.execute(text(f'SELECT max("{column}") FROM "{table}"')).scalar()
    boundary = max([now] + ([newest.astimezone(UTC)] if newest else []))
    boundary = boundary.replace(microsecond=0) + timedelta(seconds=1)
    indexes = _indexes(bind, table)
    op.execute(f'ALTER TABLE "{table}" RENAME TO "{legacy}"')
    # the key becomes (id, time) for the whole table; built over the old rows below
    op.execute(f'ALTER TABLE "{legacy}" DROP CONSTRAINT "pk_{table}"')
    for name, _, _ in indexes:
        op.execute(f'ALTER INDEX "{name}" RENAME TO "{name}_legacy"')
    op.execute(f'CREATE TABLE "{table}" (LIKE "{legacy}" INCLUDING DEFAULTS) '
               f'PARTITION BY RANGE ("{column}")')
    op.execute(f'ALTER SEQUENCE "{table}_id_seq" OWNED BY "{table}".id')
    legacy_kept = bind.execute(text(f'SELECT EXISTS (SELECT 1 FROM "{legacy}")')).scalar()
    if legacy_kept:
        op.execute(f'ALTER TABLE "{legacy}" ADD CONSTRAINT "{legacy}_bound" '
                   f"CHECK (\"{column}\" < '{boundary.isoformat()}')")
        op.execute(f'ALTER TABLE "{table}" ATTACH PARTITION "{legacy}" '
                   f"FOR VALUES FROM (MINVALUE) TO ('{boundary.isoformat()}')")
        op.execute(f'ALTER TABLE "{legacy}" DROP CONSTRAINT "{legacy}_bound"')
    else:  # a new installation: weeks only
        op.execute(f'DROP TABLE "{legacy}"')
    op.execute(f'ALTER TABLE "{table}" ADD CONSTRAINT "pk_{table}" PRIMARY KEY (id, "{column}")')
    for name, columns, _ in indexes:
        if name == DEDUP_KEY:  # now message_ids' job; lookups by messageId keep an index
            if legacy_kept:  # (a unique index cannot stand for the table's plain one)
                op.execute(f'ALTER TABLE "{legacy}" DROP CONSTRAINT "{name}_legacy"')
            name = "ix_events_source_message_id"
        op.execute(f'CREATE INDEX "{name}" ON "{table}" ({columns})')


def _indexes(bind, table: str) -> list[tuple[str, str, bool]]:
    """(name, column list, unique) of the table's indexes other than its primary key."""
    rows = bind.execute(text(
        "SELECT c.relname, pg_get_indexdef(i.indexrelid), i.indisunique "
        "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE i.indrelid = to_regclass(:t) AND NOT i.indisprimary"), {"t": table}).all()
    return [(name, definition[definition.index("(") + 1:definition.rindex(")")], unique)
            for name, definition, unique in rows]


def downgrade() -> None:
    """Back to plain tables: every row copied into one (this one does take a while)."""
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    for table in partitions.PARTITIONED:
        indexes = _indexes(bind, table)
        flat = f"{table}_flat"
        op.execute(f'CREATE TABLE "{flat}" (LIKE "{table}" INCLUDING DEFAULTS)')
        op.execute(f'INSERT INTO "{flat}" SELECT * FROM "{table}"')
        op.execute(f'ALTER SEQUENCE "{table}_id_seq" OWNED BY "{flat}".id')
        op.execute(f'DROP TABLE "{table}"')
        op.execute(f'ALTER TABLE "{flat}" RENAME TO "{table}"')
        op.execute(f'ALTER TABLE "{table}" ADD CONSTRAINT "pk_{table}" PRIMARY KEY (id)')
        for name, columns, _ in indexes:
            if name == "ix_events_source_message_id":
                op.execute(f'ALTER TABLE events ADD CONSTRAINT "{DEDUP_KEY}" '
                           "UNIQUE (source, message_id)")
            else:
                op.execute(f'CREATE INDEX "{name}" ON "{table}" ({columns})')
    # retention by the week may have left rows the foreign keys would refuse (attempts of a
    # dropped week of deliveries, deliveries of a dropped week of events): they go first
    op.execute("DELETE FROM delivery_attempts a WHERE NOT EXISTS "
               "(SELECT 1 FROM deliveries d WHERE d.id = a.delivery_id)")
    op.execute("DELETE FROM deliveries d WHERE d.event_id IS NOT NULL AND NOT EXISTS "
               "(SELECT 1 FROM events e WHERE e.id = d.event_id)")
    op.execute("DELETE FROM delivery_attempts a WHERE NOT EXISTS "
               "(SELECT 1 FROM deliveries d WHERE d.id = a.delivery_id)")
    op.execute("ALTER TABLE deliveries ADD CONSTRAINT fk_deliveries_event_id_events "
               "FOREIGN KEY (event_id) REFERENCES events (id) ON DELETE CASCADE")
    op.execute("ALTER TABLE delivery_attempts ADD CONSTRAINT "
               "fk_delivery_attempts_delivery_id_deliveries FOREIGN KEY (delivery_id) "
               "REFERENCES deliveries (id) ON DELETE CASCADE")
