"""Trained (and imported) models: list, read, serving defaults, delete.

Models have a name and a version counted per owner and name; classify, evaluate and predict take a model by
``model_id`` or by ``model``: ``"NAME"`` (its latest version that is not deleted) or ``"NAME:VERSION"``
(``core.models_registry``).
"""
from __future__ import annotations

from core.specs import ModelServingUpdate

from .. import schemas, services
from ..auth import current
from ..queries import ModelListQuery
from . import bp
from .apidoc import Answer, documented

DELETE_DESCRIPTION = (
    "Refused with 409 `model_in_use` while a queued or running job uses the model (the message and `job_ids` name "
    "them: wait for them or cancel them). Otherwise the model is marked deleted (`deleted_at`), its files are "
    "removed from the model store and running workers drop it from their caches. Its jobs, predictions and exports "
    "stay readable and `GET /api/v1/models/<id>` still answers, but it is left out of lists (unless "
    "`include_deleted=true`) and classify, evaluate and predict refuse it with 409 `model_deleted`. Deleting it "
    "again is 409 `model_deleted`. Only the model's owner (or an admin) may delete it."
)


@bp.get("/api/v1/models")
@documented(
    "List models, newest first; with `name`: that name's versions, newest first",
    query=ModelListQuery,
    responses={200: Answer("models", schemas.ModelList)},
)
def list_models(query: ModelListQuery):
    items, total = services.list_models(current(), name=query.name, include_deleted=query.include_deleted,
                                        limit=query.limit, offset=query.offset)
    return {"items": items, "total": total, "limit": query.limit, "offset": query.offset}


@bp.get("/api/v1/models/<int:model_id>")
@documented("A model (a deleted one too: see `deleted_at`)", responses={200: Answer("the model", schemas.Model)})
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


@bp.delete("/api/v1/models/<int:model_id>")
@documented(
    "Delete a model: its files go, its row (and its jobs' predictions) stay readable",
    description=DELETE_DESCRIPTION,
    responses={
        200: Answer("the deleted model (`deleted_at` set)", schemas.Model),
        409: "a queued or running job uses the model (model_in_use; error.job_ids lists them), or it was already "
        "deleted (model_deleted)",
    },
)
def delete_model(model_id: int):
    return services.delete_model(current(), model_id)
