"""console sessions: server-side sign-in sessions and the gateway's own secrets

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06

The console's cookie was signed with a key derived from the admin token, so one anonymous GET
gave an offline oracle for the token, and a copied cookie outlived its sign-out. Now the cookie
holds a random id; `console_sessions` keeps its keyed hash with created / last-seen / revoked
times (sign-out and "sign out everywhere" revoke rows, an idle timeout and a lifetime end them);
`gateway_secrets` holds the random key those hashes are made with, generated on first use.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# new tables: older nodes do not read them
safe_while_older_nodes_run = True


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("id_hash", sa.String(64), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("token_fingerprint", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("id_hash", name="pk_console_sessions"),
    )
    op.create_index("ix_console_sessions_created_at", "console_sessions", ["created_at"])
    op.create_table(
        "gateway_secrets",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("value", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_gateway_secrets"),
    )


def downgrade() -> None:
    op.drop_table("gateway_secrets")
    op.drop_index("ix_console_sessions_created_at", table_name="console_sessions")
    op.drop_table("console_sessions")
