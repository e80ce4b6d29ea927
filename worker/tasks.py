"""Celery tasks (and the worker's remote-control commands). Thin by design: they take a job id and call the job
skeleton's entry point (``worker.skeleton.run_job``) with their job type.

Delivery guarantees come from SQL: the skeleton claims the job with a lease and a bounded attempt counter, so a
duplicate or redelivered message is harmless: it is dropped (acked) unless the job is claimable, and never
retried here. A job whose message is lost, or whose worker died, is re-sent by the reconciler (worker.reconciler).
"""
from __future__ import annotations

import logging

from celery import Task, shared_task
from celery.exceptions import TimeLimitExceeded
from celery.worker.control import control_command

from core import artifacts, runtime
from core.queue import CLASSIFY_TASK, DROP_MODEL_COMMAND, EVALUATE_TASK, RECONCILE_TASK, TRAIN_TASK
from core.schema import JobType

from . import jobs  # noqa: F401  (registers every job type's handler)
from .reconciler import reconcile_once
from .skeleton import fail_hard_time_limit, run_job

log = logging.getLogger(__name__)

_TASK_OPTIONS = {"acks_late": True, "reject_on_worker_lost": True}


class _TrainTask(Task):
    """The training task; its hard time limit (core.queue.celery_config) fails the job it interrupted."""

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        # Celery calls this in the worker's main process after killing a child at the hard time limit; the job's
        # own deadline (worker.lease.Lease) did not stop it, so record why the job ends here.
        if isinstance(exc, TimeLimitExceeded) and args:
            try:
                fail_hard_time_limit(args[0], JobType.TRAIN.value, runtime.settings().train_time_limit_s)
            except Exception:  # noqa: BLE001 - the reconciler still recovers the job from its stale lease
                log.exception("job %s: could not record the hard time limit", args[0])


@shared_task(name=TRAIN_TASK, base=_TrainTask, **_TASK_OPTIONS)
def train(job_id: str) -> None:
    """Train the model described by job ``job_id``."""
    run_job(job_id, JobType.TRAIN.value)


@shared_task(name=CLASSIFY_TASK, **_TASK_OPTIONS)
def classify(job_id: str) -> None:
    """Classify the texts of job ``job_id`` and store the predictions."""
    run_job(job_id, JobType.CLASSIFY.value)


@shared_task(name=EVALUATE_TASK, **_TASK_OPTIONS)
def evaluate(job_id: str) -> None:
    """Score the model of job ``job_id`` on its labelled dataset and store the metrics."""
    run_job(job_id, JobType.EVALUATE.value)


@shared_task(name=RECONCILE_TASK, bind=True)
def reconcile(self) -> int:
    """One reconciler pass on demand (the periodic ones run in ``python -m worker.reconciler``)."""
    return reconcile_once(self.app, runtime.settings())


@control_command(name=DROP_MODEL_COMMAND, args=[("model_dir", str)], signature="<model_dir>")
def drop_model(state, model_dir: str) -> dict:
    """Remote control (broadcast by the web when a model is deleted): forget the model saved at ``model_dir`` (a
    model row's ``artifact_dir``) in this process's predictor cache, and this host's cached files of a SQL-stored
    model. Runs in the worker's main process, where the thread-pool classification worker keeps its models; a
    prefork child evicts a vanished model itself on its next lookup."""
    from ml.inference import drop_predictor

    settings = runtime.settings()
    dropped = drop_predictor(artifacts.cached_path(settings, model_dir))
    # the SQL store's copy on this host goes too (every host's worker gets the broadcast)
    removed = artifacts.forget_local(settings, model_dir)
    log.info("dropped %d cached predictor(s) of deleted model %s%s", dropped, model_dir,
             " and its cached files" if removed else "")
    return {"ok": f"dropped {dropped}"}
