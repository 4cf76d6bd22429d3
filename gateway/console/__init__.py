"""The console at /console: a live event debugger and delivery desk for operators, served by
the gateway itself (Flask blueprint, Jinja templates, one small script; no build step).

auth.py signs people in and guards every route; sessions.py keeps their sessions in the
database; data.py holds the console's own bounded queries; views.py the pages. Everything it
shows comes from gateway/queries.py, gateway/explain.py and gateway/replay.py, the same
functions as the admin API and CLI.
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response

from gateway.console import auth

bp = Blueprint("console", __name__, url_prefix="/console", template_folder="templates",
               static_folder="static", static_url_path="/static")

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


@bp.before_request
def _guard() -> Response | None:
    return auth.guard()


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Content-Type-Options"] = "nosniff"
    if not response.headers.get("Cache-Control"):
        response.headers["Cache-Control"] = "no-store"
    return auth.finish(response)


@bp.app_context_processor
def _template_globals() -> dict[str, object]:
    return {"csrf_token": auth.csrf_token}


def init_app(app: Flask) -> None:
    from gateway.console import views  # noqa: F401  (registers the routes on bp)

    app.register_blueprint(bp)
