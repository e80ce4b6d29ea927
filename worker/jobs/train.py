"""The training job: train a model on the job's dataset, then publish its files and its row exactly once."""
from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from core import artifacts, jobs, models_registry, quotas, runtime
from core.accounts import Principal
from core.config import Settings
from core.datasets import DatasetError, read_rows
from core.db import db
from core.encoder_policy import EncoderNotAllowed, check_encoder
from core.ownership import visible
from core.schema import Dataset, Job, JobType, TrainedModel, User
from core.specs import TrainRequest
from ml.config import TrainingCancelled, TrainingDataError

from .. import text_classification
from ..device import device
from ..lease import Lease, worker_id
from ..skeleton import JobHandler, register, run_job

log = logging.getLogger(__name__)

STALE_SCRATCH_GRACE_S = 3600.0  # beyond TRAIN_TIME_LIMIT_S: a scratch folder this old belongs to no live training


@dataclass
class TrainingWork:
    """One attempt at a training job: its request, rows and where its files go."""

    job_id: str
    request: TrainRequest
    owner_id: int | None
    dataset_name: str
    rows: list[dict]
    validation_rows: list[dict] | None
    store: Path  # this host's model folder (settings.local_model_dir): scratch space and the hub encoders' cache
    scratch: Path  # this attempt's files while it trains
    key: str  # what they are published as (core.artifacts): one per attempt, so a worker that lost the job can
    # never touch the winner's files


@register
class TrainingJob(JobHandler):
    job_type = JobType.TRAIN.value
    kind = "training"
    watch_oom = True  # the job whose memory grows with its parameters
    announces_done = False  # nobody waits on a training in a request
    stop_errors = (TrainingCancelled,)

    def time_limit_s(self, settings: Settings) -> float | None:
        return settings.train_time_limit_s

    def prepare(self, job_id: str, claim: jobs.Claim) -> TrainingWork:
        """Remove earlier attempts' files, read the datasets (then close the session before long work), check the
        encoder."""
        attempt = claim.attempts
        settings = runtime.settings()
        store = settings.local_model_dir
        _remove_earlier_attempts(settings, job_id, attempt)
        request, owner_id, content, fmt, dataset_name, validation = db.transact(
            lambda session: _read_training(session, job_id), what=f"job {job_id}: read")
        check_encoder(request.encoder, settings, on_disk=True)
        rows = read_rows(content, fmt).rows
        validation_rows = read_rows(*validation).rows if validation is not None else None
        # training keeps only the rows: the raw bytes need not stay alive for the whole run
        return TrainingWork(job_id, request, owner_id, dataset_name, rows, validation_rows, store,
                            scratch=store / "tmp" / f"{job_id}-{attempt}", key=f"{job_id}-{attempt}")

    def run(self, work: TrainingWork, lease: Lease) -> None:
        try:
            result = _train(work.request, work.rows, work.validation_rows, work.scratch, work.store, lease)
            _publish_model(work.job_id, work.request, work.owner_id, work.dataset_name, result, work.scratch,
                           work.key, lease)
        finally:
            shutil.rmtree(work.scratch, ignore_errors=True)
            _release_gpu_memory()

    def failure_message(self, exc: Exception) -> str | None:
        from ml.device import is_out_of_memory

        if isinstance(exc, (TrainingDataError, DatasetError, EncoderNotAllowed)):
            return str(exc)
        if is_out_of_memory(exc):  # the GPU's memory (the kernel's OOM killer is worker.oom's)
            return GPU_OOM_MESSAGE
        return None


# the training loop halves its padded tokens per pass after each GPU out-of-memory error (ml.loop.TokenBudget), down
# to one row per pass: what gets here is a row too long to fit alone, or memory the passes never asked for (the
# model itself, the optimizer's state)
GPU_OOM_MESSAGE = ("training ran out of GPU memory (its forward passes are split down to one row per pass first): "
                   "use a smaller max_length or a smaller encoder, or free the GPU (another process may hold its "
                   "memory); MAX_TRAIN_BATCH_TOKENS sets the passes' starting size")


def _release_gpu_memory() -> None:
    """Hand the CUDA caching allocator's blocks back once a training ends (it keeps the training's peak reserved
    otherwise, and the classification worker on the same GPU needs it between trainings). When the training
    failed, the error on its way out still holds the training's frames (the model, the optimizer's state, the
    activations): their locals are cleared first, so that the memory is free (the traceback still prints)."""
    import sys

    from ml.device import release_cached_memory, without_frame_locals

    failing = sys.exc_info()[1]
    if failing is not None:
        without_frame_locals(failing)
    release_cached_memory()


def run_training(job_id: str) -> None:
    """Run training job ``job_id`` in this process (``worker.skeleton.run_job``)."""
    run_job(job_id, TrainingJob.job_type)


def _remove_earlier_attempts(settings: Settings, job_id: str, attempt: int) -> None:
    """Delete the files of this job's earlier attempts: a worker killed while saving (or between publishing the files
    and committing the model row) leaves them behind, and this claim proves that attempt is over. (A scratch folder
    on another host stays there until that host's next training finds it older than any training may run.)"""
    keep = f"{job_id}-{attempt}"
    for path in (settings.local_model_dir / "tmp").glob(f"{job_id}-*"):
        if path.name != keep:
            log.info("job %s: removing %s, left by an earlier attempt", job_id, path)
            shutil.rmtree(path, ignore_errors=True)
    _remove_stale_scratch(settings)
    artifacts.discard_attempts(settings, job_id, keep)


def _remove_stale_scratch(settings: Settings) -> None:
    """Remove this host's training scratch folders older than any training may run: left by an attempt killed here
    whose job then finished on another host (imports, ``import-*``, clean up their own)."""
    cutoff = time.time() - settings.train_time_limit_s - STALE_SCRATCH_GRACE_S
    for path in (settings.local_model_dir / "tmp").iterdir() if (settings.local_model_dir / "tmp").is_dir() else ():
        try:
            if not path.name.startswith("import-") and path.stat().st_mtime < cutoff:
                log.info("removing %s, a training scratch folder older than the training time limit", path)
                shutil.rmtree(path, ignore_errors=True)
        except FileNotFoundError:
            continue


def _read_training(session, job_id: str):
    """The job's request and owner, its dataset's bytes, format and name, and its validation dataset's (bytes,
    format) or None."""
    job = session.get(Job, job_id)
    request = TrainRequest.model_validate(job.params)
    dataset = session.get(Dataset, job.dataset_id) if job.dataset_id is not None else None
    if dataset is None or dataset.deleted_at is not None:
        raise DatasetError("the job's dataset no longer exists")
    validation = None
    if request.validation_dataset_id is not None:
        validation = _owners_dataset(session, request.validation_dataset_id, job.owner_id)
        if validation is None:
            raise DatasetError(f"validation dataset {request.validation_dataset_id} no longer exists")
    return request, job.owner_id, dataset.content, dataset.format, dataset.name, validation


def _owners_dataset(session, dataset_id: int, owner_id: int | None) -> tuple[bytes, str] | None:
    """(content, format) of a dataset the job's owner may read (checked again: the web checked at submission, but
    nothing a job names is trusted blindly), or None."""
    owner = session.get(User, owner_id) if owner_id is not None else None
    scope = (visible(Dataset, Principal.of(owner)) if owner is not None
             else Dataset.shared.is_(True) & Dataset.deleted_at.is_(None))
    row = session.execute(select(Dataset.content, Dataset.format).where(Dataset.id == dataset_id, scope)).first()
    return (row.content, row.format) if row is not None else None


def train_config(request: TrainRequest):
    """The training loop's config from a validated request (``core.options.TrainConfig``)."""
    return request.config()


def _train(request: TrainRequest, rows: list[dict], validation_rows: list[dict] | None, scratch: Path, store: Path,
           lease: Lease):
    from ml.loop import train_classifier  # lazily: importing worker.tasks stays light

    return train_classifier(
        rows,
        train_config(request),
        scratch,
        validation_rows=validation_rows,
        device=device(),
        encoder_cache_dir=store / "encoders",
        progress=lease.progress,
        should_stop=lease.should_stop,
        max_batch_tokens=runtime.settings().max_train_batch_tokens,
        amp=runtime.settings().amp,
    )


def _publish_model(job_id: str, request: TrainRequest, owner_id: int | None, dataset_name: str, result,
                   scratch: Path, key: str, lease: Lease) -> None:
    """Publish the artifacts as ``key`` (``core.artifacts``: the store every host reaches), then record model + job
    success in one transaction."""
    if lease.should_stop():  # cancelled (or out of time) while saving: publish nothing
        raise TrainingCancelled("training was cancelled")
    settings = runtime.settings()
    size_bytes = quotas.directory_bytes(scratch)  # usage is one SQL SUM (core.quotas)
    artifact_dir = artifacts.publish(settings, scratch, key)
    try:
        recorded = _record_model(job_id, request, owner_id, dataset_name, result, artifact_dir, size_bytes)
    except BaseException:
        # a commit may have landed though its answer was lost: the files go only once a fresh look finds no row
        landed = models_registry.model_recorded(artifact_dir)
        if landed is False:
            artifacts.discard(settings, artifact_dir)  # no model row, so no files either
            raise
        if landed:  # the row (and the job's success: the same transaction) landed
            log.warning("job %s: recording the model raised, but its row is there: files kept", job_id, exc_info=True)
            return
        log.warning("job %s: cannot tell whether the model was recorded: files kept at %s (the reconciler's sweep "
                    "removes them if no row ever names them)", job_id, artifact_dir)
        raise
    if not recorded:  # cancelled or reclaimed meanwhile: nothing was recorded
        artifacts.discard(settings, artifact_dir)
        log.info("job %s finished training but no longer owns the job; model discarded", job_id)


def _record_model(job_id: str, request: TrainRequest, owner_id: int | None, dataset_name: str, result,
                  artifact_dir: str, size_bytes: int) -> bool:
    """Insert the model row and mark the job succeeded, atomically; False if the job is no longer ours.

    Retried on transient errors; a retry after a commit whose answer was lost finds its own model row (one
    ``artifact_dir`` per attempt) and reports success instead of discarding a recorded model.
    """
    name = request.name or f"{request.family}-{dataset_name}"[:200]
    labels, tasks = text_classification.model_labels(result)
    encoder = request.encoder or "default (all-MiniLM-L6-v2)"
    owner = worker_id()

    def record(session) -> bool | None:
        if session.scalar(select(TrainedModel.id).where(TrainedModel.training_job_id == job_id,
                                                        TrainedModel.artifact_dir == artifact_dir)) is not None:
            return True
        # still ours (PostgreSQL: the job row stays locked to the commit)? a job cancelled and then deleted meanwhile
        # is gone: its model would fail the training_job_id foreign key, which insert_model reads as a version race
        if not jobs.heartbeat(session, job_id, owner, commit=False):
            return False
        model = models_registry.insert_model(
            session,
            name=name,
            owner_id=owner_id,
            family=request.family,
            encoder=encoder,
            labels=labels,
            tasks=tasks,
            metrics=result.metrics,
            params=request.model_dump(),
            artifact_dir=artifact_dir,
            training_job_id=job_id,
            size_bytes=size_bytes,
        )
        if model is None:
            return None  # another model took this version: try the next one
        return jobs.succeed(session, job_id, owner, metrics=result.metrics, model_id=model.id)

    for _ in range(models_registry.VERSION_ATTEMPTS):  # the unique (owner, name, version) settles races
        recorded = db.transact(record, what=f"job {job_id}: record model")
        if recorded is not None:
            return recorded
    raise RuntimeError(f"could not allocate a version for model {name!r}")
