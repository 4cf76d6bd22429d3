"""Request bodies, read as hostile input: never more than the limit in memory (checked before
and while decompressing), gzip alone as an encoding, JSON, and the nesting depth of the
envelope (docs/design.md §2.7). The tracking API and the admin API read their bodies here, so
one bound and one set of answers hold for both."""

from __future__ import annotations

import json
import zlib
from typing import Any

import orjson
from flask import request

from gateway.config import Limits
from gateway.http.deadline import body_expired
from gateway.http.errors import ApiError
from gateway.messages import nesting_exceeds, strip_nul, too_deep_text


def parse_object(limits: Limits) -> dict[str, Any]:
    """The body as a JSON object (a tracking request), or the ApiError that refuses it."""
    raw = decoded(limits.max_request_bytes)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc) or "recursion" in str(exc):
            raise ApiError(400, "too_deep", too_deep_text(limits)) from None
        raise ApiError(400, "invalid_json", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    if envelope_too_deep(body, limits.max_json_depth):  # messages: each alone (messages.py)
        raise ApiError(400, "too_deep", too_deep_text(limits))
    if b"\\u0000" in raw:  # JSON carries NUL only as this escape: most bodies skip the walk
        strip_nul(body)
    return body


def json_or_none(limits: Limits) -> Any:
    """The body's JSON value, or None when it is not JSON (the admin API answers that with its
    own 400); whatever the Content-Type, as the admin clients send it. Size and encoding are
    refused as on the tracking API. The standard library's parser, as Flask's was: it keeps a
    lone surrogate, which the admin API then refuses as a filter no database can hold."""
    raw = decoded(limits.max_request_bytes)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # ValueError: JSON and UTF-8 errors alike
        return None


def decoded(limit: int) -> bytes:
    """The raw body, gunzipped when it says so; 415 for any other Content-Encoding."""
    raw = read_bounded(limit)
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding == "gzip":
        return gunzip_bounded(raw, limit)
    if encoding not in ("", "identity"):
        raise ApiError(415, "unsupported_encoding",
                       f"Content-Encoding {encoding!r} is not supported (use gzip)")
    return raw


def read_bounded(limit: int) -> bytes:
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


def gunzip_bounded(raw: bytes, limit: int) -> bytes:
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


def envelope_too_deep(body: dict[str, Any], limit: int) -> bool:
    """The body's depth outside its `batch` messages, which are checked one by one so that a
    message nested too deep is refused alone (the body is level 1, `batch` level 2)."""
    batch = body.get("batch")
    if not isinstance(batch, list):
        return nesting_exceeds(body, limit)
    return limit < 2 or nesting_exceeds({k: v for k, v in body.items() if k != "batch"}, limit)
