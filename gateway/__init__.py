"""A self-hosted, Segment- and RudderStack-compatible event ingestion gateway."""

from __future__ import annotations

import os

from flask import Flask

from gateway import config as config_module
from gateway.config import Config
from gateway.store.db import make_engine
from gateway.store.storage_state import StorageState


def create_app(config: Config | None = None) -> Flask:
    """The Flask application factory; gunicorn calls it once per worker process (after fork)."""
    if config is None:
        config = config_module.load(os.environ.get("GATEWAY_CONFIG"))
    app = Flask(__name__)
    app.json.sort_keys = False
    # Every body is bounded (docs/design.md §2.7): the tracking routes check the exact limit
    # themselves; this also bounds the admin API's bodies.
    app.config["MAX_CONTENT_LENGTH"] = config.limits.max_request_bytes + 1
    from gateway.http import admin, browser, context, cors, deadline, errors, source_guard, tracking

    engine = make_engine(config.database_url)
    context.install(app, config, engine, StorageState("storage"))
    source_guard.init_app(app, config, engine)  # per-source rate limits (and the HTTP heartbeat)

    errors.init_app(app)
    deadline.init_app(app, config.server.body_timeout_seconds)
    cors.init_app(app)  # app-level: errors outside any blueprint need it too
    app.register_blueprint(tracking.bp)
    app.register_blueprint(browser.bp)
    admin.init_app(app)
    from gateway import console

    console.init_app(app)
    return app
