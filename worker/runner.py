"""Glue between SQL and the ML code: claim a job, run it with the DB session closed, store results idempotently.

Each ``run_*`` function deals with one message completely: a message whose job is not claimable (finished,
cancelled, or held under a live worker's fresh lease) is dropped, never retried. Every SQL write goes through
``db.transact``, which retries transient database errors with backoff, so a lock or a dropped connection does not
fail the job. Each attempt runs under a :class:`Lease` with the job type's time limit.
"""
from __future__ import annotations

import contextvars
import logging
import math
import os
import shutil
import signal
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from core import jobs, models_registry, quotas, runtime
from core import task_types
from core.datasets import DatasetError, open_rows, read_rows
from core.db import db
from core.encoder_policy import EncoderNotAllowed, check_encoder
from core.files import fsync_dir, fsync_tree
from core.queue import announce_job_done
from core.results import insert_predictions, stored_indices
from core.accounts import Principal
from core.ownership import visible
from core.schema import Dataset, Job, TrainedModel, User, utcnow
from core.specs import ClassifyRequest, TrainRequest
from ml.batching import RequestCancelled
from ml.data import row_text

from . import oom
from .memory import release_free_memory

log = logging.getLogger(__name__)

HEARTBEAT_EVERY_S = 2.0
MAX_ETA_S = 10 * 365 * 86400.0  # an estimate past this is noise (and past datetime's range when absurd)
# Test-only fault injection (see _test_fault); inert unless the worker's environment sets it to "1".
TEST_FAULTS_ENV = "BERTQUEUE_TEST_FAULTS"
# Texts per commit: bounds lost work on a crash and memory per job, paces progress updates, and is what the engine
# sorts by length at once (ml.batching.POOL_ROWS).
CLASSIFY_CHUNK = 1024
# Free heap pages go back to the OS every this many chunks of a job: large jobs stay flat, and jobs of a few
# thousand texts do not pay the re-faulting of trimmed pages (worker/memory.py).
TRIM_EVERY_CHUNKS = 4


# The lease owner of the attempt this thread runs. Per attempt, not per process: the classification worker runs
# many jobs in one process, and a job re-claimed by that same process (its lease went stale during a database
# outage, say) must not let the old attempt's heartbeat, time limit or failure pass for the new one's.
_attempt_owner: contextvars.ContextVar[str | None] = contextvars.ContextVar("bertqueue_attempt_owner", default=None)


def worker_id() -> str:
    """The current attempt's identity in job leases: ``"<host>#<nonce>:<pid>"`` (see ``core.jobs.owner_is_gone``).

    Set by each claim for the thread that runs the job; outside an attempt, this process's ``"<host>:<pid>"``.
    """
    return _attempt_owner.get() or f"{socket.gethostname()}:{os.getpid()}"


def _new_attempt_owner() -> str:
    return f"{socket.gethostname()}#{uuid.uuid4().hex[:12]}:{os.getpid()}"


class Lease:
    """Keeps a claimed job's lease fresh for as long as the work runs.

    One keeper thread per process (:class:`_LeaseKeeper`) renews every open lease every few seconds whatever the
    ML code is doing (loading or converting an encoder, one huge step, building a predictor), so a slow phase never
    looks like a dead worker, and a worker running many small jobs at once does not pay a thread and an UPDATE per
    job: a job shorter than one beat interval costs no heartbeat at all (the claim set ``heartbeat_at``). The ML
    loops only report ``progress()`` (written with the next beat) and poll ``should_stop()`` (the job was
    cancelled, another worker took it over, or it ran past its time limit).

    ``progress(fraction, info)``: ``info["eta_seconds"]`` becomes the job's ``eta_at`` and ``info["history"]`` (a
    training's evaluations so far) its live ``metrics.history``, both written by the next beat in the same UPDATE;
    the history only when it grew, so a long training does not rewrite the same JSON every few seconds.

    ``time_limit_s``: past it the keeper fails the job ("... exceeded the time limit of N s") and stops renewing,
    even if the work is stuck where it never polls ``should_stop()``; the job is no longer running in SQL at once.
    """

    def __init__(self, job_id: str, lease_seconds: float, every_s: float = HEARTBEAT_EVERY_S, *,
                 time_limit_s: float | None = None, kind: str = "the job") -> None:
        self.job_id, self.owner = job_id, worker_id()
        self.every_s = max(0.2, min(every_s, lease_seconds / 4))
        self.time_limit_s, self.kind = time_limit_s, kind
        self.lost = self.timed_out = False
        self.next_beat = self.deadline = 0.0
        self._progress: float | None = None
        self._eta_at: datetime | None = None
        self._history: list | None = None  # the latest history reported, written while it differs from the stored
        self._history_written = 0  # entries of the history stored by a beat
        self._lock = threading.Lock()  # progress() runs on the work's thread, beat() on the keeper's

    def __enter__(self) -> "Lease":
        now = time.monotonic()
        self.next_beat = now + self.every_s
        self.deadline = now + self.time_limit_s if self.time_limit_s else float("inf")
        _keeper().add(self)
        return self

    def __exit__(self, *_exc) -> None:
        _keeper().remove(self)

    def beat(self) -> None:
        """Renew the lease now (and write the latest progress); marks the lease lost if the job is no longer ours."""
        self.next_beat = time.monotonic() + self.every_s
        with self._lock:
            progress, eta_at, history = self._progress, self._eta_at, self._history
        fresh = history is not None and len(history) != self._history_written
        try:
            with db.session() as session:
                owned = jobs.heartbeat(session, self.job_id, self.owner, progress, eta_at=eta_at,
                                       metrics={"history": history} if fresh else None)
        except SQLAlchemyError as exc:
            # A database hiccup must not kill hours of work; the next beat tries again.
            log.warning("job %s: heartbeat failed (%s); continuing", self.job_id, exc)
            return
        if not owned:
            self.lost = True
        elif fresh:
            self._history_written = len(history)

    def expire(self) -> None:
        """The time limit has passed: fail the job (if still ours) and tell the work to stop."""
        self.timed_out = self.lost = True
        message = f"{self.kind} exceeded the time limit of {self.time_limit_s:g} s"
        log.warning("job %s: %s", self.job_id, message)
        try:  # short retries: this runs on the keeper thread, which renews every other job's lease too
            db.transact(lambda session: jobs.fail(session, self.job_id, message, worker_id=self.owner),
                        what=f"job {self.job_id}: time limit", retry_for_s=5.0)
        except SQLAlchemyError as exc:  # the runner fails it again when the work stops
            log.warning("job %s: could not record the time limit (%s)", self.job_id, exc)

    def progress(self, fraction: float, info: dict | None = None) -> None:
        """Record the work's progress (and ETA, curves: see the class docstring) for the next beat."""
        eta, history = (info or {}).get("eta_seconds"), (info or {}).get("history")
        with self._lock:
            self._progress = fraction
            if isinstance(eta, (int, float)) and not isinstance(eta, bool) and 0 <= eta < MAX_ETA_S:
                self._eta_at = utcnow() + timedelta(seconds=float(eta))
            if isinstance(history, list):
                self._history = _finite_json(history)  # a copy: the loop goes on appending to its own list

    def should_stop(self) -> bool:
        return self.lost


def _finite_json(value):
    """A copy of ``value`` with non-finite floats as None: PostgreSQL's JSON has no NaN (a diverged loss)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_json(item) for item in value]
    return value


class _LeaseKeeper:
    """The process's one heartbeat thread: beats each open :class:`Lease` when it is due."""

    TICK_S = 0.2

    def __init__(self) -> None:
        self._leases: set[Lease] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, lease: Lease) -> None:
        with self._lock:
            self._leases.add(lease)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
                self._thread.start()

    def remove(self, lease: Lease) -> None:
        with self._lock:
            self._leases.discard(lease)

    def _run(self) -> None:
        while True:
            time.sleep(self.TICK_S)
            with self._lock:
                if not self._leases:
                    self._thread = None
                    return
                now = time.monotonic()
                expired = [lease for lease in self._leases if not lease.lost and lease.deadline <= now]
                due = [lease for lease in self._leases if not lease.lost and lease.next_beat <= now
                       and lease not in expired]
            for lease in expired:
                lease.expire()
            for lease in due:
                lease.beat()


_keepers: dict[int, _LeaseKeeper] = {}


def _keeper() -> _LeaseKeeper:
    # one per process: a forked child must not share (or wait on) its parent's thread
    pid = os.getpid()
    if pid not in _keepers:
        _keepers[pid] = _LeaseKeeper()
    return _keepers[pid]


def _claim(job_id: str, *, watch_oom: bool = False) -> jobs.Claim:
    """Claim the job (retrying transient database errors); anything but CLAIMED means: drop the message.

    ``watch_oom`` (training: the job whose memory grows with its parameters): record the kernel's OOM-kill count
    with the lease, and fail instead of re-running a job whose lost attempt the OOM killer took (``worker.oom``).
    """
    settings = runtime.settings()
    owner = _new_attempt_owner()
    _attempt_owner.set(owner)  # every write of this attempt (lease, results, success, failure) names it
    watch = {"oom_watch": oom.watch(), "oom_verdict": oom.verdict} if watch_oom else {}
    claim = db.transact(
        lambda session: jobs.claim(session, job_id, owner, lease_seconds=settings.lease_seconds,
                                   max_attempts=settings.job_max_attempts, **watch),
        what=f"job {job_id}: claim",
    )
    log.info("job %s: claim %s (attempt %s)", job_id, claim.outcome.value, claim.attempts)
    if claim.outcome is jobs.ClaimOutcome.OOM_KILLED:
        log.warning("job %s failed: %s", job_id, oom.OOM_MESSAGE)
    if claim.outcome is jobs.ClaimOutcome.CLAIMED:
        _test_fault(claim.job)
    return claim


def _test_fault(job: Job) -> None:
    """Test-only poison job: with ``BERTQUEUE_TEST_FAULTS=1`` in the worker's environment, a job whose params hold
    ``"test_fault": "exit"`` kills its worker process (SIGKILL, like the OOM killer) right after each claim
    (tests/integration/test_faults.py). Inert otherwise: the web never stores that key (request specs forbid
    unknown fields)."""
    if os.environ.get(TEST_FAULTS_ENV) == "1" and (job.params or {}).get("test_fault") == "exit":
        log.warning("job %s: test fault: killing the worker process", job.id)
        os.kill(os.getpid(), signal.SIGKILL)


def _fail(job_id: str, message: str) -> None:
    log.warning("job %s failed: %s", job_id, message)
    owner = worker_id()
    db.transact(lambda session: jobs.fail(session, job_id, message, worker_id=owner), what=f"job {job_id}: fail")


def _stopped(job_id: str, lease: "Lease | None") -> None:
    """The work stopped at ``should_stop()``: cancelled, taken over, or out of time (then the job fails)."""
    if lease is not None and lease.timed_out:
        _fail(job_id, f"{lease.kind} exceeded the time limit of {lease.time_limit_s:g} s")  # no-op if recorded
    else:
        log.info("job %s stopped: cancelled, or taken over by another worker", job_id)


def fail_hard_time_limit(job_id: str, seconds: float) -> None:
    """Celery killed the job's process at its hard time limit (stuck past the cooperative deadline)."""
    message = f"training exceeded the time limit of {seconds:g} s (the worker process was stopped)"

    def fail_if_ours(session) -> bool:
        # Only the attempt that was killed: if a live worker re-claimed the job meanwhile, its attempt stands.
        owner = session.scalar(select(Job.worker_id).where(Job.id == job_id))
        return jobs.owner_is_gone(owner) and jobs.fail(session, job_id, message, worker_id=owner)

    if db.transact(fail_if_ours, what=f"job {job_id}: fail"):
        log.warning("job %s failed: %s", job_id, message)


def _device() -> str:
    from ml.device import resolve_device

    setting = runtime.settings().device
    if _resolved_device.get(setting) is None:  # the answer never changes within a process
        _resolved_device[setting] = resolve_device(setting)
    return _resolved_device[setting]


_resolved_device: dict[str, str] = {}


def _announce(job_id: str) -> None:
    """Tell waiting web requests (``/predict``) that the job ended. Best effort: they re-read its status in SQL."""
    settings = runtime.settings()
    if settings.celery_eager:
        return  # the caller runs in this very call stack and reads SQL right after
    announce_job_done(settings.redis_url, job_id, "ended")


# ---------------------------------------------------------------- training


def run_training(job_id: str) -> None:
    """Run training job ``job_id`` end to end (or drop the message if the job is not claimable)."""
    claim = _claim(job_id, watch_oom=True)
    if claim.outcome is not jobs.ClaimOutcome.CLAIMED:
        return
    settings = runtime.settings()
    store = Path(settings.model_store)
    scratch = store / "tmp" / f"{job_id}-{claim.attempts}"
    _remove_earlier_attempts(store, job_id, claim.attempts)
    lease = None
    try:
        # read everything, then close the session before long work
        request, owner_id, content, fmt, dataset_name, validation = db.transact(
            lambda session: _read_training(session, job_id), what=f"job {job_id}: read")
        check_encoder(request.encoder, settings, on_disk=True)
        rows = read_rows(content, fmt).rows
        validation_rows = read_rows(*validation).rows if validation is not None else None
        # training keeps only the rows: the raw bytes need not stay alive for the whole run
        del content, validation
        lease = Lease(job_id, settings.lease_seconds, time_limit_s=settings.train_time_limit_s, kind="training")
        with lease:
            result = _train(request, rows, validation_rows, scratch, store, lease)
            # one directory per attempt: a worker that lost the job can never touch the winner's files
            final_dir = store / "models" / f"{job_id}-{claim.attempts}"
            _publish_model(job_id, request, owner_id, dataset_name, result, scratch, final_dir, lease)
    except Exception as exc:  # noqa: BLE001 - every failure must end up on the job row
        from ml.config import TrainingCancelled, TrainingDataError

        if isinstance(exc, TrainingCancelled):
            _stopped(job_id, lease)
        elif isinstance(exc, (TrainingDataError, DatasetError, EncoderNotAllowed)):
            _fail(job_id, str(exc))
        else:
            log.exception("job %s crashed", job_id)
            _fail(job_id, f"training failed: {type(exc).__name__}: {exc}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _remove_earlier_attempts(store: Path, job_id: str, attempt: int) -> None:
    """Delete the files of this job's earlier attempts: a worker killed while saving (or between publishing the files
    and committing the model row) leaves them behind, and this claim proves that attempt is over."""
    for directory in ("tmp", "models"):
        for path in (store / directory).glob(f"{job_id}-*"):
            if path.name != f"{job_id}-{attempt}":
                log.info("job %s: removing %s, left by an earlier attempt", job_id, path)
                shutil.rmtree(path, ignore_errors=True)


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
    from ml.loop import train_classifier

    return train_classifier(
        rows,
        train_config(request),
        scratch,
        validation_rows=validation_rows,
        device=_device(),
        encoder_cache_dir=store / "encoders",
        progress=lease.progress,
        should_stop=lease.should_stop,
        max_batch_tokens=runtime.settings().max_train_batch_tokens,
    )


def _publish_model(job_id: str, request: TrainRequest, owner_id: int | None, dataset_name: str, result,
                   scratch: Path, final_dir: Path, lease: Lease) -> None:
    """Move the artifacts into ``final_dir`` and record model + job success in one transaction."""
    from ml.config import TrainingCancelled

    if lease.should_stop():  # cancelled (or out of time) while saving: publish nothing
        raise TrainingCancelled("training was cancelled")
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    fsync_tree(scratch)  # the files reach the disk before the rename that publishes them
    os.replace(scratch, final_dir)
    fsync_dir(final_dir.parent)
    try:
        recorded = _record_model(job_id, request, owner_id, dataset_name, result, final_dir)
    except BaseException:
        # a commit may have landed though its answer was lost: the files go only once a fresh look finds no row
        landed = models_registry.model_recorded(str(final_dir))
        if landed is False:
            shutil.rmtree(final_dir, ignore_errors=True)  # no model row, so no files either
            raise
        if landed:  # the row (and the job's success: the same transaction) landed
            log.warning("job %s: recording the model raised, but its row is there: files kept", job_id, exc_info=True)
            return
        log.warning("job %s: cannot tell whether the model was recorded: files kept at %s (the reconciler's sweep "
                    "removes them if no row ever names them)", job_id, final_dir)
        raise
    if not recorded:  # cancelled or reclaimed meanwhile: nothing was recorded
        shutil.rmtree(final_dir, ignore_errors=True)
        log.info("job %s finished training but no longer owns the job; model discarded", job_id)


def _record_model(job_id: str, request: TrainRequest, owner_id: int | None, dataset_name: str, result,
                  final_dir: Path) -> bool:
    """Insert the model row and mark the job succeeded, atomically; False if the job is no longer ours.

    Retried on transient errors; a retry after a commit whose answer was lost finds its own model row (one
    ``artifact_dir`` per attempt) and reports success instead of discarding a recorded model.
    """
    name = request.name or f"{request.family}-{dataset_name}"[:200]
    tasks = {task: list(labels) for task, labels in result.tasks.items()}
    encoder = request.encoder or "default (all-MiniLM-L6-v2)"
    owner = worker_id()
    size_bytes = quotas.directory_bytes(final_dir)  # usage is one SQL SUM (core.quotas)

    def record(session) -> bool | None:
        if session.scalar(select(TrainedModel.id).where(TrainedModel.training_job_id == job_id,
                                                        TrainedModel.artifact_dir == str(final_dir))) is not None:
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
            labels=next(iter(tasks.values())),
            tasks=tasks,
            metrics=result.metrics,
            params=request.model_dump(),
            artifact_dir=str(final_dir),
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


# ---------------------------------------------------------------- classification


def run_classification(job_id: str) -> None:
    """Classify every input of job ``job_id``; resumes after the stored predictions on a retry.

    Runs in one of the worker's many job threads; the texts go through the model's shared batching engine, so
    concurrent jobs are batched together. A message whose job is not claimable is dropped.
    """
    work = None
    try:
        claim = _claim(job_id)
        if claim.outcome is not jobs.ClaimOutcome.CLAIMED:
            return
        # the claimed row is re-attached (no SELECT) so its deferred inputs load in the read's session
        work = db.transact(lambda session: _ClassifyWork.read(session, session.merge(claim.job, load=False),
                                                              resumed=claim.attempts > 1),
                           what=f"job {job_id}: read")
        work.run()
    except RequestCancelled:
        _stopped(job_id, work.lease if work is not None else None)
    except (LookupError, DatasetError) as exc:
        _fail(job_id, str(exc))
    except Exception as exc:  # noqa: BLE001 - every failure must end up on the job row
        log.exception("job %s crashed", job_id)
        _fail(job_id, f"classification failed: {type(exc).__name__}: {exc}")
    _announce(job_id)


class _ClassifyWork:
    """One attempt at a classify job: its inputs (texts, pairs, or dataset columns), model and what is already
    stored."""

    def __init__(self, job_id: str, request: ClassifyRequest, artifact_dir: str, quantize: bool,
                 done: set[int], dataset: tuple[bytes, str] | None, total: int) -> None:
        self.job_id, self.request, self.artifact_dir, self.quantize = job_id, request, artifact_dir, quantize
        self.done, self.dataset, self.total = done, dataset, total
        self.labels: dict[str, Counter] = {}  # label counts of this attempt, per task (None: single-task)
        self.classified = self.chunks_stored = 0  # rows / chunks this attempt stored
        settings = runtime.settings()
        self.lease = Lease(job_id, settings.lease_seconds, time_limit_s=settings.classify_time_limit_s,
                           kind="classification")

    @classmethod
    def read(cls, session, job: Job, *, resumed: bool) -> "_ClassifyWork":
        """Everything the attempt needs, read in the claim's session (closed before inference starts)."""
        job_id = job.id
        request = ClassifyRequest.from_job_params(job.params, None if job.params.get("dataset_id") else job.inputs)
        model = _servable_model(session, request.model_id)
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
            total = len(request.pairs if request.pairs is not None else request.texts)
        done = stored_indices(session, job_id) if resumed else set()
        return cls(job_id, request, model.artifact_dir, _quantize(request.quantize, model), done, dataset, total)

    def inputs(self) -> Iterator[tuple[int, str, str | None, str | None]]:
        """(index, text, text pair, row id) of every input, in order; dataset rows with an empty text (or pair
        text) are skipped (nothing to classify)."""
        if self.dataset is None:
            if self.request.pairs is not None:
                for index, (text, pair) in enumerate(self.request.pairs):
                    yield index, text, pair, None
            else:
                for index, text in enumerate(self.request.texts):
                    yield index, text, None, None
            return
        content, fmt = self.dataset
        request = self.request
        text_column, template, pair_column, id_column = (request.text_column, request.text_template,
                                                         request.text_pair_column, request.id_column)
        for index, row in enumerate(open_rows(content, fmt)):
            text = row_text(row, text_column, template)  # as the model was trained
            pair = row.get(pair_column, "") if pair_column else None
            if text.strip() and (pair is None or pair.strip()):
                yield index, text, pair, (row.get(id_column) if id_column else None)

    def run(self) -> None:
        from ml.inference import get_predictor

        started = time.monotonic()
        todo = (item for item in self.inputs() if item[0] not in self.done)
        with self.lease as lease:  # a cold model load is covered too
            predictor = get_predictor(self.artifact_dir, _device(), quantize=self.quantize)
            # Two chunks in flight: the engine classifies chunk k+1 while this thread writes chunk k to SQL.
            pending = None
            for chunk in _chunks(todo, CLASSIFY_CHUNK):
                wait = _submit(predictor, [item[1] for item in chunk],
                               [item[2] for item in chunk] if self.request.with_pairs else None, lease)
                if pending is not None:
                    self._store(*pending, lease)
                pending = (chunk, wait)
            if pending is None:  # nothing left to classify (all stored by an earlier attempt, or no text)
                db.transact(lambda session: self._succeed(session, started), what=f"job {self.job_id}: succeed")
            else:
                self._store(*pending, lease, started=started)

    def _store(self, chunk, wait, lease: "Lease", *, started: float | None = None) -> None:
        """Wait for a chunk's results and insert them; the last chunk (``started`` given) commits the success."""
        results = wait()
        if lease.should_stop():  # cancelled meanwhile: write nothing more
            raise RequestCancelled("the job was cancelled")
        rows = [_prediction_row(index, text, result, row_id, pair)
                for (index, text, pair, row_id), result in zip(chunk, results)]
        self._count(rows)
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

    def _count(self, rows: list[dict]) -> None:
        self.classified += len(rows)
        for row in rows:
            if row.get("labels") is not None:  # multi-label: texts per label (a text may count under several)
                self.labels.setdefault(None, Counter()).update(row["labels"])
                continue
            # multitask rows count per task; a single-task row counts under the key None
            for task, result in (row.get("tasks") or {None: row}).items():
                self.labels.setdefault(task, Counter())[result["label"]] += 1

    def _succeed(self, session, started: float) -> None:
        seconds = time.monotonic() - started
        metrics = {
            "texts": self.total,
            "classified": len(self.done) + self.classified,  # this attempt's and the earlier ones'
            "seconds": round(seconds, 3),
            "texts_per_second": round(self.classified / seconds, 2) if seconds > 0 else None,  # this attempt
            "device": _device(),
            "quantized": self.quantize,
        }
        if self.dataset is not None:
            metrics["skipped_empty"] = self.total - metrics["classified"]
        if self.done:  # resumed: earlier attempts stored part of the rows, so count them all in SQL
            metrics["label_counts"] = _label_distribution(session, self.job_id)
        elif None in self.labels:
            metrics["label_counts"] = dict(sorted(self.labels[None].items()))
        else:
            metrics["label_counts"] = {task: dict(sorted(c.items())) for task, c in self.labels.items()}
        if not jobs.succeed(session, self.job_id, self.lease.owner, metrics=metrics):
            log.info("job %s finished but no longer owns the job (cancelled or taken over)", self.job_id)


def _servable_model(session, model_id: int | None):
    """The model's ``artifact_dir`` and ``serving`` (a few columns, not the row's JSON blobs: this runs once per job);
    LookupError (the job fails with it as its message) when the model is gone or was deleted."""
    model = session.execute(select(TrainedModel.artifact_dir, TrainedModel.serving, TrainedModel.deleted_at,
                                   TrainedModel.name, TrainedModel.version).where(TrainedModel.id == model_id)).first()
    if model is None:
        raise LookupError(f"model {model_id} no longer exists")
    if model.deleted_at is not None:
        raise LookupError(f"model {model_id} ({model.name}:{model.version}) was deleted: its files are gone, so this "
                          "job cannot run")
    return model


def _quantize(requested: bool | None, model) -> bool:
    """The request's choice, else the model's serving default, else the deployment's."""
    if requested is not None:
        return requested
    default = (model.serving or {}).get("quantize")
    return bool(runtime.settings().quantize_default if default is None else default)


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _submit(predictor, texts: list[str], pairs: list[str] | None, lease: "Lease"):
    """Start classifying one chunk (texts, or sentence pairs ``(texts[i], pairs[i])``) on the model's batching
    engine, shared with every concurrent job; returns a function that waits for its results (``Predictor.predict``
    result dicts)."""
    engine = predictor.engine
    future = engine.submit(texts, pairs=pairs, should_stop=lease.should_stop)
    return lambda: engine.backend.results(future.result())


def _prediction_row(index: int, text: str, result: dict, row_id: str | None = None, pair: str | None = None,
                    task_type: str | None = None) -> dict:
    """A prediction row for ``core.results.insert_predictions``: the input, then the columns the task type stores
    for ``result`` (``core.task_types``: its ``prediction_columns``; ``task_type`` None: the default)."""
    row = {"index": index, "text": text, "text_pair": pair, "row_id": row_id}
    row.update(task_types.get(task_type).prediction_columns(result))
    return row


def _label_distribution(session, job_id: str) -> dict:
    """Label counts of a job's predictions: ``{label: n}``, or ``{task: {label: n}}`` for a multitask model
    (multi-label: texts per label, counted from each prediction's ``labels``)."""
    from core.schema import Prediction

    params = session.scalar(select(TrainedModel.params).join(Job, Job.model_id == TrainedModel.id)
                            .where(Job.id == job_id)) or {}
    if params.get("multi_label"):
        counts: Counter = Counter()
        for labels in session.scalars(select(Prediction.labels).where(Prediction.job_id == job_id)
                                      .execution_options(yield_per=1000)):
            counts.update(labels or [])
        return dict(sorted(counts.items()))
    per_task: dict[str, Counter] = {}
    rows = session.scalars(
        select(Prediction.tasks)
        .where(Prediction.job_id == job_id, Prediction.tasks.is_not(None))
        .execution_options(yield_per=1000)  # a dataset job may have hundreds of thousands of rows
    )
    for tasks in rows:
        for task, result in (tasks or {}).items():
            per_task.setdefault(task, Counter())[result["label"]] += 1
    if per_task:
        return {task: dict(sorted(counts.items())) for task, counts in per_task.items()}
    rows = session.execute(
        select(Prediction.label, func.count()).where(Prediction.job_id == job_id).group_by(Prediction.label)
    ).all()
    return {label: count for label, count in sorted(rows)}


# ---------------------------------------------------------------- evaluation


def run_evaluation(job_id: str) -> None:
    """Score job ``job_id``'s model on its labelled dataset (``ml.evaluation``) and store the metrics.

    Runs on the classify workers like a classification: the same lease, cancel checks between chunks and time
    limit (CLASSIFY_TIME_LIMIT_S). Nothing is written but the metrics, so a retried attempt simply starts over.
    """
    from core.evaluation import EvaluationError
    from ml.config import TrainingCancelled

    lease = None
    try:
        claim = _claim(job_id)
        if claim.outcome is not jobs.ClaimOutcome.CLAIMED:
            return
        plan, artifact_dir, quantize, content, fmt = db.transact(
            lambda session: _read_evaluation(session, job_id), what=f"job {job_id}: read")
        settings = runtime.settings()
        lease = Lease(job_id, settings.lease_seconds, time_limit_s=settings.classify_time_limit_s, kind="evaluation")
        with lease:
            metrics = _evaluate(plan, artifact_dir, quantize, open_rows(content, fmt), lease)
            if not db.transact(lambda session: jobs.succeed(session, job_id, lease.owner, metrics=metrics),
                               what=f"job {job_id}: succeed"):
                log.info("job %s finished but no longer owns the job (cancelled or taken over)", job_id)
    except (TrainingCancelled, RequestCancelled):
        _stopped(job_id, lease)
    except EvaluationError as exc:
        _fail(job_id, exc.message)
    except (LookupError, DatasetError) as exc:
        _fail(job_id, str(exc))
    except Exception as exc:  # noqa: BLE001 - every failure must end up on the job row
        log.exception("job %s crashed", job_id)
        _fail(job_id, f"evaluation failed: {type(exc).__name__}: {exc}")
    _announce(job_id)


def _read_evaluation(session, job_id: str):
    """The job's plan, its model's directory and quantization, and its dataset's bytes and format."""
    from core.evaluation import EvaluationPlan

    job = session.get(Job, job_id)
    params = job.params or {}
    plan = EvaluationPlan.from_params(params)
    model = _servable_model(session, params.get("model_id"))
    dataset = session.execute(select(Dataset.content, Dataset.format)
                              .where(Dataset.id == params.get("dataset_id"), Dataset.deleted_at.is_(None))).first()
    if dataset is None:
        raise LookupError(f"dataset {params.get('dataset_id')} no longer exists")
    return plan, model.artifact_dir, _quantize(params.get("quantize"), model), dataset.content, dataset.format


def _evaluate(plan, artifact_dir: str, quantize: bool, rows, lease: Lease) -> dict:
    """The metrics of the model at ``artifact_dir`` on ``rows``, predicted chunk by chunk under ``lease``."""
    from ml.evaluation import evaluate_rows
    from ml.inference import get_predictor

    started = time.monotonic()
    predictor = get_predictor(artifact_dir, _device(), quantize=quantize)
    metrics = evaluate_rows(
        rows, plan, lambda texts, pairs: _submit(predictor, texts, pairs, lease)(),
        thresholds=getattr(predictor.model, "thresholds", None), progress=lease.progress,
        should_stop=lease.should_stop,
    )
    metrics.update(seconds=round(time.monotonic() - started, 3), device=_device(), quantized=quantize)
    return metrics
