"""CORS for the routes browsers call: the tracking API, the browser settings, and every error
on them, so a browser shows the gateway's real answer (401, 404, 413, 500…) instead of an
opaque "CORS error" (docs/tracking-api.md §10: rudder-server's rules).

It is one app-level `after_request`, not a blueprint's, because a blueprint's hook never sees
what fails before routing (unknown paths, 405s) or in the app's own error handlers. The admin
API and anything signed in by cookie stay same-origin: reflecting the origin with credentials
there would let any web page read them with the operator's session.
"""

from __future__ import annotations

from flask import Flask, Request, Response, request

# Paths browsers are meant to call from other origins.
PUBLIC_PREFIXES = ("/v1/", "/beacon/", "/pixel/", "/sourceConfig")
PUBLIC_PATHS = frozenset({"/", "/health", "/sourceConfig", "/b"})
# Never cross-origin, even when the path is unknown (a 404 there tells a page nothing useful).
PRIVATE_PREFIXES = ("/admin", "/console", "/metrics")
PREFLIGHT_MAX_AGE = "900"


def is_public(req: Request) -> bool:
    """A tracking or settings path, or a path no route knows (outside the private ones)."""
    path = req.path
    if path.startswith(PRIVATE_PREFIXES):
        return False
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES) or req.url_rule is None


def add_headers(response: Response) -> Response:
    """Reflect the origin, allow credentials and any header; answer every preflight 200."""
    if not is_public(request):
        return response
    origin = request.headers.get("Origin")
    if origin:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.vary.add("Origin")
    if request.method == "OPTIONS":
        response.status_code = 200
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        asked = request.headers.get("Access-Control-Request-Headers")
        response.headers["Access-Control-Allow-Headers"] = asked or "*"
        response.headers["Access-Control-Max-Age"] = PREFLIGHT_MAX_AGE
    return response


def init_app(app: Flask) -> None:
    app.after_request(add_headers)
