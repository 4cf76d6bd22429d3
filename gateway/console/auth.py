"""Who may use the console: sign-in with the admin token, then a signed session cookie.

The cookie (`gw_console`, Path=/console, HttpOnly, SameSite=Strict, Secure over HTTPS) holds a
random CSRF token and whether the holder signed in; it is signed with a key derived from the
admin token, so rotating the token signs every session out. Every state-changing form carries
the CSRF token and every POST is refused without a matching one (and with a foreign Origin).
Nothing under /console but the sign-in page and the static files answers without the cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any
from urllib.parse import urlsplit

from flask import Response, abort, current_app, g, redirect, request, url_for
from itsdangerous import BadSignature, URLSafeTimedSerializer

COOKIE = "gw_console"
MAX_AGE = 12 * 3600  # a session lasts a working day, then sign in again
MAX_TOKEN = 4096  # bytes of a submitted token we are willing to compare


def _serializer() -> URLSafeTimedSerializer:
    token = current_app.extensions["gateway.config"].admin_token.encode()
    key = hashlib.sha256(b"gateway console session\x00" + token).digest()
    return URLSafeTimedSerializer(key, salt="console")


def session() -> dict[str, Any]:
    """This request's session ({"csrf", "in"}), read once; a fresh anonymous one if none."""
    if "console_session" not in g:
        found: dict[str, Any] | None = None
        raw = request.cookies.get(COOKIE)
        if raw:
            try:
                found = _serializer().loads(raw, max_age=MAX_AGE)
            except BadSignature:
                found = None
        if not isinstance(found, dict) or not isinstance(found.get("csrf"), str):
            found = {"csrf": secrets.token_urlsafe(24), "in": False, "new": True}
        g.console_session = found
    return g.console_session


def signed_in() -> bool:
    return session().get("in") is True


def csrf_token() -> str:
    return session()["csrf"]


def check_token(given: str) -> bool:
    """The admin token, compared in constant time."""
    expected = current_app.extensions["gateway.config"].admin_token.encode()
    return hmac.compare_digest(given.encode()[:MAX_TOKEN], expected)


def sign_in(response: Response) -> Response:
    g.console_session = {"csrf": secrets.token_urlsafe(24), "in": True}
    return save(response)


def sign_out(response: Response) -> Response:
    response.delete_cookie(COOKIE, path="/console", httponly=True, samesite="Strict",
                           secure=request.is_secure)
    return response


def save(response: Response) -> Response:
    data = {k: v for k, v in session().items() if k in ("csrf", "in")}
    response.set_cookie(COOKIE, _serializer().dumps(data), max_age=MAX_AGE, path="/console",
                        httponly=True, samesite="Strict", secure=request.is_secure)
    return response


def guard() -> Response | None:
    """Before every console request: the cookie for everything but sign-in and static files;
    a CSRF token and a same-origin Origin for every POST (sign-in included)."""
    endpoint = request.endpoint or ""
    if request.method == "POST":
        origin = request.headers.get("Origin")
        if origin and origin != "null" and urlsplit(origin).netloc != request.host:
            abort(403, "cross-origin form refused")
        given = request.form.get("csrf", "")
        if not given or not hmac.compare_digest(given.encode()[:MAX_TOKEN],
                                                csrf_token().encode()):
            abort(403, "missing or stale form token: reload the page and try again")
    if endpoint in ("console.login", "console.static"):
        return None
    if not signed_in():
        if request.method == "GET" and request.accept_mimetypes.accept_html \
                and endpoint != "console.stream":
            return redirect(url_for("console.login", next=request.full_path.rstrip("?")))
        abort(401, "sign in to the console first")
    return None


def safe_next(target: str | None) -> str:
    """Only a path inside the console (no open redirect to another site)."""
    if target and target.startswith("/console") and not target.startswith("//") \
            and "\\" not in target:
        return target
    return url_for("console.live")
