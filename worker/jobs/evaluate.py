"""The evaluation job: score a saved model on a labelled dataset (``ml.evaluation``) and store the metrics.

Runs on the classify workers like a classification: the same lease, cancel checks between chunks and time limit
(CLASSIFY_TIME_LIMIT_S). Nothing is written but the metrics, so a retried attempt simply starts over.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from core import jobs, task_types
from core.config import Settings
from core.datasets import DatasetError, open_rows
from core.db import db
from core.evaluation import EvaluationError
from core.schema import Dataset, Job, JobType
from ml.backend import InputError
from ml.batching import RequestCancelled
from ml.config import TrainingCancelled

from ..device import device
from ..lease import Lease
from ..serving import predictor_for, quantize_choice, servable_model, submit
from ..skeleton import JobHandler, register, run_job

log = logging.getLogger(__name__)


@dataclass
class EvaluationWork:
    """One attempt at an evaluation job: its model's task type, its plan, its model's directory and quantization,
    its dataset."""

    job_id: str
    task_type: str
    plan: Any  # the task type's evaluation plan (TaskType.evaluation_plan_from_params)
    artifact_dir: str
    quantize: bool
    content: bytes
    format: str


@register
class EvaluationJob(JobHandler):
    job_type = JobType.EVALUATE.value
    kind = "evaluation"
    stop_errors = (TrainingCancelled, RequestCancelled)

    def time_limit_s(self, settings: Settings) -> float | None:
        return settings.classify_time_limit_s

    def prepare(self, job_id: str, claim: jobs.Claim) -> EvaluationWork:
        return db.transact(lambda session: _read_evaluation(session, job_id), what=f"job {job_id}: read")

    def run(self, work: EvaluationWork, lease: Lease) -> None:
        metrics = _evaluate(work.task_type, work.plan, work.artifact_dir, work.quantize, open_rows(work.content, work.format), lease)
        if not db.transact(lambda session: jobs.succeed(session, work.job_id, lease.owner, metrics=metrics),
                           what=f"job {work.job_id}: succeed"):
            log.info("job %s finished but no longer owns the job (cancelled or taken over)", work.job_id)

    def failure_message(self, exc: Exception) -> str | None:
        if isinstance(exc, EvaluationError):
            return exc.message
        if isinstance(exc, (LookupError, DatasetError, InputError)):
            return str(exc)
        return None


def run_evaluation(job_id: str) -> None:
    """Score job ``job_id``'s model on its labelled dataset in this process (``worker.skeleton.run_job``)."""
    run_job(job_id, EvaluationJob.job_type)


def _read_evaluation(session, job_id: str) -> EvaluationWork:
    """The job's task type and plan (as its params recorded them: ``task_type``, none for text classification), its
    model's directory and quantization, and its dataset's bytes and format."""
    job = session.get(Job, job_id)
    params = job.params or {}
    kind = task_types.of_params(params)
    plan = kind.evaluation_plan_from_params(params)
    model = servable_model(session, params.get("model_id"))
    dataset = session.execute(select(Dataset.content, Dataset.format)
                              .where(Dataset.id == params.get("dataset_id"), Dataset.deleted_at.is_(None))).first()
    if dataset is None:
        raise LookupError(f"dataset {params.get('dataset_id')} no longer exists")
    return EvaluationWork(job_id, kind.name, plan, model.artifact_dir, quantize_choice(params.get("quantize"), model),
                          dataset.content, dataset.format)


def _evaluate(task_type: str, plan: Any, artifact_dir: str, quantize: bool, rows: Iterable[dict],
              lease: Lease) -> dict:
    """The metrics of the model at ``artifact_dir`` (of ``task_type``) on ``rows``, predicted chunk by chunk under
    ``lease`` by its task type's evaluator (``ml.evaluation.evaluate_model``)."""
    from ml.evaluation import evaluate_model  # lazily: importing worker.tasks stays light

    started = time.monotonic()
    predictor = predictor_for(artifact_dir, quantize)
    metrics = evaluate_model(task_type, rows, plan, lambda texts, pairs: submit(predictor, texts, pairs, lease)(),
                             predictor, progress=lease.progress, should_stop=lease.should_stop)
    metrics.update(seconds=round(time.monotonic() - started, 3), device=device(), quantized=quantize)
    return metrics
