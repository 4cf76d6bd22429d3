"""admin indexes: events by type, event name and time; deliveries by state and destination

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

The admin API and CLI list newest first (`ORDER BY id DESC LIMIT n`) under one filter. Without
an index that ends in `id`, a filter matching millions of rows (`type=track`,
`state=delivered`) makes the database read and sort all of them. Measured cost to ingest and
the query times at a million profiles: README, Performance, "At scale" (bench/scale.py).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# indexes only
safe_while_older_nodes_run = True

INDEXES = (
    ("ix_events_type_id", "events", ["type", "id"]),
    ("ix_events_event_id", "events", ["event", "id"]),
    ("ix_events_received_at", "events", ["received_at"]),
    ("ix_deliveries_state_id", "deliveries", ["state", "id"]),
    ("ix_deliveries_destination_id", "deliveries", ["destination", "id"]),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
