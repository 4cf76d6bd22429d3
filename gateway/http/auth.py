"""Write-key authentication on the tracking API and the browser settings: the key is the Basic
username, else the body's `writeKey`, else the `?writeKey=` query parameter (the pixel API has
only the query). Browser write keys are public: a key names a source, it proves nothing more."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from flask import request

from gateway.config import Source
from gateway.http import body as request_body
from gateway.http import context, source_guard
from gateway.http.errors import ApiError


def authenticated_body() -> tuple[Source, dict[str, Any]]:
    """Write key from the Basic username, else the body's `writeKey`, else `?writeKey=`."""
    key = basic_username()
    if key is not None:
        source = source_for(key)  # before reading the body: no work for unknown callers
        return source, request_body.parse_object(context.config().limits)
    body = request_body.parse_object(context.config().limits)
    key = body.get("writeKey")
    if not isinstance(key, str) or not key:
        key = request.args.get("writeKey", "")
    return source_for(key), body


def basic_username() -> str | None:
    """The Basic credentials' username (the write key); None without Basic credentials."""
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


def source_for(key: str) -> Source:
    """The enabled source of this write key: 401 for a missing or unknown key, 404 disabled,
    403 for an `Origin` the source's `allowed_origins` does not hold."""
    if not key:
        raise ApiError(401, "missing_write_key",
                       "no write key: send it as the Basic auth username, as `writeKey` in the "
                       "body, or as the `writeKey` query parameter")
    source = context.config().source_by_write_key(key)
    if source is None:
        raise ApiError(401, "invalid_write_key", "invalid write key")
    if not source.enabled:
        raise ApiError(404, "source_disabled", "source is disabled")
    source_guard.check_origin(source)  # a browser from another origin: 403
    return source
