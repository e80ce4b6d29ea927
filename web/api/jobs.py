"""Creating, reading, listing and cancelling jobs, and reading a classify job's predictions."""
from __future__ import annotations

from flask import url_for

from core.specs import ClassifyRequest, TrainRequest

from .. import exports, schemas, services
from ..auth import current
from ..queries import ExportQuery, JobListQuery, PredictionQuery
from . import bp
from .apidoc import QUEUED, Answer, documented

EXPORT_DESCRIPTION = (
    "Columns, in order: `index`, `id` (only for a job on a dataset with an `id_column`: the row's id), `text`, "
    "`label`, `score`, then `score_<label>` for each class in the model's label order. For a multitask model: "
    "`index`, `id`?, `text`, then per task `<task>_label`, `<task>_score`, `<task>_score_<label>`... "
    "CSV: RFC 4180 (CRLF, quoted only when needed), UTF-8 with a byte-order mark; floats are written so they "
    "parse back exactly, texts exactly as stored (nothing is escaped for spreadsheet formulas). "
    "JSONL: one JSON object per line with the same keys."
)


def accepted(job: dict):
    """202 with the job and where to poll it."""
    return job, 202, {"Location": url_for("api.get_job", job_id=job["id"])}


@bp.post("/api/v1/jobs/train")
@documented(
    "Queue a training job",
    body=TrainRequest,
    creates_job=True,
    responses={
        202: QUEUED,
        404: "unknown dataset",
        422: "invalid body, unknown column, fewer than 2 classes, a label longer than 200 characters "
        "(label_too_long), or too much work (training_too_large)",
    },
)
def create_train_job(body: TrainRequest):
    return accepted(services.start_training(current(), body))


@bp.post("/api/v1/jobs/classify")
@documented(
    "Queue a classification job: texts, pairs, or a stored dataset's rows (text column or text_template, by default "
    "the model's; + id column)",
    body=ClassifyRequest,
    creates_job=True,
    responses={
        202: QUEUED,
        404: "unknown model (by id or by name) or dataset",
        409: "the model was deleted (model_deleted)",
        422: "invalid body (texts and dataset_id both or neither given, model_id and model both or neither given, a "
        "model reference that is not NAME or NAME:VERSION, ...), a column the dataset lacks (unknown_column), a "
        "text column with no text (empty_column), or no text column given for a model that records none "
        "(missing_column)",
    },
)
def create_classify_job(body: ClassifyRequest):
    return accepted(services.start_classification(current(), body))


@bp.get("/api/v1/jobs")
@documented("List jobs, newest first", query=JobListQuery, responses={200: Answer("jobs", schemas.JobList)})
def list_jobs(query: JobListQuery):
    items, total = services.list_jobs(
        current(),
        status=query.status,
        job_type=query.type,
        model_id=query.model_id,
        dataset_id=query.dataset_id,
        limit=query.limit,
        offset=query.offset,
    )
    return {"items": items, "total": total, "limit": query.limit, "offset": query.offset}


@bp.get("/api/v1/jobs/<job_id>")
@documented("A job's status, progress, params and metrics", responses={200: Answer("the job", schemas.Job)})
def get_job(job_id: str):
    return services.get_job(current(), job_id)


@bp.post("/api/v1/jobs/<job_id>/cancel")
@documented(
    "Cancel a queued or running job",
    responses={200: Answer("cancelled", schemas.Job), 409: "the job already finished"},
)
def cancel_job(job_id: str):
    return services.cancel_job(current(), job_id)


@bp.delete("/api/v1/jobs/<job_id>")
@documented(
    "Delete a finished job and its stored predictions (frees the prediction quota)",
    description=(
        "Only a succeeded, failed or cancelled job: a queued or running one is refused with 409 `job_active` "
        "(cancel it first). A training job whose model still exists is refused with 409 `job_has_model` "
        "(`model_id`: delete the model first; its page shows the training curves). Only the job's owner (or an "
        "admin) may delete it; anyone else's id answers 404 like a missing one."
    ),
    responses={
        200: Answer("deleted", schemas.JobDeleted),
        409: "the job is queued or running (job_active), or it trained a model that still exists (job_has_model)",
    },
)
def delete_job(job_id: str):
    return services.delete_job(current(), job_id)


@bp.get("/api/v1/jobs/<job_id>/predictions")
@documented(
    "A classify job's predictions, ordered by index (partial while it runs)",
    query=PredictionQuery,
    responses={
        200: Answer("a page of predictions", schemas.PredictionPage),
        409: "the job is not a classify job: it has no predictions",
    },
)
def list_predictions(job_id: str, query: PredictionQuery):
    return services.list_predictions(
        current(), job_id, offset=query.offset, limit=query.limit, label=query.label
    )


@bp.get("/api/v1/jobs/<job_id>/export")
@documented(
    "Download every prediction of a succeeded classify job as CSV, JSONL or (token classification) CoNLL, streamed",
    description=EXPORT_DESCRIPTION,
    query=ExportQuery,
    responses={
        200: Answer(
            "the predictions, one row (CSV) or object (JSONL) each, ordered by index",
            model=None,
            headers={"Content-Disposition": 'attachment; filename="job-<id>-predictions.csv" (or .jsonl, .conll)'},
            content={media_type: {"schema": {"type": "string"}} for media_type in exports.FORMATS.values()},
        ),
        400: "format is not csv, jsonl or conll, or conll for a job that is not token classification "
        "(invalid_parameter)",
        409: "a job that is not a classify job (not_a_classify_job), or a classify job that has not succeeded "
        "(job_not_succeeded)",
    },
)
def export_predictions(job_id: str, query: ExportQuery):
    """Every prediction of a succeeded classify job as a CSV or JSONL download, streamed page by page."""
    return exports.export_response(current(), job_id, query.format)
