"""Operational routes: `/health` (no auth) — the admin API joins it here (DESIGN.md §6)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

bp = Blueprint("admin", __name__)


@bp.get("/health")
@bp.get("/")
def health() -> Response | tuple[Response, int]:
    """Liveness plus database reachability, for load balancers and rudder-server-style probes."""
    try:
        with current_app.extensions["gateway.engine"].connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return jsonify({"status": "unavailable", "database": exc.__class__.__name__}), 503
    return jsonify({"status": "ok", "database": "ok"})
