"""The tracking API as Segment's and RudderStack's SDKs speak it (docs/tracking-api.md).

Request-level problems (auth, body, JSON, size) reject the whole request with a JSON error;
message-level problems drop only that message (§8). 200 is answered only after `ingest.submit`
committed the events (docs/design.md §2.1).
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
from flask import Blueprint, Response, current_app, request

from gateway import filters, ingest, metrics, rejections
from gateway.config import Config, Source
from gateway.http import clients, context, forwarded, source_guard
from gateway.http.auth import authenticated_body, basic_username, source_for
from gateway.http.errors import ApiError, error_response
from gateway.messages import (
    RequestInfo,
    nesting_exceeds,
    normalise_batch,
    strip_nul,
    too_deep_text,
)
from gateway.plans import enforce as plan_enforce
from gateway.store.models import MESSAGE_TYPES
from gateway.transforms import source as source_transforms

bp = Blueprint("tracking", __name__)

# each type's own path, and its first letter (`/v1/t`, as the pixel and short clients post)
SINGLE_PATHS = {**{kind: kind for kind in MESSAGE_TYPES},
                **{kind[0]: kind for kind in MESSAGE_TYPES}}
# `/b`: the Segment mobile SDKs post to `https://{apiHost}/b`, so an `apiHost` without `/v1`
# (the gateway's bare host name) lands there.
BATCH_PATHS = ("/v1/batch", "/v1/import", "/v1/b", "/b", "/beacon/v1/batch")
# A 1×1 transparent GIF: the pixel API answers with it whatever happens.
PIXEL_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
SUCCESS = orjson.dumps({"success": True})


@bp.post("/v1/<path_name>")
def single(path_name: str) -> Response:
    kind = SINGLE_PATHS.get(path_name)
    if kind is None:
        if path_name == "m":  # analytics.js telemetry: accepted and discarded
            return _json(SUCCESS)
        raise ApiError(404, "not_found", f"no tracking endpoint /v1/{path_name}")
    source, body = authenticated_body()
    return _accept(source, [body], body, path_type=kind, single_call=True)


def batch() -> Response:
    source, body = authenticated_body()
    elements = body.get("batch")
    if elements is None or elements == []:
        raise ApiError(400, "empty_batch", "the body needs a non-empty `batch` array")
    if not isinstance(elements, list):
        raise ApiError(400, "invalid_batch", "`batch` must be an array of messages")
    return _accept(source, elements, body)


for _path in BATCH_PATHS:
    bp.add_url_rule(_path, endpoint=f"batch{_path.replace('/', '_')}", view_func=batch,
                    methods=["POST"])


@bp.get("/pixel/v1/<path_name>")
def pixel(path_name: str) -> Response:
    """RudderStack's pixel API: query parameters become the message; always a GIF."""
    if path_name in ("track", "page"):
        try:
            key = strip_nul(request.args.get("writeKey", ""))
            source = source_for(key)
            message = _message_from_query(request.args)
            limits = context.config().limits
            if nesting_exceeds(message, limits.max_json_depth):  # `a.b.c…` nests a level a dot
                raise ApiError(400, "too_deep", too_deep_text(limits))
            _accept(source, [message], {}, path_type=path_name, single_call=True)
        except ApiError as exc:
            current_app.logger.info("pixel request not stored: %s", exc.code)
            _trace_refusal(exc)
    return Response(PIXEL_GIF, mimetype="image/gif",
                    headers={"Cache-Control": "no-cache, no-store, must-revalidate"})


def _accept(source: Source, elements: list[Any], body: dict[str, Any], path_type: str | None = None,
            single_call: bool = False) -> Response:
    source_guard.admit(source, len(elements))  # over the source's rate: 429, nothing stored
    config = context.config()
    received_at = datetime.now(UTC)
    info = RequestInfo(
        received_at=received_at,
        ip=_client_ip(config),
        sent_at=None if single_call else body.get("sentAt"),
        context=_object_or_none(None if single_call else body.get("context")),
        integrations=_object_or_none(None if single_call else body.get("integrations")),
    )
    messages, rejected = normalise_batch(elements, info, config.limits, path_type)
    stored = filters.apply_to_messages(source.filters, messages)  # never stored if dropped
    if source.transformations:  # may refuse messages too: answered as invalid ones are
        stored, failed = source_transforms.apply(source, stored, elements, rejected,
                                                 config.limits, messages)
        if failed:
            gone = {f.message_id for f in failed}
            messages = [m for m in messages if m.message_id not in gone]
            rejected = sorted([*rejected, *failed], key=lambda r: r.index)
    if rejected:
        _count(metrics.EVENTS_REJECTED, source.name, (r.message_type for r in rejected))
        _trace_rejected(source.name, rejected, received_at)
    if rejected and (single_call or not messages or config.limits.strict_batches):
        if not messages and clients.resends_all_but_success(body, elements):
            # nothing here can ever be stored, and a 400 would be sent again forever
            return _rejected_answer(rejected)
        first = rejected[0]
        raise ApiError(400, first.code, first.message,
                       **({} if single_call else {"rejected": [r.as_json() for r in rejected]}))
    engine = context.engine()
    # the source's tracking plan: flag, trim or drop what is stored (gateway/plans/enforce.py)
    stored = plan_enforce.apply(engine, source.name, source.tracking_plan, stored, received_at)
    result = ingest.submit(engine, config, source.name, stored, received_at)  # group commit
    if result.duplicates:  # resolved off the request path (gateway/rejections.py)
        rejections.record_duplicates(engine, source.name, [m.message_id for m in stored],
                                     received_at)
    context.storage().succeeded()
    _count(metrics.EVENTS_ACCEPTED, source.name, (m.type for m in messages))
    if not rejected:
        return _json(SUCCESS)
    return _rejected_answer(rejected)


def _rejected_answer(rejected: list[Any]) -> Response:
    """200 naming the refused messages: the others were stored (or there were none)."""
    return _json(orjson.dumps({"success": True, "rejected": [r.as_json() for r in rejected]}))


def _trace_rejected(source: str, rejected: list[Any], received_at: datetime) -> None:
    """Leave refused messages in the bounded rejections record (queued, never raises)."""
    request.environ["gateway.rejections_traced"] = True
    rejections.record(context.engine(), [
        rejections.Entry(received_at, source, r.message_id, r.message_type, r.code, r.message)
        for r in rejected])


@bp.errorhandler(ApiError)
def _refused(exc: ApiError) -> Response:
    """A refused tracking request: traced, then answered as every API error is."""
    _trace_refusal(exc)
    response = error_response(exc.status, exc.code, exc.message, **exc.extra)
    response.headers.update(exc.headers)
    return response


def _trace_refusal(exc: ApiError) -> None:
    """A request-level refusal in the rejections record: the source when its write key was
    valid, never the key itself. 5xx are not refusals (the SDK sends them again)."""
    if exc.status >= 500 or request.environ.get("gateway.rejections_traced"):
        return
    try:
        key = basic_username() if exc.code != "invalid_authorization" else None
        key = key or request.args.get("writeKey")
        found = context.config().source_by_write_key(key) if key else None
        rejections.record(context.engine(), [rejections.Entry(
            datetime.now(UTC), found.name if found else None, None, None, exc.code,
            exc.message)])
    except Exception:  # the trace must never change the answer
        current_app.logger.exception("cannot trace a refused request")


def _count(counter: Any, source: str, types: Iterable[str]) -> None:
    """One increment per (source, type), not one per message."""
    for message_type, n in Counter(types).items():
        counter.labels(source, message_type).inc(n)


def _client_ip(config: Config) -> str | None:
    return forwarded.request_client(config)


def _object_or_none(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _message_from_query(args: Any) -> dict[str, Any]:
    """`properties.revenue=9` → {"properties": {"revenue": "9"}} (rudder-server's pixel rule)."""
    message: dict[str, Any] = {}
    for key, value in args.items():
        if key == "writeKey":
            continue
        key, value = strip_nul(key), strip_nul(value)
        *parents, leaf = key.split(".")
        node = message
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[leaf] = value
    return message


def _json(body: bytes) -> Response:
    return Response(body, status=200, mimetype="application/json")
