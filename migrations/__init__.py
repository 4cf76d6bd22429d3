"""Alembic environment and revisions; `gateway migrate` (gateway.store.db.migrate) runs them."""
