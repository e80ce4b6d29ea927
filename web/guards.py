"""What every request's URL must satisfy before a view runs, so no hostile URL reaches SQL as a 500.

- ``<int:...>`` path ids are at most 2^63 - 1 (PostgreSQL BIGINT): a larger one is no id, so 404.
- String path segments (``<job_id>``) and query parameters never hold a NUL character: PostgreSQL text cannot
  store or compare one, and no id, name, label or filter of this application contains one. A path segment with
  one matches no route (404); a query parameter with one is 400 ``invalid_parameter``.

``register(app)`` must run before the blueprints are registered: rules pick their converters when added.
"""
from __future__ import annotations

from flask import Flask, request
from werkzeug.exceptions import NotFound
from werkzeug.routing import IntegerConverter, UnicodeConverter

from core.specs import MAX_SQL_ID

from .errors import ApiError


class SqlIdConverter(IntegerConverter):
    """``<int:...>`` bounded to a SQL BIGINT, so a 20-digit id is a 404 rather than a database error.

    Out of range raises NotFound itself: a converter's ValidationError would let Werkzeug answer 405 when the
    same path has a route for another method.
    """

    def to_python(self, value: str) -> int:
        try:
            number = super().to_python(value)
        except ValueError:  # past Python's 4,300-digit limit on int()
            raise NotFound() from None
        if number > MAX_SQL_ID:
            raise NotFound()
        return number


class TextConverter(UnicodeConverter):
    """The default ``<name>`` converter, minus NUL characters."""

    def __init__(self, map, minlength: int = 1, maxlength: int | None = None, length: int | None = None) -> None:
        super().__init__(map, minlength=minlength, maxlength=maxlength, length=length)
        self.regex = self.regex.replace("[^/]", "[^/\\x00]")


def _no_nul_in_query() -> None:
    for name, value in request.args.items(multi=True):
        if "\x00" in name or "\x00" in value:
            shown = name.replace("\x00", "")
            raise ApiError(400, "invalid_parameter", f"query parameter {shown!r} holds a NUL character")


# API endpoints whose body is a file upload; every other API body must be JSON
MULTIPART_ENDPOINTS = frozenset({"api.upload_dataset", "api.import_model"})


def _api_body_media_type() -> None:
    """Any API request carrying a body says it is JSON (or multipart where a file is uploaded): 415 otherwise.

    Also on routes that read no body (cancel, DELETE): a cross-site form can send text/plain or urlencoded
    bodies without a preflight, and the API never takes one.
    """
    if request.blueprint != "api" or request.method in ("GET", "HEAD", "OPTIONS"):
        return
    upload = request.endpoint in MULTIPART_ENDPOINTS
    if not upload and not request.content_length and not request.content_type:
        return  # no body at all (an upload always needs one)
    allowed = {"multipart/form-data"} if upload else {"application/json"}
    if request.mimetype not in allowed:
        sent = request.content_type or "no Content-Type"
        raise ApiError(415, "unsupported_media_type", f"send the body as {' or '.join(sorted(allowed))}, not {sent}")


def register(app: Flask) -> None:
    """Install the bounded converters and the request checks on ``app`` (before its blueprints)."""
    app.url_map.converters.update(int=SqlIdConverter, default=TextConverter, string=TextConverter)
    app.before_request(_no_nul_in_query)
    app.before_request(_api_body_media_type)
