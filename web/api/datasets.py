"""Dataset upload and listing."""
from __future__ import annotations

from flask import request, url_for

from .. import services
from ..auth import current
from ..errors import ApiError
from . import bp
from .request_args import int_arg


@bp.post("/api/v1/datasets")
def upload_dataset():
    upload = request.files.get("file")  # the body is multipart (web.guards: 415 otherwise)
    if upload is None:
        raise ApiError(
            400, "missing_file", "send the CSV, TSV, JSON or JSONL file as a multipart/form-data field named 'file'"
        )
    result = services.create_dataset(current(), upload.stream, upload.filename, request.form.get("name"))
    return result, 201, {"Location": url_for("api.get_dataset", dataset_id=result["id"])}


@bp.get("/api/v1/datasets")
def list_datasets():
    limit = int_arg("limit", 100, minimum=1, maximum=1000)
    offset = int_arg("offset", 0)
    items, total = services.list_datasets(current(), limit=limit, offset=offset)
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@bp.get("/api/v1/datasets/<int:dataset_id>")
def get_dataset(dataset_id: int):
    return services.get_dataset(current(), dataset_id)
