"""regulations: suppression and deletion by user

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

`regulations` records what was asked and what came of it (never the subject's keys);
`regulation_subjects` holds the keys a deletion still has to send to destinations, erased when
they have answered; `suppressed_keys` holds SHA-256 hashes of suppressed identity keys, read by
ingest. A deletion request to a destination is an ordinary `deliveries` row (retries, attempts,
dead letters) carrying `regulation_id` instead of an `event_id`, so `event_id` becomes nullable.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# new tables, a nullable column, event_id made nullable: older nodes write rows as before
safe_while_older_nodes_run = True

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


@contextmanager
def _attempts_kept() -> Iterator[None]:
    """On SQLite the batch copy DROPs the old deliveries table, and with foreign keys on (the
    gateway's connections always have them; the pragma cannot change inside the migration's
    transaction) that drop cascades to every delivery_attempts row. Keep them aside and put
    them back."""
    if op.get_bind().dialect.name != "sqlite":
        yield
        return
    op.execute("CREATE TEMP TABLE kept_attempts AS SELECT * FROM delivery_attempts")
    yield
    op.execute("INSERT INTO delivery_attempts SELECT * FROM kept_attempts "
               "WHERE delivery_id IN (SELECT id FROM deliveries)")
    op.execute("DROP TABLE kept_attempts")


def upgrade() -> None:
    op.create_table(
        "regulations",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("type", sa.String(30), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("subject_kind", sa.String(20), nullable=False),
        sa.Column("counts", sa.Text(), nullable=False),
        sa.Column("destinations", sa.Text()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("id", name="pk_regulations"),
    )
    op.create_table(
        "regulation_subjects",
        sa.Column("regulation_id", Id, nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("regulation_id", name="pk_regulation_subjects"),
    )
    op.create_table(
        "suppressed_keys",
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("regulation_id", Id, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key_hash", name="pk_suppressed_keys"),
    )
    op.create_index("ix_suppressed_keys_regulation_id", "suppressed_keys", ["regulation_id"])
    # SQLite cannot drop NOT NULL in place: batch mode copies the table (PostgreSQL: ALTER)
    with _attempts_kept(), op.batch_alter_table("deliveries") as batch:
        batch.alter_column("event_id", existing_type=Id, nullable=True)
        batch.add_column(sa.Column("regulation_id", Id))
        batch.create_index("ix_deliveries_regulation_id", ["regulation_id"])


def downgrade() -> None:
    op.execute("DELETE FROM deliveries WHERE event_id IS NULL")
    with _attempts_kept(), op.batch_alter_table("deliveries") as batch:
        batch.drop_index("ix_deliveries_regulation_id")
        batch.drop_column("regulation_id")
        batch.alter_column("event_id", existing_type=Id, nullable=False)
    op.drop_table("suppressed_keys")
    op.drop_table("regulation_subjects")
    op.drop_table("regulations")
