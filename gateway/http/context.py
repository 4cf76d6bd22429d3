"""The application's shared objects, spelled once: the config, the database engine and the
storage-outage state that `create_app` installs on the Flask app. Request code reads them
through `config()`, `engine()` and `storage()` (of the current app, or of `app` outside a
request) instead of reaching into `app.extensions` by key."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Flask, current_app

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from gateway.config import Config
    from gateway.store.storage_state import StorageState

CONFIG = "gateway.config"
ENGINE = "gateway.engine"
STORAGE = "gateway.storage"


def install(app: Flask, config: Config, engine: Engine, storage: StorageState) -> None:
    """Called once by `create_app`, before any route can run."""
    app.extensions[CONFIG] = config
    app.extensions[ENGINE] = engine
    app.extensions[STORAGE] = storage


def config(app: Flask | None = None) -> Config:
    return (app or current_app).extensions[CONFIG]


def engine(app: Flask | None = None) -> Engine:
    return (app or current_app).extensions[ENGINE]


def storage(app: Flask | None = None) -> StorageState:
    return (app or current_app).extensions[STORAGE]
