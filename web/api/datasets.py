"""Dataset upload, listing and delete."""
from __future__ import annotations

from flask import url_for

from .. import schemas, services
from ..auth import current
from ..queries import DatasetUpload, Page
from . import bp
from .apidoc import Answer, documented


@bp.post("/api/v1/datasets")
@documented(
    "Upload a dataset: CSV (header row; comma, semicolon or tab separated), TSV, JSON Lines (one object per line, "
    "the first one's keys name the columns) or a JSON array of objects; UTF-8. The format comes from the file "
    "name's extension (.csv, .tsv/.tab, .jsonl/.ndjson, .json), else from the content",
    form=DatasetUpload,
    responses={
        201: Answer("stored", schemas.Dataset, headers={"Location": "the dataset"}),
        400: "missing file (missing_file), empty file, not UTF-8, malformed CSV/TSV/JSON/JSONL, ragged rows",
        413: "larger than MAX_UPLOAD_MB (payload_too_large), past MAX_DATASET_ROWS (too_many_rows) or "
             "MAX_DATASET_COLUMNS (too_many_columns), or past the user's dataset bytes quota (quota_exceeded; its count quota answers 429)",
        422: "a name longer than 200 characters or holding a NUL character (validation_error)",
    },
)
def upload_dataset(form: DatasetUpload):
    result = services.create_dataset(current(), form.file.stream, form.file.filename, form.name)
    return result, 201, {"Location": url_for("api.get_dataset", dataset_id=result["id"])}


@bp.get("/api/v1/datasets")
@documented("List datasets, newest first", query=Page, responses={200: Answer("datasets", schemas.DatasetList)})
def list_datasets(query: Page):
    items, total = services.list_datasets(current(), limit=query.limit, offset=query.offset)
    return {"items": items, "total": total, "limit": query.limit, "offset": query.offset}


@bp.get("/api/v1/datasets/<int:dataset_id>")
@documented(
    "A dataset with a preview of its first rows and per-column label counts",
    responses={200: Answer("the dataset", schemas.Dataset)},
)
def get_dataset(dataset_id: int):
    return services.get_dataset(current(), dataset_id)


@bp.delete("/api/v1/datasets/<int:dataset_id>")
@documented(
    "Delete a dataset: its content goes, the jobs and models that used it keep its name",
    description=(
        "Only the dataset's owner (or an admin) may delete it; a shared sample only an admin (403 `shared_dataset`). "
        "Refused with 409 `dataset_in_use` while a queued or running job reads it (as its dataset or a training's "
        "`validation_dataset_id`; `job_ids` names them: wait for them or cancel them). The content is emptied at "
        "once (freeing the storage quota); afterwards the dataset answers 404 like a missing one, is left out of "
        "lists, and training, classification and evaluation refuse it. Finished jobs and models that used it stay "
        "readable."
    ),
    responses={
        200: Answer("the deleted dataset (`deleted_at` set)", schemas.Dataset),
        403: "a shared sample and the caller is not an admin (shared_dataset)",
        409: "a queued or running job uses the dataset (dataset_in_use; error.job_ids lists them)",
    },
)
def delete_dataset(dataset_id: int):
    return services.delete_dataset(current(), dataset_id)
