"""Glue between SQL and the ML code: claim a job, run it with the DB session closed, store results idempotently.

Each ``run_*`` function returns ``None`` when the message is dealt with, or a number of seconds after which the
message should be retried (another worker holds a fresh lease on the job).
"""
from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
from collections import Counter
from dataclasses import fields
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from core import jobs, runtime
from core.datasets import DatasetError, read_rows
from core.db import db
from core.encoder_policy import EncoderNotAllowed, check_encoder
from core.results import insert_predictions, stored_indices
from core.schema import Dataset, Job, TrainedModel
from core.specs import ClassifyRequest, TrainRequest

log = logging.getLogger(__name__)

HEARTBEAT_EVERY_S = 2.0
CLASSIFY_CHUNK = 512  # texts per commit: bounds lost work on a crash and paces progress updates


def worker_id() -> str:
    """This process's identity in job leases (computed per call: the pid changes after a fork)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Lease:
    """Keeps a claimed job's lease fresh from a background thread for as long as the work runs.

    The thread beats every few seconds whatever the ML code is doing (loading or converting an encoder, one huge
    step, building a predictor), so a slow phase never looks like a dead worker. The ML loops only report
    ``progress()`` (written with the next beat) and poll ``should_stop()`` (the job was cancelled, or another
    worker took it over).
    """

    def __init__(self, job_id: str, lease_seconds: float, every_s: float = HEARTBEAT_EVERY_S) -> None:
        self.job_id, self.owner = job_id, worker_id()
        self.every_s = max(0.2, min(every_s, lease_seconds / 4))
        self.lost = False
        self._progress: float | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job_id[:8]}", daemon=True)

    def __enter__(self) -> "Lease":
        self._beat()
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stopped.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stopped.wait(self.every_s):
            self._beat()

    def _beat(self) -> None:
        try:
            with db.session() as session:
                owned = jobs.heartbeat(session, self.job_id, self.owner, self._progress)
        except SQLAlchemyError as exc:
            # A database hiccup must not kill hours of work; the next beat tries again.
            log.warning("job %s: heartbeat failed (%s); continuing", self.job_id, exc)
            return
        if not owned:
            self.lost = True
            self._stopped.set()

    def progress(self, fraction: float, _info: dict | None = None) -> None:
        self._progress = fraction

    def should_stop(self) -> bool:
        return self.lost


def _claim(job_id: str) -> tuple[jobs.Claim, float | None]:
    settings = runtime.settings()
    with db.session() as session:
        claim = jobs.claim(
            session,
            job_id,
            worker_id(),
            lease_seconds=settings.lease_seconds,
            max_attempts=settings.job_max_attempts,
        )
    log.info("job %s: claim %s (attempt %s)", job_id, claim.outcome.value, claim.attempts)
    if claim.outcome is jobs.ClaimOutcome.BUSY:
        return claim, claim.retry_in
    return claim, None


def _fail(job_id: str, message: str) -> None:
    log.warning("job %s failed: %s", job_id, message)
    with db.session() as session:
        jobs.fail(session, job_id, message, worker_id=worker_id())


def _device() -> str:
    from .device import resolve_device

    return resolve_device(runtime.settings().device)


# ---------------------------------------------------------------- training


def run_training(job_id: str) -> float | None:
    """Run training job ``job_id`` end to end."""
    claim, retry_in = _claim(job_id)
    if claim.outcome is not jobs.ClaimOutcome.CLAIMED:
        return retry_in
    settings = runtime.settings()
    store = Path(settings.model_store)
    scratch = store / "tmp" / f"{job_id}-{claim.attempts}"
    try:
        with db.session() as session:  # read everything, then close the session before long work
            job = session.get(Job, job_id)
            request = TrainRequest.model_validate(job.params)
            dataset = session.get(Dataset, job.dataset_id) if job.dataset_id is not None else None
            if dataset is None:
                raise DatasetError("the job's dataset no longer exists")
            content, fmt, dataset_name = dataset.content, dataset.format, dataset.name
        check_encoder(request.encoder, settings)
        rows = read_rows(content, fmt).rows
        del content  # training keeps only the rows: the raw bytes need not stay alive for the whole run
        with Lease(job_id, settings.lease_seconds) as lease:
            result = _train(request, rows, scratch, store, lease)
        # one directory per attempt: a worker that lost the job can never touch the winner's files
        _publish_model(job_id, request, dataset_name, result, scratch, store / "models" / f"{job_id}-{claim.attempts}")
    except Exception as exc:  # noqa: BLE001 - every failure must end up on the job row
        from .training import TrainingCancelled, TrainingDataError

        if isinstance(exc, TrainingCancelled):
            log.info("job %s stopped: cancelled, or taken over by another worker", job_id)
        elif isinstance(exc, (TrainingDataError, DatasetError, EncoderNotAllowed)):
            _fail(job_id, str(exc))
        else:
            log.exception("job %s crashed", job_id)
            _fail(job_id, f"training failed: {type(exc).__name__}: {exc}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return None


def train_config(request: TrainRequest):
    """The training loop's config from a validated request (every field the loop knows, by name)."""
    from .training import TrainConfig

    values = request.model_dump()
    return TrainConfig(**{f.name: values[f.name] for f in fields(TrainConfig) if f.name in values})


def _train(request: TrainRequest, rows: list[dict], scratch: Path, store: Path, lease: Lease):
    from .training import train_classifier

    return train_classifier(
        rows,
        train_config(request),
        scratch,
        device=_device(),
        encoder_cache_dir=store / "encoders",
        progress=lease.progress,
        should_stop=lease.should_stop,
    )


def _publish_model(job_id: str, request: TrainRequest, dataset_name: str, result, scratch: Path, final_dir: Path) -> None:
    """Move the artifacts into ``final_dir`` and record model + job success in one transaction."""
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    os.replace(scratch, final_dir)
    try:
        _record_model(job_id, request, dataset_name, result, final_dir)
    except BaseException:
        shutil.rmtree(final_dir, ignore_errors=True)  # no model row, so no files either
        raise


def _record_model(job_id: str, request: TrainRequest, dataset_name: str, result, final_dir: Path) -> None:
    name = request.name or f"{request.family}-{dataset_name}"[:200]
    tasks = {task: list(labels) for task, labels in result.tasks.items()}
    encoder = request.encoder or "default (all-MiniLM-L6-v2)"
    for _ in range(3):  # the (name, version) unique constraint settles version races
        with db.session() as session:
            version = (session.scalar(select(func.max(TrainedModel.version)).where(TrainedModel.name == name)) or 0) + 1
            model = TrainedModel(
                name=name,
                version=version,
                family=request.family,
                encoder=encoder,
                labels=next(iter(tasks.values())),
                tasks=tasks,
                metrics=result.metrics,
                params=request.model_dump(),
                artifact_dir=str(final_dir),
                training_job_id=job_id,
            )
            session.add(model)
            try:
                session.flush()
            except IntegrityError:
                session.rollback()
                continue
            if not jobs.succeed(session, job_id, worker_id(), metrics=result.metrics, model_id=model.id):
                # cancelled or reclaimed meanwhile: record nothing
                shutil.rmtree(final_dir, ignore_errors=True)
                log.info("job %s finished training but no longer owns the job; model discarded", job_id)
            return
    raise RuntimeError(f"could not allocate a version for model {name!r}")


# ---------------------------------------------------------------- classification


def run_classification(job_id: str) -> float | None:
    """Classify every text of job ``job_id``; resumes after the last stored prediction on a retry."""
    claim, retry_in = _claim(job_id)
    if claim.outcome is not jobs.ClaimOutcome.CLAIMED:
        return retry_in
    try:
        _classify(job_id)
    except Exception as exc:  # noqa: BLE001
        log.exception("job %s crashed", job_id)
        _fail(job_id, f"classification failed: {type(exc).__name__}: {exc}")
    return None


def _classify(job_id: str) -> None:
    from .inference import get_predictor

    with db.session() as session:
        job = session.get(Job, job_id)
        request = ClassifyRequest.from_job_params(job.params, job.inputs)
        model = session.get(TrainedModel, request.model_id)
        if model is None:
            raise LookupError(f"model {request.model_id} no longer exists")
        artifact_dir = model.artifact_dir
        done = stored_indices(session, job_id)
    started = time.monotonic()
    texts = request.texts
    todo = [i for i in range(len(texts)) if i not in done]
    with Lease(job_id, runtime.settings().lease_seconds) as lease:
        predictor = get_predictor(artifact_dir, _device())
        for start in range(0, len(todo), CLASSIFY_CHUNK):
            if lease.should_stop():
                log.info("job %s stopped after %d texts: cancelled, or taken over", job_id, start)
                return
            chunk = todo[start : start + CLASSIFY_CHUNK]
            results = predictor.predict([texts[i] for i in chunk])
            items = [_prediction_row(i, texts[i], r) for i, r in zip(chunk, results)]
            fraction = (len(done) + start + len(chunk)) / len(texts)
            lease.progress(fraction)
            with db.session() as session:  # the rows and the progress commit together
                insert_predictions(session, job_id, items)
                jobs.heartbeat(session, job_id, worker_id(), fraction)
    seconds = time.monotonic() - started
    with db.session() as session:
        metrics = {
            "texts": len(texts),
            "seconds": round(seconds, 3),
            "texts_per_second": round(len(todo) / seconds, 2) if seconds > 0 else None,
            "label_counts": _label_distribution(session, job_id),
            "device": _device(),
        }
        jobs.succeed(session, job_id, worker_id(), metrics=metrics)


def _prediction_row(index: int, text: str, result: dict) -> dict:
    if "tasks" in result:
        first = next(iter(result["tasks"].values()))
        return {"index": index, "text": text, "label": first["label"], "score": first["score"],
                "scores": first["scores"], "tasks": result["tasks"]}
    return {"index": index, "text": text, "label": result["label"], "score": result["score"], "scores": result["scores"]}


def _label_distribution(session, job_id: str) -> dict:
    """Label counts of a job's predictions: ``{label: n}``, or ``{task: {label: n}}`` for a multitask model."""
    from core.schema import Prediction

    per_task: dict[str, Counter] = {}
    for tasks in session.scalars(select(Prediction.tasks).where(Prediction.job_id == job_id, Prediction.tasks.is_not(None))):
        for task, result in (tasks or {}).items():
            per_task.setdefault(task, Counter())[result["label"]] += 1
    if per_task:
        return {task: dict(sorted(counts.items())) for task, counts in per_task.items()}
    rows = session.execute(
        select(Prediction.label, func.count()).where(Prediction.job_id == job_id).group_by(Prediction.label)
    ).all()
    return {label: count for label, count in sorted(rows)}
