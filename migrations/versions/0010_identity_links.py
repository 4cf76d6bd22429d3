"""identity links: when and by which message each key was linked, and refused merges

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06

"Why are these two people one profile?" had no answer: identity keys now record when and by
which message (and source) they were linked (NULL for keys linked before this revision).
`identity_conflicts` records the merges the graph refused (a per-kind limit, or an alias of two
identified profiles), so an operator sees which message tried to join which profiles.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# nullable columns and a new table: older nodes link keys as before (their keys say nothing of
# when or by which message) and never read the conflicts
safe_while_older_nodes_run = True

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("identity_keys") as batch:
        batch.add_column(sa.Column("linked_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("linked_by", sa.String(255)))
        batch.add_column(sa.Column("linked_source", sa.String(200)))
    op.create_table(
        "identity_conflicts",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("identity_id", Id, nullable=False),
        sa.Column("other_identity_id", Id),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("value", sa.String(500), nullable=False),
        sa.Column("reason", sa.String(100), nullable=False),
        sa.Column("message_id", sa.String(255)),
        sa.Column("source", sa.String(200)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_identity_conflicts"),
        sa.ForeignKeyConstraint(["identity_id"], ["identities.id"], ondelete="CASCADE",
                                name="fk_identity_conflicts_identity_id_identities"),
        sa.UniqueConstraint("identity_id", "kind", "value",
                            name="uq_identity_conflicts_identity_id_kind_value"),
    )
    op.create_index("ix_identity_conflicts_other_identity_id", "identity_conflicts",
                    ["other_identity_id"])


def downgrade() -> None:
    op.drop_index("ix_identity_conflicts_other_identity_id", table_name="identity_conflicts")
    op.drop_table("identity_conflicts")
    with op.batch_alter_table("identity_keys") as batch:
        batch.drop_column("linked_source")
        batch.drop_column("linked_by")
        batch.drop_column("linked_at")
