"""JSON errors in the one shape every SDK can read: `{"code": …, "message": …}`.

rudder-sdk-python and analytics-python 1.x read `code` from any JSON error body and treat its
absence as a network error (retrying a permanent 4xx), so both keys are always present.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, jsonify, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException, InternalServerError

from gateway.http import context
from gateway.store.storage_state import RefusedWrites, is_storage_error, refuses_values


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra
        self.headers: dict[str, str] = {}


def error_response(status: int, code: str, message: str, **extra: Any) -> Response:
    response = jsonify({"code": code, "message": message, **extra})
    response.status_code = status
    return response


def _slug(name: str) -> str:
    return name.lower().replace(" ", "_").replace("'", "")


def init_app(app: Flask) -> None:
    refused = RefusedWrites()

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        response = error_response(exc.status, exc.code, exc.message, **exc.extra)
        response.headers.update(exc.headers)
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        response = error_response(exc.code or 500, _slug(exc.name), exc.description or exc.name)
        for key, value in exc.get_headers():
            if key.lower() == "allow":
                response.headers[key] = value
        return response

    @app.errorhandler(SQLAlchemyError)
    def _storage_error(exc: Exception) -> Response:
        # Not stored: answer with a retryable status so the SDK sends the batch again. One log
        # line per outage, not a traceback per request (gateway/store/storage_state.py).
        if refuses_values(exc):  # this request's rows, not the database: /health stays up
            refused.failed(exc)
            response = error_response(500, "not_stored",
                                      "the gateway could not store this request; retry later")
            response.headers["Retry-After"] = "1"
            return response
        context.storage(app).failed(exc, context.engine(app))
        response = error_response(503, "storage_unavailable",
                                  "the event store is unavailable; retry later")
        response.headers["Retry-After"] = "1"
        return response

    @app.errorhandler(OSError)
    def _file_error(exc: OSError) -> Response:
        """A read-only, full or failing disk under the database's own files is the same
        outage as SQLite's "readonly database"; any other OSError is a bug (500, logged)."""
        if is_storage_error(exc):
            return _storage_error(exc)
        app.logger.error("Exception on %s [%s]", request.path, request.method, exc_info=exc)
        return error_response(500, "internal_server_error", InternalServerError.description)
