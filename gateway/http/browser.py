"""The settings browser SDKs fetch before they send anything, answered so that they need only
the gateway's URL and a write key, and never contact their vendor.

- analytics.js 2.0 (`@segment/analytics-next`, `cdnURL` = the gateway) reads
  `GET /v1/projects/<writeKey>/settings`: one integration, `Segment.io`, pointing at the
  gateway. Any other integration, remote plugin or middleware makes it download code from
  Segment's CDN, and `metrics.sampleRate` 0 keeps its telemetry home.
- RudderStack JS v3 (`@rudderstack/analytics-js`, `configUrl` = the gateway) reads
  `GET /sourceConfig/?writeKey=…` (Basic auth too): a source with no device-mode destinations.
  The mobile SDKs read the same answer: rudder-sdk-android/ios 1.x send nothing unless
  `source.enabled` is true; the new rudder-sdk-kotlin and rudder-sdk-swift fail to decode it
  without `source.writeKey` and `source.updatedAt`, and rudder-sdk-swift also needs
  `source.config.statsCollection.{errors,metrics}.enabled`. Both are false: every one of these
  SDKs (JS v3 included) keeps its error and metrics reporting off unless they are true.

Unknown keys are 401 and disabled sources 404, as on the tracking API (CORS: http/cors.py).
The answers are small and change only with the config, so they are cached briefly and carry an
ETag that a revalidation answers with 304.
"""

from __future__ import annotations

import hashlib
import urllib.parse
from typing import Any

import orjson
from flask import Blueprint, Response, request

from gateway.config import Source
from gateway.http import context
from gateway.http.auth import basic_username, source_for

bp = Blueprint("browser", __name__)

CACHE_SECONDS = 120  # short: a config change reaches browsers within two minutes
WORKSPACE_ID = "event-gateway"  # one gateway is one workspace: the SDK only echoes it
# The source config never changes what an SDK does (no destinations, stats off): one fixed time
# keeps the answer, and so its ETag, the same in every process and across restarts.
UPDATED_AT = "2026-01-01T00:00:00.000Z"
STATS_OFF = {"errors": {"enabled": False}, "metrics": {"enabled": False}}



@bp.get("/v1/projects/<write_key>/settings")
def segment_settings(write_key: str) -> Response:
    """analytics.js `cdnURL` settings (the shape analytics-next's loadCDNSettings parses)."""
    source = source_for(write_key)
    return _cached_json(segment_settings_body(source, public_base_url()))


@bp.get("/sourceConfig")
@bp.get("/sourceConfig/")
def rudder_source_config() -> Response:
    """RudderStack JS v3 `configUrl` settings; the key is the Basic username, else `?writeKey=`
    (the SDK sends both)."""
    key = basic_username() or request.args.get("writeKey", "")
    return _cached_json(rudder_source_config_body(source_for(key)))


def segment_settings_body(source: Source, base_url: str) -> dict[str, Any]:
    parts = urllib.parse.urlsplit(base_url)
    return {
        "integrations": {
            "Segment.io": {
                "apiKey": source.write_key,
                # analytics.js posts to <protocol>://<apiHost>/<t|i|p|g|a|b>
                "apiHost": f"{parts.netloc}{parts.path}/v1",
                "protocol": parts.scheme,
            },
        },
        "remotePlugins": [],
        "enabledMiddleware": {},
        "middlewareSettings": {},
        "plan": {},
        "metrics": {"sampleRate": 0},
    }


def rudder_source_config_body(source: Source) -> dict[str, Any]:
    return {
        "source": {
            "id": source.name,
            "name": source.name,
            # the key the caller authenticated with: the new SDKs decode it, nothing new leaks
            "writeKey": source.write_key,
            "enabled": True,  # 1.x SDKs send nothing without it
            "workspaceId": WORKSPACE_ID,
            "updatedAt": UPDATED_AT,
            "config": {"statsCollection": STATS_OFF},
            "destinations": [],
        },
    }


def public_base_url() -> str:
    """`[server] public_url`, else the scheme and Host of this request (no trailing slash)."""
    configured = context.config().server.public_url
    if configured:
        return configured
    return f"{request.scheme}://{request.host}"


def _cached_json(body: dict[str, Any]) -> Response:
    """JSON with a short max-age and a strong ETag of its bytes; 304 when the browser has it."""
    data = orjson.dumps(body)
    response = Response(data, mimetype="application/json")
    response.set_etag(hashlib.sha256(data).hexdigest()[:32])
    response.cache_control.public = True
    response.cache_control.max_age = CACHE_SECONDS
    return response.make_conditional(request)
