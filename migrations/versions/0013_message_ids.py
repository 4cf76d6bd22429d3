"""message_ids: the record of every stored messageId, for deduplication on PostgreSQL

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06

The expand half of partitioning (0014). A partitioned table's unique indexes must include the
partition key, so once `events` is partitioned by `received_at` it can no longer hold
UNIQUE (source, message_id): this table does, and from this release on, ingest on PostgreSQL
claims a message's key here before it stores the event (gateway/ingest.py). Older nodes keep
inserting into `events` alone, guarded by its unique constraint as before; 0014 copies their keys
in. SQLite keeps the unique constraint on `events` and has no use for this table.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# a new table: older nodes do not read it
safe_while_older_nodes_run = True


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.create_table(
        "message_ids",
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("source", "message_id", name="pk_message_ids"),
    )
    op.create_index("ix_message_ids_received_at", "message_ids", ["received_at"])


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("ix_message_ids_received_at", table_name="message_ids")
    op.drop_table("message_ids")
