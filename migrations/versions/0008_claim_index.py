"""claim index: due deliveries per destination, instead of per state across all destinations

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

The worker claims per destination. Through (state, next_attempt_at) every claim read the due
rows of every destination, so one destination's backlog (a destination that hangs, a
destination removed from the configuration) made every other destination's claims slower, and
the cost of a claim grew with the whole queue. (destination, state, next_attempt_at)
lets a claim read only its destination's due rows, oldest first, and stop at its limit. It
replaces the old index: nothing else read it, so ingest keeps the same number of indexes.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# an index replaced: older nodes' claims work, slower, until they are upgraded
safe_while_older_nodes_run = True


def upgrade() -> None:
    op.create_index("ix_deliveries_destination_state_next_attempt_at", "deliveries",
                    ["destination", "state", "next_attempt_at"])
    op.drop_index("ix_deliveries_state_next_attempt_at", table_name="deliveries")


def downgrade() -> None:
    op.create_index("ix_deliveries_state_next_attempt_at", "deliveries",
                    ["state", "next_attempt_at"])
    op.drop_index("ix_deliveries_destination_state_next_attempt_at", table_name="deliveries")
