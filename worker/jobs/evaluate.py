"""The evaluation job: score a saved model on a labelled dataset (``ml.evaluation``) and store the metrics.

Runs on the classify workers like a classification: the same lease, cancel checks between chunks and time limit
(CLASSIFY_TIME_LIMIT_S). Nothing is written but the metrics, so a retried attempt simply starts over.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select

from core import jobs
from core.config import Settings
from core.datasets import DatasetError, open_rows
from core.db import db
from core.evaluation import EvaluationError, EvaluationPlan
from core.task_types.multiple_choice import NAME as MULTIPLE_CHOICE
from core.task_types.multiple_choice import ChoiceEvaluationPlan
from core.task_types.question_answering import NAME as QUESTION_ANSWERING
from core.task_types.question_answering import QAEvaluationPlan
from core.task_types.token_classification import NAME as TOKEN_CLASSIFICATION
from core.task_types.token_classification import TokenEvaluationPlan
from core.schema import Dataset, Job, JobType
from ml.backend import InputError
from ml.batching import RequestCancelled
from ml.config import TrainingCancelled

from .. import text_classification as tc
from ..device import device
from ..lease import Lease
from ..serving import predictor_for, quantize_choice, servable_model, submit
from ..skeleton import JobHandler, register, run_job

log = logging.getLogger(__name__)


@dataclass
class EvaluationWork:
    """One attempt at an evaluation job: its plan, its model's directory and quantization, its dataset."""

    job_id: str
    plan: EvaluationPlan
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
        metrics = _evaluate(work.plan, work.artifact_dir, work.quantize, open_rows(work.content, work.format), lease)
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


def _plan(params: dict):
    """The evaluation plan stored in a job's params: a token, question-answering or multiple-choice model's
    (``task_type`` recorded), else text classification's."""
    if params.get("task_type") == TOKEN_CLASSIFICATION:
        return TokenEvaluationPlan.from_params(params)
    if params.get("task_type") == MULTIPLE_CHOICE:
        return ChoiceEvaluationPlan.from_params(params)
    if params.get("task_type") == QUESTION_ANSWERING:
        return QAEvaluationPlan.from_params(params)
    return EvaluationPlan.from_params(params)


def _read_evaluation(session, job_id: str) -> EvaluationWork:
    """The job's plan, its model's directory and quantization, and its dataset's bytes and format."""
    job = session.get(Job, job_id)
    params = job.params or {}
    plan = _plan(params)
    model = servable_model(session, params.get("model_id"))
    dataset = session.execute(select(Dataset.content, Dataset.format)
                              .where(Dataset.id == params.get("dataset_id"), Dataset.deleted_at.is_(None))).first()
    if dataset is None:
        raise LookupError(f"dataset {params.get('dataset_id')} no longer exists")
    return EvaluationWork(job_id, plan, model.artifact_dir, quantize_choice(params.get("quantize"), model),
                          dataset.content, dataset.format)


def _evaluate(plan: EvaluationPlan | TokenEvaluationPlan | QAEvaluationPlan | ChoiceEvaluationPlan, artifact_dir: str,
              quantize: bool, rows: Iterable[dict], lease: Lease) -> dict:
    """The metrics of the model at ``artifact_dir`` on ``rows``, predicted chunk by chunk under ``lease``."""
    from ml.evaluation import evaluate_rows  # lazily: importing worker.tasks stays light

    started = time.monotonic()
    predictor = predictor_for(artifact_dir, quantize)
    if isinstance(plan, TokenEvaluationPlan):
        from ml.token_evaluation import evaluate_sentences

        # span data becomes words with the model's own tokenizer, as its training data did
        metrics = evaluate_sentences(rows, plan, lambda sentences: submit(predictor, sentences, None, lease)(),
                                     tokenizer=predictor.tokenizer, progress=lease.progress,
                                     should_stop=lease.should_stop)
        metrics.update(seconds=round(time.monotonic() - started, 3), device=device(), quantized=quantize)
        return metrics
    if isinstance(plan, QAEvaluationPlan):
        from ml.qa_evaluation import evaluate_questions

        metrics = evaluate_questions(rows, plan, lambda questions, contexts: submit(predictor, questions, contexts,
                                                                                    lease)(),
                                     progress=lease.progress, should_stop=lease.should_stop)
        metrics.update(seconds=round(time.monotonic() - started, 3), device=device(), quantized=quantize)
        return metrics
    if isinstance(plan, ChoiceEvaluationPlan):
        from ml.mc_evaluation import evaluate_choices

        metrics = evaluate_choices(rows, plan, lambda inputs: submit(predictor, inputs, None, lease)(),
                                   progress=lease.progress, should_stop=lease.should_stop)
        metrics.update(seconds=round(time.monotonic() - started, 3), device=device(), quantized=quantize)
        return metrics
    metrics = evaluate_rows(
        rows, plan, lambda texts, pairs: submit(predictor, texts, pairs, lease)(),
        thresholds=tc.decision_thresholds(predictor), progress=lease.progress,
        should_stop=lease.should_stop,
    )
    metrics.update(seconds=round(time.monotonic() - started, 3), device=device(), quantized=quantize)
    return metrics
