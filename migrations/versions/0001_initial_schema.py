"""initial schema: events, deliveries, delivery_attempts, identities, identity_keys

Revision ID: 0001
Revises:
Create Date: 2026-11-24

Column types are spelled out with plain SQLAlchemy types (not gateway.store.models' decorators) so
this revision keeps meaning the same thing when the models change.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# the first schema: no older node can run on a database without it
safe_while_older_nodes_run = True

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _when(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("type", sa.String(20), nullable=False),
        sa.Column("event", sa.String(500)),
        sa.Column("user_id", sa.String(500)),
        sa.Column("anonymous_id", sa.String(500)),
        _when("timestamp"),
        _when("received_at"),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sa.UniqueConstraint("source", "message_id", name="uq_events_source_message_id"),
    )
    op.create_index("ix_events_user_id_id", "events", ["user_id", "id"])
    op.create_index("ix_events_anonymous_id_id", "events", ["anonymous_id", "id"])

    op.create_table(
        "identities",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("traits", sa.Text(), nullable=False),
        _when("traits_updated_at", nullable=True),
        _when("first_seen"),
        _when("last_seen"),
        sa.PrimaryKeyConstraint("id", name="pk_identities"),
    )
    op.create_table(
        "identity_keys",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("value", sa.String(500), nullable=False),
        sa.Column("identity_id", ID, nullable=False),
        sa.ForeignKeyConstraint(["identity_id"], ["identities.id"],
                                name="fk_identity_keys_identity_id_identities",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_identity_keys"),
        sa.UniqueConstraint("kind", "value", name="uq_identity_keys_kind_value"),
    )
    op.create_index("ix_identity_keys_identity_id", "identity_keys", ["identity_id"])

    op.create_table(
        "deliveries",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("event_id", ID, nullable=False),
        sa.Column("destination", sa.String(200), nullable=False),
        sa.Column("user_key", sa.String(500), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _when("next_attempt_at"),
        _when("lease_expires_at", nullable=True),
        _when("first_attempt_at", nullable=True),
        sa.Column("last_status", sa.Integer()),
        sa.Column("last_error", sa.Text()),
        sa.Column("replay_id", sa.String(64)),
        _when("created_at"),
        _when("updated_at"),
        sa.ForeignKeyConstraint(["event_id"], ["events.id"],
                                name="fk_deliveries_event_id_events", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_deliveries"),
    )
    op.create_index("ix_deliveries_destination_user_key_state_id", "deliveries",
                    ["destination", "user_key", "state", "id"])
    op.create_index("ix_deliveries_state_next_attempt_at", "deliveries",
                    ["state", "next_attempt_at"])
    op.create_index("ix_deliveries_event_id", "deliveries", ["event_id"])

    op.create_table(
        "delivery_attempts",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("delivery_id", ID, nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        _when("started_at"),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("status", sa.Integer()),
        sa.Column("error_class", sa.String(100)),
        sa.Column("excerpt", sa.Text()),
        sa.ForeignKeyConstraint(["delivery_id"], ["deliveries.id"],
                                name="fk_delivery_attempts_delivery_id_deliveries",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_delivery_attempts"),
    )
    op.create_index("ix_delivery_attempts_delivery_id_number", "delivery_attempts",
                    ["delivery_id", "number"])


def downgrade() -> None:
    op.drop_table("delivery_attempts")
    op.drop_table("deliveries")
    op.drop_table("identity_keys")
    op.drop_table("identities")
    op.drop_table("events")
