"""Glue between SQL and the ML code: claim a job, run it with the DB session closed, store results idempotently.

Each ``run_*`` function returns ``None`` when the message is dealt with, or a number of seconds after which the
message should be retried (another worker holds a fresh lease on the job).
"""
from __future__ import annotations

import logging
import os
import shutil
import socket
import time
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from core import jobs, runtime
from core.datasets import DatasetError, parse_csv
from core.db import db
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
    """Heartbeats for one claimed job; tells the ML loop when the job was cancelled or taken away."""

    def __init__(self, job_id: str, every_s: float = HEARTBEAT_EVERY_S) -> None:
        self.job_id, self.owner, self.every_s = job_id, worker_id(), every_s
        self._last = 0.0
        self.lost = False

    def beat(self, progress: float | None = None, *, force: bool = False) -> bool:
        """Write progress + heartbeat at most every ``every_s`` seconds (or now, with ``force``)."""
        now = time.monotonic()
        if self.lost or (not force and now - self._last < self.every_s):
            return not self.lost
        self._last = now
        try:
            with db.session() as session:
                self.lost = not jobs.heartbeat(session, self.job_id, self.owner, progress)
        except SQLAlchemyError as exc:
            # A database hiccup must not kill hours of training; the next beat tries again, and a lease that
            # really lapses is settled by the claim logic.
            log.warning("job %s: heartbeat failed (%s); continuing", self.job_id, exc)
        return not self.lost

    def progress(self, fraction: float, _info: dict | None = None) -> None:
        self.beat(fraction)

    def should_stop(self) -> bool:
        return not self.beat()


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
            content, dataset_name = dataset.content, dataset.name
        rows = parse_csv(content).rows
        result = _train(job_id, request, rows, scratch, store)
        _publish_model(job_id, request, dataset_name, result, scratch, store)
    except Exception as exc:  # noqa: BLE001 - every failure must end up on the job row
        from .training import TrainingCancelled, TrainingDataError

        if isinstance(exc, TrainingCancelled):
            log.info("job %s cancelled", job_id)
        elif isinstance(exc, (TrainingDataError, DatasetError)):
            _fail(job_id, str(exc))
        else:
            log.exception("job %s crashed", job_id)
            _fail(job_id, f"training failed: {type(exc).__name__}: {exc}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return None


def _train(job_id: str, request: TrainRequest, rows: list[dict], scratch: Path, store: Path):
    from .training import TrainConfig, train_classifier

    config = TrainConfig(
        text_column=request.text_column,
        label_columns=list(request.label_columns),
        family=request.family,
        encoder=request.encoder,
        epochs=request.epochs,
        batch_size=request.batch_size,
        learning_rate=request.learning_rate,
        encoder_lr=request.encoder_lr,
        head_lr=request.head_lr,
        max_length=request.max_length,
        validation_split=request.validation_split,
        seed=request.seed,
        warmup_ratio=request.warmup_ratio,
        weight_decay=request.weight_decay,
        dropout=request.dropout,
        class_weights=request.class_weights,
        freeze_encoder=request.freeze_encoder,
        lstm_hidden=request.lstm_hidden,
        bidirectional=request.bidirectional,
        task_weights=request.task_weights,
    )
    lease = Lease(job_id)
    lease.beat(0.0, force=True)
    return train_classifier(
        rows,
        config,
        scratch,
        device=_device(),
        encoder_cache_dir=store / "encoders",
        progress=lease.progress,
        should_stop=lease.should_stop,
    )


def _publish_model(job_id: str, request: TrainRequest, dataset_name: str, result, scratch: Path, store: Path) -> None:
    """Move the artifacts into the store and record model + job success in one transaction."""
    final_dir = store / "models" / job_id
    shutil.rmtree(final_dir, ignore_errors=True)
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
        request = ClassifyRequest.model_validate(job.params)
        model = session.get(TrainedModel, request.model_id)
        if model is None:
            raise LookupError(f"model {request.model_id} no longer exists")
        artifact_dir = model.artifact_dir
        done = stored_indices(session, job_id)
    started = time.monotonic()
    predictor = get_predictor(artifact_dir, _device())
    lease = Lease(job_id)
    texts = request.texts
    todo = [i for i in range(len(texts)) if i not in done]
    for start in range(0, len(todo), CLASSIFY_CHUNK):
        if lease.should_stop():
            log.info("job %s cancelled after %d texts", job_id, start)
            return
        chunk = todo[start : start + CLASSIFY_CHUNK]
        results = predictor.predict([texts[i] for i in chunk])
        items = [_prediction_row(i, texts[i], r) for i, r in zip(chunk, results)]
        with db.session() as session:
            insert_predictions(session, job_id, items)
            jobs.heartbeat(session, job_id, worker_id(), (len(done) + start + len(chunk)) / len(texts))
    seconds = time.monotonic() - started
    with db.session() as session:
        labels = _label_distribution(session, job_id)
        metrics = {
            "texts": len(texts),
            "seconds": round(seconds, 3),
            "texts_per_second": round(len(todo) / seconds, 2) if seconds > 0 else None,
            "label_counts": labels,
            "device": _device(),
        }
        jobs.succeed(session, job_id, worker_id(), metrics=metrics)


def _prediction_row(index: int, text: str, result: dict) -> dict:
    if "tasks" in result:
        first = next(iter(result["tasks"].values()))
        return {"index": index, "text": text, "label": first["label"], "score": first["score"],
                "scores": first["scores"], "tasks": result["tasks"]}
    return {"index": index, "text": text, "label": result["label"], "score": result["score"], "scores": result["scores"]}


def _label_distribution(session, job_id: str) -> dict[str, int]:
    from core.schema import Prediction

    rows = session.execute(
        select(Prediction.label, func.count()).where(Prediction.job_id == job_id).group_by(Prediction.label)
    ).all()
    return {label: count for label, count in sorted(rows)}
