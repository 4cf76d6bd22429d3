"""Who may use the console: sign-in with the admin token, then a server-side session.

The session cookie (`gw_console`, Path=/console, HttpOnly, SameSite=Strict, Secure over HTTPS)
holds a random id and nothing else; the session itself lives in the database
(gateway/console/sessions.py), so sign-out revokes it on every process, idle sessions end, and
rotating the admin token signs everyone out. Anonymous visitors get no session cookie at all:
the sign-in form's CSRF check is a double submit of a random, unsigned nonce (`gw_login`, sent
only to /console/login). Every state-changing form carries the CSRF token and every POST is
refused without a matching one (and with a foreign Origin). Nothing under /console but the
sign-in page and the static files answers without a live session.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

from flask import (
    Response,
    abort,
    g,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)

from gateway.console import sessions
from gateway.http import auth_throttle, context

COOKIE = "gw_console"
LOGIN_COOKIE = "gw_login"
MAX_TOKEN = 4096  # bytes of a submitted token we are willing to compare
MAX_NEXT = 2000  # characters of a `next` path we are willing to redirect to




def session() -> sessions.Session | None:
    """This request's live session, looked up once; None when the visitor is not signed in."""
    if "console_session" not in g:
        found = None
        raw = request.cookies.get(COOKIE)
        if raw:
            config = context.config()
            found = sessions.find(context.engine(), raw, config.admin_token, config.console,
                                  touch=request.endpoint != "console.stream")
        g.console_session = found
    return g.console_session


def signed_in() -> bool:
    return session() is not None


def csrf_token() -> str:
    """The signed-in session's CSRF token; on the sign-in page, the sign-in nonce."""
    found = session() if request.endpoint != "console.login" else None
    return found.csrf if found else _login_nonce()


def _login_nonce() -> str:
    if "console_login_nonce" not in g:
        given = request.cookies.get(LOGIN_COOKIE, "")
        g.console_login_nonce_new = not sessions.ID_SHAPE.fullmatch(given)
        g.console_login_nonce = secrets.token_urlsafe(32) if g.console_login_nonce_new \
            else given
    return g.console_login_nonce


def finish(response: Response) -> Response:
    """After every console request: hand out the sign-in nonce if this page made one."""
    if g.pop("console_login_nonce_new", False):
        response.set_cookie(LOGIN_COOKIE, g.console_login_nonce, path=url_for("console.login"),
                            httponly=True, samesite="Strict", secure=request.is_secure)
    return response


def check_token(given: str) -> bool:
    """The admin token, compared in constant time."""
    return hmac.compare_digest(given.encode()[:MAX_TOKEN], context.config().admin_token.encode())


def attempt_sign_in(target: str) -> Response:
    """POST /console/login: the right admin token opens a session, anything else is refused
    (and counted: a peer that failed too often is answered 429 before its token is looked at)."""
    auth_throttle.refuse_if_blocked()
    if not check_token(request.form.get("token", "")):
        return sign_in_refused(target)
    config = context.config()
    session_id, g.console_session = sessions.open_session(context.engine(), config.admin_token,
                                                          config.console)
    response = redirect(target)
    response.set_cookie(COOKIE, session_id, max_age=config.console.session_lifetime_seconds,
                        path="/console", httponly=True, samesite="Strict",
                        secure=request.is_secure)
    _forget_login_nonce(response)
    return response


def sign_in_refused(target: str) -> Response:
    """Every failed sign-in ends here, and only here."""
    auth_throttle.failed()
    return make_response(render_template("console/login.html", next=target,
                                         error="That is not the admin token."), 401)


def sign_out(response: Response, everywhere: bool = False) -> Response:
    """End this session (or every session) in the database, then drop the cookie."""
    found = session()
    if everywhere:
        sessions.revoke_all(context.engine())
    elif found is not None:
        sessions.revoke(context.engine(), found)
    response.delete_cookie(COOKIE, path="/console", httponly=True, samesite="Strict",
                           secure=request.is_secure)
    return response


def _forget_login_nonce(response: Response) -> None:
    g.pop("console_login_nonce_new", None)
    response.delete_cookie(LOGIN_COOKIE, path=url_for("console.login"), httponly=True,
                           samesite="Strict", secure=request.is_secure)


def guard() -> Response | None:
    """Before every console request: a live session for everything but sign-in and static
    files; a CSRF token and a same-origin Origin for every POST (sign-in included)."""
    endpoint = request.endpoint or ""
    if request.method == "POST":
        origin = request.headers.get("Origin")
        if origin and origin != "null" and urlsplit(origin).netloc != request.host:
            abort(403, "cross-origin form refused")
        if endpoint == "console.login" or signed_in():
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
    """Only a path inside the console: no other site (open redirect), nothing that cannot stand
    in a Location header (a CR/LF would split it)."""
    if target and len(target) <= MAX_NEXT and target.isprintable() and "\\" not in target:
        parts = urlsplit(target)
        inside = parts.path == "/console" or parts.path.startswith("/console/")
        if inside and not parts.scheme and not parts.netloc and "/../" not in parts.path + "/":
            return target
    return url_for("console.live")
