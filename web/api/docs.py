"""The OpenAPI document and the Prometheus metrics endpoint."""
from __future__ import annotations

from flask import Response, current_app

from .. import context, openapi as document  # a module import: web.openapi imports this package too
from . import bp
from .apidoc import FORBIDDEN, Answer, documented


@bp.get("/api/v1/openapi.json")
@documented(
    "This document",
    responses={
        200: Answer("OpenAPI 3.1", model=None, content={"application/json": {"schema": {"type": "object"}}})
    },
)
def openapi():
    return document.openapi_document(current_app)


@bp.get("/metrics")
@documented(
    "Prometheus metrics (admins only, unless METRICS_PUBLIC is set)",
    responses={
        200: Answer("text exposition", model=None, content={"text/plain": {"schema": {"type": "string"}}}),
        403: FORBIDDEN,
    },
)
def metrics():
    body, content_type = context.state().metrics.exposition()
    return Response(body, content_type=content_type)
