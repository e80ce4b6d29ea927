"""Creating, reading, listing and cancelling jobs, and reading a classify job's predictions."""
from __future__ import annotations

from flask import request, url_for

from core.schema import JobStatus, JobType
from core.specs import ClassifyRequest, TrainRequest

from .. import exports, services
from ..auth import current
from . import bp
from .request_args import choice_arg, int_arg, json_object, optional_int_arg

STATUSES = [s.value for s in JobStatus]
TYPES = [t.value for t in JobType]


def accepted(job: dict):
    """202 with the job and where to poll it."""
    return job, 202, {"Location": url_for("api.get_job", job_id=job["id"])}


@bp.post("/api/v1/jobs/train")
def create_train_job():
    return accepted(services.start_training(current(), services.validate(TrainRequest, json_object())))


@bp.post("/api/v1/jobs/classify")
def create_classify_job():
    return accepted(services.start_classification(current(), services.validate(ClassifyRequest, json_object())))


@bp.get("/api/v1/jobs")
def list_jobs():
    limit = int_arg("limit", 50, minimum=1, maximum=500)
    offset = int_arg("offset", 0)
    items, total = services.list_jobs(current(), 
        status=choice_arg("status", STATUSES),
        job_type=choice_arg("type", TYPES),
        model_id=optional_int_arg("model_id"),
        dataset_id=optional_int_arg("dataset_id"),
        limit=limit,
        offset=offset,
    )
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@bp.get("/api/v1/jobs/<job_id>")
def get_job(job_id: str):
    return services.get_job(current(), job_id)


@bp.post("/api/v1/jobs/<job_id>/cancel")
def cancel_job(job_id: str):
    return services.cancel_job(current(), job_id)


@bp.get("/api/v1/jobs/<job_id>/predictions")
def list_predictions(job_id: str):
    offset = int_arg("offset", 0)
    limit = int_arg("limit", 100, minimum=1, maximum=1000)
    label = request.args.get("label") or None
    return services.list_predictions(current(), job_id, offset=offset, limit=limit, label=label)


@bp.get("/api/v1/jobs/<job_id>/export")
def export_predictions(job_id: str):
    """Every prediction of a succeeded classify job as a CSV or JSONL download, streamed page by page."""
    fmt = choice_arg("format", list(exports.FORMATS)) or "csv"
    return exports.export_response(current(), job_id, fmt)
