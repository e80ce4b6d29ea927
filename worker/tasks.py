"""Celery tasks. Thin by design: they take a job id, call ``worker.runner``, and translate its answer.

Delivery guarantees come from SQL: the runner claims the job with a lease and a bounded attempt counter, so
duplicate or redelivered messages are harmless.
"""
from __future__ import annotations

from celery import shared_task

from core import runtime
from core.db import db
from core.jobs import lost_jobs
from core.queue import CLASSIFY_TASK, RECONCILE_TASK, TRAIN_TASK, enqueue_job

from . import runner

# Retries here only wait out another worker's fresh lease; real executions are bounded by JOB_MAX_ATTEMPTS.
_LEASE_WAIT_RETRIES = 1000
_TASK_OPTIONS = {"bind": True, "acks_late": True, "reject_on_worker_lost": True, "max_retries": _LEASE_WAIT_RETRIES}


@shared_task(name=TRAIN_TASK, **_TASK_OPTIONS)
def train(self, job_id: str) -> None:
    """Train the model described by job ``job_id``."""
    retry_in = runner.run_training(job_id)
    if retry_in is not None:
        raise self.retry(countdown=retry_in)


@shared_task(name=CLASSIFY_TASK, **_TASK_OPTIONS)
def classify(self, job_id: str) -> None:
    """Classify the texts of job ``job_id`` and store the predictions."""
    retry_in = runner.run_classification(job_id)
    if retry_in is not None:
        raise self.retry(countdown=retry_in)


@shared_task(name=RECONCILE_TASK, bind=True)
def reconcile(self) -> int:
    """Re-send messages for jobs that SQL says are waiting but whose message Redis may have lost."""
    settings = runtime.settings()
    with db.session() as session:
        lost = lost_jobs(session, requeue_after_s=settings.requeue_after_s, lease_seconds=settings.lease_seconds)
    for job_id, job_type in lost:
        enqueue_job(self.app, job_id, job_type)
    return len(lost)
