"""retention: indexes the pruning loop reads by age, and SQLite's incremental auto-vacuum

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

The pruning loop (gateway/retention.py) takes the oldest expired rows of each rule, a small batch
at a time: deliveries by (state, updated_at) and attempts by started_at need an index each, or
every batch would read every row (events already have received_at, migration 0003).

SQLite: with `auto_vacuum = INCREMENTAL` the pages pruning frees go back to the file system by
`PRAGMA incremental_vacuum` (the loop runs it after its batches), so the file stops growing once
retention holds. Changing auto_vacuum on a file that already has tables only takes effect after
a VACUUM, which rewrites the whole file (it needs free disk space of about the file's size and
holds the write lock meanwhile) and cannot run inside a transaction: it runs here, between the
migration's transaction boundaries.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# an index only
safe_while_older_nodes_run = True

INDEXES = (
    ("ix_deliveries_state_updated_at", "deliveries", ["state", "updated_at"]),
    ("ix_delivery_attempts_started_at", "delivery_attempts", ["started_at"]),
)


def upgrade() -> None:
    _set_auto_vacuum("INCREMENTAL")  # first: its commit then holds only earlier revisions
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    _set_auto_vacuum("NONE")
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)


def _set_auto_vacuum(mode: str) -> None:
    """SQLite only: set the mode, then VACUUM outside any transaction so the file takes it."""
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    raw = bind.connection.dbapi_connection
    raw.commit()  # end the migration's transaction: VACUUM refuses to run inside one
    try:
        raw.execute(f"PRAGMA auto_vacuum = {mode}")
        raw.execute("VACUUM")
    finally:
        raw.execute("BEGIN")  # the migration's transaction goes on (the version row)
