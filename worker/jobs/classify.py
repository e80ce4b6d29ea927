"""The classification job: every input of the job through the model's shared batching engine, stored chunk by chunk
(idempotent inserts), resuming after the rows an earlier attempt stored.

Runs in one of the worker's many job threads; the texts go through the model's shared batching engine, so
concurrent jobs are batched together.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

from sqlalchemy import select

from core import jobs, task_types
from core.config import Settings
from core.datasets import DatasetError
from core.db import db
from core.results import insert_predictions, stored_indices
from core.schema import Dataset, JobType
from core.specs import ClassifyRequest
from core.task_types import TaskType
from ml.backend import InputError
from ml.batching import RequestCancelled

from .. import text_classification as tc
from ..device import device
from ..lease import Lease
from ..memory import release_free_memory
from ..serving import chunks, prediction_row, predictor_for, quantize_choice, servable_model, submit
from ..skeleton import JobHandler, register, run_job

log = logging.getLogger(__name__)

# Texts per commit: bounds lost work on a crash and memory per job, paces progress updates, and is what the engine
# sorts by length at once (ml.batching.POOL_ROWS).
CLASSIFY_CHUNK = 1024
# Free heap pages go back to the OS every this many chunks of a job: large jobs stay flat, and jobs of a few
# thousand texts do not pay the re-faulting of trimmed pages (worker/memory.py).
TRIM_EVERY_CHUNKS = 4


@register
class ClassificationJob(JobHandler):
    job_type = JobType.CLASSIFY.value
    kind = "classification"
    stop_errors = (RequestCancelled,)

    def time_limit_s(self, settings: Settings) -> float | None:
        return settings.classify_time_limit_s

    def prepare(self, job_id: str, claim: jobs.Claim) -> "ClassifyWork":
        # the claimed row is re-attached (no SELECT) so its deferred inputs load in the read's session
        return db.transact(lambda session: ClassifyWork.read(session, session.merge(claim.job, load=False),
                                                             resumed=claim.attempts > 1),
                           what=f"job {job_id}: read")

    def run(self, work: "ClassifyWork", lease: Lease) -> None:
        work.run(lease)

    def failure_message(self, exc: Exception) -> str | None:
        return str(exc) if isinstance(exc, (LookupError, DatasetError, InputError)) else None


def run_classification(job_id: str) -> None:
    """Classify every input of job ``job_id`` in this process (``worker.skeleton.run_job``); resumes after the
    stored predictions on a retry."""
    run_job(job_id, ClassificationJob.job_type)


class ClassifyWork:
    """One attempt at a classify job: its inputs (texts, pairs, or dataset columns), model and what is already
    stored."""

    def __init__(self, job_id: str, request: ClassifyRequest, artifact_dir: str, quantize: bool,
                 done: set[int], dataset: tuple[bytes, str] | None, total: int, task_type: TaskType,
                 model_params: dict | None = None) -> None:
        self.job_id, self.request, self.artifact_dir, self.quantize = job_id, request, artifact_dir, quantize
        self.task_type = task_type  # the model's: it shapes the stored predictions
        self.model_params = model_params or {}  # how the model was trained: the columns a task type reads
        # how the backend reads results: a token model's aggregation_strategy, a QA model's top_k and
        # max_answer_length (none given: the backend's defaults)
        self.result_options = request.result_options()
        self.done, self.dataset, self.total = done, dataset, total
        self.labels = tc.LabelCounts()  # of the rows this attempt stored
        self.classified = self.chunks_stored = 0  # rows / chunks this attempt stored
        self.lease: Lease | None = None  # the attempt's, from run()

    @classmethod
    def read(cls, session, job, *, resumed: bool, models: dict | None = None) -> "ClassifyWork":
        """Everything the attempt needs, read in the claim's session (closed before inference starts). ``job``: the
        row (or its ``id``, ``params`` and ``inputs``); ``models``: model rows already read, by id (a batch of jobs
        reads each model once), completed here."""
        job_id = job.id
        request = ClassifyRequest.from_job_params(job.params, None if job.params.get("dataset_id") else job.inputs)
        models = {} if models is None else models
        model = models.get(request.model_id)
        if model is None:
            model = models[request.model_id] = servable_model(session, request.model_id)
        dataset = None
        if request.from_dataset:
            row = session.execute(
                select(Dataset.content, Dataset.format, Dataset.row_count)
                .where(Dataset.id == request.dataset_id, Dataset.deleted_at.is_(None))
            ).first()
            if row is None:
                raise LookupError(f"dataset {request.dataset_id} no longer exists")
            dataset, total = (row.content, row.format), row.row_count
        else:
            total = tc.request_size(request)
        done = stored_indices(session, job_id) if resumed else set()
        return cls(job_id, request, model.artifact_dir, quantize_choice(request.quantize, model), done, dataset,
                   total, task_types.of_params(model.params), model.params)

    def run(self, lease: Lease) -> None:
        """Classify what is not stored yet, chunk by chunk, under ``lease`` (open: a cold model load is covered)."""
        self.lease = lease
        started = time.monotonic()
        todo = (item for item in self.inputs() if item[0] not in self.done)
        predictor = predictor_for(self.artifact_dir, self.quantize)
        # Two chunks in flight: the engine classifies chunk k+1 while this thread writes chunk k to SQL.
        pending = None
        for chunk in chunks(todo, CLASSIFY_CHUNK):
            try:
                wait = submit(predictor, *tc.chunk_texts(self.request, chunk), lease, **self.result_options)
            except InputError as exc:
                raise self._named(exc, chunk) from None
            if pending is not None:
                self._store(*pending, lease)
            pending = (chunk, wait)
        if pending is None:  # nothing left to classify (all stored by an earlier attempt, or no text)
            db.transact(lambda session: self._succeed(session, started), what=f"job {self.job_id}: succeed")
        else:
            self._store(*pending, lease, started=started)

    def inputs(self) -> Iterator[tc.Input]:
        """Every input of the job: the task type's own (multiple choice), else texts; a token model reads a dataset
        cell holding a JSON array of words as a pre-tokenized sentence."""
        inputs = self.task_type.classify_inputs(self.request, self.dataset, self.model_params)
        if inputs is None:
            inputs = tc.job_inputs(self.request, self.dataset, words_in_cells=self.task_type.reads_words_in_cells)
        return iter(inputs)

    def rows(self, chunk: list[tc.Input], results: list[dict]) -> list[dict]:
        """The prediction rows of a chunk's results (counted for the job's metrics)."""
        rows = [prediction_row(index, text, result, self.task_type, row_id, pair)
                for (index, text, pair, row_id), result in zip(chunk, results)]
        self.classified += len(rows)
        self.labels.add(rows)
        return rows

    def _named(self, exc: InputError, chunk: list[tc.Input]) -> InputError:
        """A backend's refusal of one input of ``chunk`` naming it by its number in the job (the backend numbers a
        chunk's inputs from 1): the dataset row it was read from, or its place among the request's inputs."""
        if exc.position is None or not 0 <= exc.position < len(chunk):
            return exc
        number = chunk[exc.position][0] + 1
        return exc.about(f"row {number}" if self.request.from_dataset else f"{exc.noun} {number}")

    def _store(self, chunk: list[tc.Input], wait: Callable[[], list[dict]], lease: Lease, *,
               started: float | None = None) -> None:
        """Wait for a chunk's results and insert them; the last chunk (``started`` given) commits the success."""
        results = wait()
        if lease.should_stop():  # cancelled meanwhile: write nothing more
            raise RequestCancelled("the job was cancelled")
        rows = self.rows(chunk, results)
        fraction = min(1.0, (chunk[-1][0] + 1) / max(1, self.total))
        lease.progress(fraction)
        db.transact(lambda session: self._write(session, rows, fraction, started), what=f"job {self.job_id}: store")
        self.chunks_stored += 1
        if self.chunks_stored % TRIM_EVERY_CHUNKS == 0:
            release_free_memory()  # a large job must not grow the worker's RSS chunk by chunk (worker/memory.py)

    def _write(self, session, rows: list[dict], fraction: float, started: float | None) -> None:
        """One chunk's rows with the progress (or, for the last chunk, the success), in one transaction.

        The lease is checked *before* the rows are written (the row stays locked until the commit on PostgreSQL):
        a job cancelled or taken over meanwhile gets no more rows. The success is conditional too, and rolls the
        last rows back with it when the job is no longer ours.
        """
        if started is None:
            if not jobs.heartbeat(session, self.job_id, self.lease.owner, fraction, commit=False):
                session.rollback()
                self.lease.lost = True
                raise RequestCancelled("the job was cancelled")
            insert_predictions(session, self.job_id, rows)
        else:
            insert_predictions(session, self.job_id, rows)
            self._succeed(session, started)

    def _succeed(self, session, started: float) -> None:
        metrics = self.metrics(session, time.monotonic() - started)
        if not jobs.succeed(session, self.job_id, self.lease.owner, metrics=metrics):
            log.info("job %s finished but no longer owns the job (cancelled or taken over)", self.job_id)

    def metrics(self, session, seconds: float) -> dict:
        """The finished job's metrics (``session``: to count the labels of earlier attempts' rows)."""
        metrics = {
            "texts": self.total,
            "classified": len(self.done) + self.classified,  # this attempt's and the earlier ones'
            "seconds": round(seconds, 3),
            "texts_per_second": round(self.classified / seconds, 2) if seconds > 0 else None,  # this attempt
            "device": device(),
            "quantized": self.quantize,
        }
        if self.dataset is not None:
            metrics["skipped_empty"] = self.total - metrics["classified"]
        if self.done:  # resumed: earlier attempts stored part of the rows, so count them all in SQL
            metrics["label_counts"] = tc.label_distribution(session, self.job_id)
        else:
            metrics["label_counts"] = self.labels.metrics()
        return metrics
