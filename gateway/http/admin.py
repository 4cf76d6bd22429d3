"""The admin API (`/admin/v1/*`, Bearer admin token) and the operational routes `/health` and
`/metrics` (docs/design.md §6). Every admin route wraps a function of gateway.queries,
gateway.replay, gateway.explain or gateway.regulations.service."""

from __future__ import annotations

import hmac
import os
import time
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.routing import BaseConverter

from gateway import heartbeat, metrics, queries
from gateway.http import auth_throttle, context, listeners
from gateway.http import body as request_body
from gateway.http.errors import ApiError, error_response
from gateway.regulations import keys as regulation_keys
from gateway.regulations import service as regulation_service
from gateway.replay import Conflict, NotFound, replay, retry_dead
from gateway.store.db import write_transaction
from gateway.store.storage_state import is_storage_error, short_reason

ops = Blueprint("ops", __name__)
bp = Blueprint("admin", __name__, url_prefix="/admin/v1")




def require_token() -> None:
    """Bearer <admin_token>, compared in constant time; a peer with too many recent failures
    is refused before the comparison (gateway/http/auth_throttle.py)."""
    auth_throttle.refuse_if_blocked()
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    expected = context.config().admin_token.encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
        auth_throttle.failed()
        error = ApiError(401, "unauthorized", "the admin API needs Authorization: Bearer <token>")
        error.headers["WWW-Authenticate"] = "Bearer"
        raise error


bp.before_request(require_token)


@ops.get("/health")
@ops.get("/")
def health() -> Response | tuple[Response, int]:
    """The truth for load balancers and operators: can we write, and is a delivery worker alive?

    Storage is checked with a real write (this process's heartbeat row), so a read-only file
    or a full disk shows here; worker liveness comes from the workers' heartbeat rows, so the
    answer is the same from every process and machine. A worker is needed while a destination
    is enabled (or `serve` runs one beside us), past a start-up grace of three heartbeats. 503
    with the reasons when either is wrong; it recovers by itself when they are right again."""
    config, engine = context.config(), context.engine()
    storage = context.storage()
    body: dict[str, Any] = {"status": "ok", "database": "ok"}
    try:
        probe = current_app.extensions.get("gateway.http_heartbeat")
        if probe is None:
            probe = current_app.extensions["gateway.http_heartbeat"] = heartbeat.Heartbeat(
                engine, heartbeat.HTTP, every=0)
        probe.beat(force=True)
        storage.succeeded()
        with engine.connect() as connection:
            workers = heartbeat.liveness(connection, heartbeat.WORKER,
                                         config.worker.heartbeat_seconds)
    except (SQLAlchemyError, OSError) as exc:  # OSError: the files beside SQLite's (db.py)
        if not is_storage_error(exc):
            raise
        storage.failed(exc, engine)
        body.update(status="unavailable", database=f"cannot write: {short_reason(exc)}")
        return jsonify(body), 503
    if not storage.healthy:  # the probe passed, but this process's writes failed just now
        body.update(status="unavailable", database=f"writes failing: {storage.last_reason}")
        return jsonify(body), 503
    enabled = sum(1 for d in config.destinations if d.enabled)
    expected = enabled > 0 or os.environ.get(heartbeat.EXPECT_WORKER_ENV) == "1"
    if workers.alive or workers.gone:
        body["delivery_worker"] = workers.describe(datetime.now(UTC))
    elif expected:  # no worker row at all: none started yet, or the last one stopped cleanly
        started = current_app.extensions["gateway.started"]
        if time.monotonic() - started < heartbeat.startup_grace(config.worker.heartbeat_seconds):
            return jsonify(body)  # the worker beside us may still be starting
        body["delivery_worker"] = heartbeat.none_running(enabled) if enabled else \
            workers.describe(datetime.now(UTC))
    if "delivery_worker" in body and not workers.alive:
        body["status"] = "unavailable"
        return jsonify(body), 503
    return jsonify(body)


@ops.get("/metrics")
def prometheus() -> Response:
    """Counts only, no keys or contents; behind the token when [metrics] require_token says
    so, or by default when anyone may reach it (gateway/http/listeners.py)."""
    if listeners.metrics_need_token(context.config()):
        require_token()
    body, content_type = metrics.render(context.engine())
    return Response(body, content_type=content_type)


@bp.get("/events")
def events() -> Response:
    with context.engine().connect() as connection:
        page = queries.list_events(connection, _filters(), *_paging())
    return jsonify(page.as_json())


class IdConverter(BaseConverter):
    """`<id:name>`: a path segment of ASCII digits, given to the view as a row id, or None when
    it is outside 1 … 2**63-1 (the view answers 400: no row can have it)."""

    regex = "[0-9]+"

    def to_python(self, value: str) -> int | None:  # type: ignore[override]
        return queries.parse_id(value)


def _row_id(value: int | None, what: str) -> int:
    if value is None:
        raise ApiError(400, "invalid_id", f"{what} ids are whole numbers from 1 to "
                                          f"{queries.MAX_ID}")
    return value


@bp.get("/events/<id:event_id>")
def event(event_id: int | None) -> Response:
    event_id = _row_id(event_id, "event")
    with context.engine().connect() as connection:
        found = queries.get_event(connection, event_id)
    if found is None:
        raise ApiError(404, "not_found", f"no event {event_id}")
    return jsonify(found)


@bp.get("/deliveries")
def deliveries() -> Response:
    with context.engine().connect() as connection:
        page = queries.list_deliveries(connection, _filters(), *_paging())
    return jsonify(page.as_json())


@bp.post("/deliveries/<id:delivery_id>/retry")
def retry(delivery_id: int | None) -> Response:
    delivery_id = _row_id(delivery_id, "delivery")
    try:
        retry_dead(context.engine(), delivery_id)
    except NotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    except Conflict as exc:
        raise ApiError(409, "not_dead", str(exc)) from None
    with context.engine().connect() as connection:
        return jsonify(queries.get_delivery(connection, delivery_id))


@bp.get("/identities")
def identities() -> Response:
    with context.engine().connect() as connection:
        found = queries.get_identity(connection, _filters())
    if found is None:
        raise ApiError(404, "not_found", "no identity has that key")
    return jsonify(found)


@bp.get("/identities/<id:profile_id>")
def identity_by_id(profile_id: int | None) -> Response:
    """One profile: its keys (when and by which message each was linked) and conflicts."""
    profile_id = _row_id(profile_id, "identity")
    with context.engine().connect() as connection:
        found = queries.get_identity_by_id(connection, profile_id)
    if found is None:
        raise ApiError(404, "not_found", f"no identity {profile_id}")
    return jsonify(found)


@bp.delete("/identities/<id:profile_id>/keys")
def unlink_key(profile_id: int | None) -> Response:
    """`{"kind", "value"}`: split that key off the profile onto a profile of its own."""
    from gateway.identity import UnlinkError, unlink

    profile_id = _row_id(profile_id, "identity")
    body = request.get_json(force=True, silent=True)  # JSON whatever the Content-Type
    if not isinstance(body, dict) or set(body) != {"kind", "value"}:
        raise ApiError(400, "invalid_body", 'expected {"kind": "userId"|"anonymousId"|"email", '
                                            '"value": "…"}')
    try:
        with write_transaction(context.engine()) as connection:
            result = unlink(connection, profile_id, body["kind"], body["value"])
    except UnlinkError as exc:
        code = {404: "not_found", 409: "last_key"}.get(exc.status, "invalid_body")
        raise ApiError(exc.status, code, str(exc)) from None
    with context.engine().connect() as connection:
        result["profile"] = queries.get_identity_by_id(connection, profile_id)
    return jsonify(result)


@bp.post("/replay")
def replay_events() -> Response:
    body = request_body.json_or_none(context.config().limits)  # whatever the Content-Type
    if not isinstance(body, dict) or not isinstance(body.get("destination"), str):
        raise ApiError(400, "invalid_body",
                       'expected {"destination": name, "filter": {...}, "dry_run": bool}')
    filters = body.get("filter") or {}
    if not isinstance(filters, dict) or not all(isinstance(v, str) for v in filters.values()):
        raise ApiError(400, "invalid_body", "filter: an object of strings, as the events filters")
    result = replay(context.engine(), context.config(), body["destination"], filters,
                    dry_run=bool(body.get("dry_run", False)))
    return jsonify(result)


@bp.get("/explain")
def explain_message() -> Response:
    """Why a messageId did or did not reach each destination (gateway/explain.py)."""
    from gateway import explain, rejections

    rejections.flush(context.engine(), timeout=1.0)  # this process's queued refusals count too
    with context.engine().connect() as connection:
        return jsonify(explain.explain(connection, context.config(),
                                       request.args.get("message_id", ""),
                                       request.args.get("source") or None))


@bp.post("/preview")
def preview_event() -> Response:
    """The dry run (gateway/transforms/preview.py): what a destination would receive for an
    event given in the body or stored (`event_id`), through its consent, transformations,
    filters and adapter, secrets redacted. Sends nothing, stores nothing."""
    from gateway.transforms.preview import PreviewError, preview

    body = request_body.json_or_none(context.config().limits)  # whatever the Content-Type
    if not isinstance(body, dict) or not isinstance(body.get("destination"), str) or (
            "event" in body) == ("event_id" in body):
        raise ApiError(400, "invalid_body",
                       'expected {"destination": name, "event": {...}} or '
                       '{"destination": name, "event_id": id}')
    event = body.get("event")
    if "event_id" in body:
        event_id = body["event_id"]
        if not isinstance(event_id, int) or isinstance(event_id, bool) or \
                not 1 <= event_id <= queries.MAX_ID:
            raise ApiError(400, "invalid_id", f"event ids are whole numbers from 1 to "
                                              f"{queries.MAX_ID}")
        with context.engine().connect() as connection:
            found = queries.get_event(connection, event_id)
        if found is None:
            raise ApiError(404, "not_found", f"no event {event_id}")
        event = found["payload"]
    try:
        return jsonify(preview(context.config(), event, body["destination"]))
    except PreviewError as exc:
        raise ApiError(400, "invalid_preview", str(exc)) from None
@bp.get("/violations")
def violations() -> Response:
    """Tracking-plan violations counted per source, event and rule (gateway/plans/record.py)."""
    from gateway.plans import record

    record.flush(context.engine(), timeout=1.0)  # this process's counts are included
    try:
        with context.engine().connect() as connection:
            return jsonify(record.from_filters(connection, dict(request.args)))
    except record.FilterError as exc:
        raise ApiError(400, "invalid_query", str(exc)) from None


@bp.post("/regulations")
def create_regulation() -> tuple[Response, int]:
    """Suppress / unsuppress / delete / suppress_with_delete a person. 202: the
    gateway's part is done; a deletion's destination part is `running` until they answer.
    `"dry_run": true` answers 200 with what it would cover (the profile's keys, row counts,
    destinations) and changes nothing."""
    body = request_body.json_or_none(context.config().limits)  # whatever the Content-Type
    try:
        kind, subject = regulation_keys.parse_request(body)
    except regulation_keys.InvalidRequest as exc:
        raise ApiError(400, "invalid_regulation", str(exc)) from None
    if body.get("dry_run"):
        return jsonify(regulation_service.preview(context.engine(), context.config(), kind,
                                                  subject)), 200
    return jsonify(regulation_service.create(context.engine(), context.config(), kind,
                                             subject)), 202


@bp.get("/regulations")
def list_regulations() -> Response:
    with context.engine().connect() as connection:
        page = regulation_service.list_page(connection, _filters(), *_paging())
    return jsonify(page.as_json())


@bp.get("/regulations/<id:regulation_id>")
def regulation(regulation_id: int | None) -> Response:
    regulation_id = _row_id(regulation_id, "regulation")
    found = regulation_service.get(context.engine(), regulation_id)
    if found is None:
        raise ApiError(404, "not_found", f"no regulation {regulation_id}")
    return jsonify(found)


def _filters() -> dict[str, Any]:
    return {k: v for k, v in request.args.items() if k not in ("limit", "cursor")}


def _paging() -> tuple[Any, Any]:
    return request.args.get("limit"), request.args.get("cursor")


def init_app(app) -> None:
    @app.errorhandler(queries.QueryError)
    def _bad_query(exc: queries.QueryError) -> Response:
        return error_response(400, "invalid_query", str(exc))

    app.extensions["gateway.started"] = time.monotonic()  # /health's start-up grace
    app.url_map.converters["id"] = IdConverter  # before the admin routes are bound
    auth_throttle.init_app(app)
    listeners.init_app(app)  # [admin] bind: the admin surface on its own listener only
    app.register_blueprint(ops)
    app.register_blueprint(bp)
