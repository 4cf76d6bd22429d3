"""The tracking API as Segment's and RudderStack's SDKs speak it (docs/tracking-api.md).

Request-level problems (auth, body, JSON, size) reject the whole request with a JSON error;
message-level problems drop only that message (§8). 200 is answered only after `ingest.submit`
committed the events (docs/design.md §2.1).
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
from flask import Blueprint, Response, current_app, request

from gateway import filters, ingest, metrics, rejections
from gateway.config import Config, Limits, Source
from gateway.http import clients, context, forwarded
from gateway.http.deadline import body_expired
from gateway.http.errors import ApiError, error_response
from gateway.messages import (
    RequestInfo,
    nesting_exceeds,
    normalise_batch,
    strip_nul,
    too_deep_text,
)
from gateway.store.models import MESSAGE_TYPES

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
    source, body = _authenticated_body()
    return _accept(source, [body], body, path_type=kind, single_call=True)


def batch() -> Response:
    source, body = _authenticated_body()
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
            source = _source_for(key)
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
    stored = filters.apply_to_messages(source.filters, messages)  # never stored if dropped
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
        key = _basic_username() if exc.code != "invalid_authorization" else None
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


def _authenticated_body() -> tuple[Source, dict[str, Any]]:
    """Write key from the Basic username, else the body's `writeKey`, else `?writeKey=`."""
    key = _basic_username()
    if key is not None:
        source = _source_for(key)  # before reading the body: no work for unknown callers
        return source, _parse_body(context.config().limits)
    body = _parse_body(context.config().limits)
    key = body.get("writeKey")
    if not isinstance(key, str) or not key:
        key = request.args.get("writeKey", "")
    return _source_for(key), body


def _basic_username() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "basic" or not credentials.strip():
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise ApiError(401, "invalid_authorization",
                       "the Basic credentials are not valid base64") from None
    return decoded.partition(":")[0] or None


def _source_for(key: str) -> Source:
    if not key:
        raise ApiError(401, "missing_write_key",
                       "no write key: send it as the Basic auth username, as `writeKey` in the "
                       "body, or as the `writeKey` query parameter")
    source = context.config().source_by_write_key(key)
    if source is None:
        raise ApiError(401, "invalid_write_key", "invalid write key")
    if not source.enabled:
        raise ApiError(404, "source_disabled", "source is disabled")
    return source


def _parse_body(limits: Limits) -> dict[str, Any]:
    raw = _read_bounded(limits.max_request_bytes)
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding == "gzip":
        raw = _gunzip_bounded(raw, limits.max_request_bytes)
    elif encoding not in ("", "identity"):
        raise ApiError(415, "unsupported_encoding",
                       f"Content-Encoding {encoding!r} is not supported (use gzip)")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc) or "recursion" in str(exc):
            raise ApiError(400, "too_deep", too_deep_text(limits)) from None
        raise ApiError(400, "invalid_json", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    if _envelope_too_deep(body, limits.max_json_depth):  # messages: each alone (messages.py)
        raise ApiError(400, "too_deep", too_deep_text(limits))
    if b"\\u0000" in raw:  # JSON carries NUL only as this escape: most bodies skip the walk
        strip_nul(body)
    return body


def _read_bounded(limit: int) -> bytes:
    """The raw body, never more than `limit` bytes in memory (checked before decompressing)."""
    too_large = ApiError(413, "request_too_large",
                         f"the request body may hold at most {limit} bytes")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    try:
        raw = request.stream.read(limit + 1)
    except OSError:  # the connection ended inside a chunked body (or the deadline cut it)
        raw = None
    if body_expired():
        raise ApiError(408, "request_timeout",
                       "the request body did not arrive in time; send it again")
    if raw is None or (request.content_length is not None
                       and len(raw) < request.content_length):
        raise ApiError(400, "incomplete_body", "the request body ended before its end")
    if len(raw) > limit:
        raise too_large
    return raw


def _gunzip_bounded(raw: bytes, limit: int) -> bytes:
    """Decompress at most limit+1 bytes: a gzip bomb costs us no more than the limit."""
    out = bytearray()
    while True:
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += decompressor.decompress(raw, limit + 1 - len(out))
        except zlib.error:
            raise ApiError(400, "invalid_gzip", "the body is not valid gzip") from None
        if len(out) > limit or decompressor.unconsumed_tail:
            raise ApiError(413, "request_too_large",
                           f"the decompressed body may hold at most {limit} bytes")
        if not decompressor.eof:
            raise ApiError(400, "invalid_gzip", "the gzip body is truncated")
        raw = decompressor.unused_data  # concatenated gzip members
        if not raw:
            return bytes(out)


def _envelope_too_deep(body: dict[str, Any], limit: int) -> bool:
    """The body's depth outside its `batch` messages, which are checked one by one so that a
    message nested too deep is refused alone (the body is level 1, `batch` level 2)."""
    batch = body.get("batch")
    if not isinstance(batch, list):
        return nesting_exceeds(body, limit)
    return limit < 2 or nesting_exceeds({k: v for k, v in body.items() if k != "batch"}, limit)


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
