"""heartbeats: liveness of delivery workers and HTTP processes, shared through the database

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

`/health` answers for the whole deployment, whichever process or machine serves it, so the
liveness it reports lives where every process can see it (docs/design.md §2.8).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# a new table: older nodes do not read it
safe_while_older_nodes_run = True


def upgrade() -> None:
    op.create_table(
        "heartbeats",
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("host", sa.String(200), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("beat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_heartbeats"),
    )
    op.create_index("ix_heartbeats_role_beat_at", "heartbeats", ["role", "beat_at"])


def downgrade() -> None:
    op.drop_table("heartbeats")
