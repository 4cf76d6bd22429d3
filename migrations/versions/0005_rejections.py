"""rejections: a bounded record of recent messages the tracking API refused or dropped

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-01

`gateway explain` answers "why didn't it arrive?" for a messageId that never became an event:
the tracking endpoints leave one row per refused message here (gateway/rejections.py keeps the
table to its newest rows, so it never grows with traffic).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# a new table: older nodes do not read it
safe_while_older_nodes_run = True


def upgrade() -> None:
    identifier = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "rejections",
        sa.Column("id", identifier, autoincrement=True, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(200)),
        sa.Column("message_id", sa.String(255)),
        sa.Column("message_type", sa.String(20)),
        sa.Column("reason", sa.String(100), nullable=False),
        sa.Column("detail", sa.String(500), nullable=False),
        sa.Column("duplicate_of", identifier),
        sa.PrimaryKeyConstraint("id", name="pk_rejections"),
    )
    op.create_index("ix_rejections_message_id_id", "rejections", ["message_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_rejections_message_id_id", table_name="rejections")
    op.drop_table("rejections")
