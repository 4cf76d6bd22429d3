"""Alembic environment and revisions; `gateway migrate` (gateway.db.migrate) runs them."""
