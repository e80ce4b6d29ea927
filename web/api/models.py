"""Trained models."""
from __future__ import annotations

from core.specs import ModelServingUpdate

from .. import schemas, services
from ..auth import current
from ..queries import Page
from . import bp
from .apidoc import Answer, documented


@bp.get("/api/v1/models")
@documented("List trained models, newest first", query=Page, responses={200: Answer("models", schemas.ModelList)})
def list_models(query: Page):
    items, total = services.list_models(current(), limit=query.limit, offset=query.offset)
    return {"items": items, "total": total, "limit": query.limit, "offset": query.offset}


@bp.get("/api/v1/models/<int:model_id>")
@documented("A trained model", responses={200: Answer("the model", schemas.Model)})
def get_model(model_id: int):
    return services.get_model(current(), model_id)


@bp.patch("/api/v1/models/<int:model_id>")
@documented(
    "Set the model's serving defaults (quantize); null returns a key to the deployment's",
    body=ModelServingUpdate,
    responses={200: Answer("the model", schemas.Model)},
)
def update_model(model_id: int, body: ModelServingUpdate):
    """Serving defaults of a model, e.g. ``{"quantize": true}``; a request's own ``quantize`` still wins."""
    return services.update_model_serving(current(), model_id, body)
