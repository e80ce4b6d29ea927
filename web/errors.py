"""Errors: one exception type for expected failures and handlers that answer JSON under the API, HTML elsewhere.

Every JSON error has the shape ``{"error": {"code": ..., "message": ...}}`` (plus ``details`` for validation).
"""
from __future__ import annotations

import logging

from flask import Flask, Response, current_app, jsonify, make_response, render_template, request
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException, MethodNotAllowed

log = logging.getLogger(__name__)

# Paths that always answer JSON, even for errors raised before a view runs (404, 405, 413).
_JSON_PREFIXES = ("/api/", "/healthz", "/readyz", "/metrics")

_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable_entity",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


MAX_DETAILS = 20  # a list of 10,000 bad texts must not produce a 10,000-entry error


class ApiError(Exception):
    """An expected failure with an HTTP status, a machine-readable code and a user-facing message."""

    def __init__(self, status: int, code: str, message: str, *, details: list | None = None, extra: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details, self.extra = status, code, message, details, extra

    def to_dict(self) -> dict:
        body: dict = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        if self.extra:
            body.update(self.extra)
        return {"error": body}


def validation_error(exc: ValidationError, *, status: int = 422) -> ApiError:
    """A pydantic error as an ApiError: a readable one-line message plus per-field details."""
    details = []
    errors = exc.errors(include_url=False, include_input=False)
    for err in errors[:MAX_DETAILS]:
        field = ".".join(str(part) for part in err.get("loc", ()))
        message = err.get("msg", "invalid value").removeprefix("Value error, ")
        details.append({"field": field, "message": message, "type": err.get("type", "")})
    summary = "; ".join(f"{d['field']}: {d['message']}" if d["field"] else d["message"] for d in details[:5])
    if len(errors) > 5:
        summary += f" (and {len(errors) - 5} more)"
    return ApiError(status, "validation_error", summary or "invalid request", details=details)


def wants_json() -> bool:
    return request.path.startswith(_JSON_PREFIXES)


def _respond(status: int, code: str, message: str, payload: dict | None = None):
    if wants_json():
        body = jsonify(payload or {"error": {"code": code, "message": message}})
    else:
        body = render_template("error.html", status=status, code=code, message=message)
    return make_response(body, status)


def error_response(status: int, code: str, message: str):
    """The usual error answer for handlers outside this module (``{"error": {code, message}}`` under the API's
    prefixes, the error page elsewhere)."""
    return _respond(status, code, message)


_STATIC_ROUTES_KEY = "bertqueue.static_routes"


def _static_routes(app: Flask) -> dict[str, frozenset[str]]:
    """Path -> methods of every route without variables (built once: routes are fixed once the app is made)."""
    routes = app.extensions.get(_STATIC_ROUTES_KEY)
    if routes is None:
        routes = {}
        for rule in app.url_map.iter_rules():
            if not rule.arguments:
                routes[rule.rule] = routes.get(rule.rule, frozenset()) | frozenset(rule.methods or ())
        app.extensions[_STATIC_ROUTES_KEY] = routes
    return routes


def allowed_methods() -> list[str]:
    """The methods the requested path answers (its ``Allow`` header), as one resource.

    A path that a static route spells (``/api/v1/jobs/train``) is that route's alone, though a route with a variable
    (``/api/v1/jobs/<job_id>``) matches it too: Werkzeug would also list the variable route's methods.
    """
    static = _static_routes(current_app).get(request.path)
    if static is not None:
        return sorted(static)
    return sorted(current_app.create_url_adapter(request).allowed_methods())


def _static_path_is_not_a_value() -> None:
    """``GET /api/v1/jobs/train`` is 405 (the resource takes POST), not a lookup of a job named "train"."""
    rule = request.url_rule
    if rule is not None and rule.arguments and request.path in _static_routes(current_app):
        raise MethodNotAllowed(valid_methods=allowed_methods())


def _options_allow(response: Response) -> Response:
    """Flask's automatic OPTIONS answer lists every route matching the path; list the resource's own methods."""
    if request.method == "OPTIONS" and "Allow" in response.headers:
        response.headers["Allow"] = ", ".join(allowed_methods())
    return response


def register(app: Flask) -> None:
    app.before_request(_static_path_is_not_a_value)
    app.after_request(_options_allow)

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return _respond(exc.status, exc.code, exc.message, exc.to_dict())

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        code = _HTTP_CODES.get(status, "http_error")
        message = exc.description or exc.name
        if status == 413:
            limit_mb = (request.max_content_length or 0) / (1024 * 1024)  # per request: model imports differ
            message = f"the request is too large: the limit is {limit_mb:g} MB"
        elif status == 405:
            message = f"method {request.method} is not allowed for {request.path}"
        elif status == 404 and wants_json():
            message = f"not found: {request.path}"
        response = _respond(status, code, message)
        if status == 405:  # RFC 9110: a 405 lists what the resource does take
            response.headers["Allow"] = ", ".join(allowed_methods())
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _respond(500, "internal_error", "internal server error: the failure was logged")
