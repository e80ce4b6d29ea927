"""Synchronous prediction: a classify job on the same queue and workers, waited for by polling SQL."""
from __future__ import annotations

from core.schema import JobStatus
from core.specs import PredictRequest

from .. import context, services
from ..errors import ApiError
from . import bp
from .jobs import accepted
from .request_args import json_object


@bp.post("/api/v1/predict")
def predict():
    request = services.validate(PredictRequest, json_object())
    timeout = context.settings().predict_timeout_s if request.timeout_s is None else request.timeout_s
    job = services.start_classification(request)
    job = services.wait_for_job(job["id"], timeout)
    if job["status"] == JobStatus.SUCCEEDED.value:
        return {"job_id": job["id"], "model_id": job["model_id"], "predictions": services.all_predictions(job["id"])}
    if job["status"] == JobStatus.FAILED.value:
        raise ApiError(500, "job_failed", job["error"] or "the classification job failed", extra={"job_id": job["id"]})
    if job["status"] == JobStatus.CANCELLED.value:
        raise ApiError(409, "job_cancelled", f"job {job['id']} was cancelled", extra={"job_id": job["id"]})
    return accepted(job)  # still queued or running: poll GET /api/v1/jobs/<id>
