"""`gateway.http.context`: what `create_app` installs is what request code reads."""

from __future__ import annotations

from sqlalchemy import text

from gateway.config import Config
from gateway.http import context
from gateway.store.storage_state import StorageState


def test_the_installed_objects_are_read_back(app, config: Config) -> None:
    assert context.config(app) is config
    assert isinstance(context.storage(app), StorageState)
    with app.app_context():
        assert context.config() is config and context.engine() is context.engine(app)
        assert context.storage() is context.storage(app)
        with context.engine().connect() as connection:
            assert connection.execute(text("SELECT 1")).scalar_one() == 1
