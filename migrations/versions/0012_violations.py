"""violations: tracking-plan violations counted per hour, source, event and rule

Revision ID: 0012
Revises: 0010
Create Date: 2026-12-06

A source with a tracking plan (gateway/plans) flags, trims or drops the messages that do not fit
it; each failure is counted here, one row per hour, source, event and rule with an example
messageId, so a flood adds to counts instead of rows (gateway/plans/record.py also keeps the
table to its newest rows).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# a new table: older nodes do not read it
safe_while_older_nodes_run = True


def upgrade() -> None:
    identifier = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "violations",
        sa.Column("id", identifier, autoincrement=True, nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("message_type", sa.String(20), nullable=False),
        sa.Column("event", sa.String(200)),
        sa.Column("rule", sa.String(300), nullable=False),
        sa.Column("violation_type", sa.String(40), nullable=False),
        sa.Column("message", sa.String(300), nullable=False),
        sa.Column("example_message_id", sa.String(255)),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_violations"),
        sa.UniqueConstraint("key", name="uq_violations_key"),
    )
    op.create_index("ix_violations_hour", "violations", ["hour"])


def downgrade() -> None:
    op.drop_index("ix_violations_hour", table_name="violations")
    op.drop_table("violations")
