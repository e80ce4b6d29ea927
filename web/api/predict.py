"""Synchronous prediction: a classify job on the same queue and workers, waited for (woken by its job-done
announcement, SQL being the truth: see ``services.classify_and_wait``).

A waiting call holds one of the web process's threads, so at most ``settings.predict_max_waiters`` calls per
process wait at once; any further call answers at once (202 with the job, unless it already finished) and the
client polls ``GET /api/v1/jobs/<id>``. The other pages and API calls therefore always find a free thread.
"""
from __future__ import annotations

import threading

from flask import current_app

from core.schema import JobStatus
from core.specs import PredictRequest

from .. import context, schemas, services
from ..auth import current
from ..errors import ApiError
from . import bp
from .apidoc import LOCATION, Answer, documented
from .jobs import accepted


_WAITERS_KEY = "bertqueue.predict_waiters"
_waiters_lock = threading.Lock()


def _waiters() -> threading.BoundedSemaphore:
    """This app's slots for waiting /predict calls (``settings.predict_max_waiters``), made on first use."""
    slots = current_app.extensions.get(_WAITERS_KEY)
    if slots is None:
        with _waiters_lock:
            slots = current_app.extensions.setdefault(
                _WAITERS_KEY, threading.BoundedSemaphore(context.settings().predict_max_waiters)
            )
    return slots


@bp.post("/api/v1/predict")
@documented(
    "Classify texts and wait for the result (a classify job on the same queue)",
    body=PredictRequest,
    creates_job=True,
    responses={
        200: Answer("predictions", schemas.PredictResponse),
        202: Answer(
            "not finished within timeout_s, or PREDICT_MAX_WAITERS calls already wait in this web process (answered "
            "at once): poll the job",
            schemas.Job,
            headers=LOCATION,
        ),
        404: "unknown model (by id or by name)",
        409: "the model was deleted (model_deleted), or the job was cancelled (job_cancelled)",
        500: "the job failed (job_failed); error.message is the job's error, error.job_id the job",
    },
)
def predict(body: PredictRequest):
    timeout = context.settings().predict_timeout_s if body.timeout_s is None else body.timeout_s
    slots = _waiters()
    waiting = slots.acquire(blocking=False)  # never blocks: a full house answers 202 instead of queueing here
    try:
        created, status, predictions = services.classify_and_wait(current(), body, timeout if waiting else 0.0)
    finally:
        if waiting:
            slots.release()
    if predictions is not None:
        return {"job_id": created["id"], "model_id": created["model_id"], "predictions": predictions}
    job = services.get_job(current(), created["id"])
    if job["status"] == JobStatus.FAILED.value:
        raise ApiError(500, "job_failed", job["error"] or "the classification job failed", extra={"job_id": job["id"]})
    if job["status"] == JobStatus.CANCELLED.value:
        raise ApiError(409, "job_cancelled", f"job {job['id']} was cancelled", extra={"job_id": job["id"]})
    return accepted(job)  # still queued or running: poll GET /api/v1/jobs/<id>
