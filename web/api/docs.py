"""The OpenAPI document and the Prometheus metrics endpoint."""
from __future__ import annotations

from flask import Response

from .. import context
from ..openapi import openapi_document
from . import bp


@bp.get("/api/v1/openapi.json")
def openapi():
    return openapi_document()


@bp.get("/metrics")
def metrics():
    body, content_type = context.state().metrics.exposition()
    return Response(body, content_type=content_type)
