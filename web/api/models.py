"""Trained models."""
from __future__ import annotations

from core.specs import ModelServingUpdate

from .. import services
from ..auth import current
from . import bp
from .request_args import int_arg, json_object


@bp.get("/api/v1/models")
def list_models():
    limit = int_arg("limit", 100, minimum=1, maximum=1000)
    offset = int_arg("offset", 0)
    items, total = services.list_models(current(), limit=limit, offset=offset)
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@bp.get("/api/v1/models/<int:model_id>")
def get_model(model_id: int):
    return services.get_model(current(), model_id)


@bp.patch("/api/v1/models/<int:model_id>")
def update_model(model_id: int):
    """Serving defaults of a model, e.g. ``{"quantize": true}``; a request's own ``quantize`` still wins."""
    return services.update_model_serving(current(), model_id, services.validate(ModelServingUpdate, json_object()))
