"""What every job shares, whatever its type: claim with a lease, run under it, turn the outcome into the job's state.

``run_job(job_id, job_type)`` deals with one message completely: a message whose job is not claimable (finished,
cancelled, or held under a live worker's fresh lease) is dropped, never retried. The job type's work is a
:class:`JobHandler` registered by its own module under ``worker/jobs/`` (one file per job type); the skeleton knows
no job type. Every SQL write goes through ``db.transact``, which retries transient database errors with backoff,
so a lock or a dropped connection does not fail the job. Each attempt runs under a :class:`~worker.lease.Lease`
with the job type's time limit.
"""
from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any, ClassVar

from sqlalchemy import select

from core import artifacts, jobs, runtime
from core.config import Settings
from core.db import db
from core.queue import announce_job_done
from core.schema import Job, JobStatus

from . import oom, telemetry
from .lease import Lease, start_attempt, worker_id

log = logging.getLogger(__name__)

# Test-only fault injection (see _test_fault); inert unless the worker's environment sets it to "1".
TEST_FAULTS_ENV = "BERTQUEUE_TEST_FAULTS"


class JobHandler:
    """One job type's part of a job: declared once by its module in ``worker/jobs/`` and registered there.

    The skeleton claims the job, calls ``prepare(job_id, claim)`` (read what the attempt needs; no lease is held yet,
    so the database session is closed before the long work), then ``run(work, lease)`` under the open lease, and
    records the outcome: ``stop_errors`` mean the work stopped at ``lease.should_stop()``; ``failure_message(exc)``
    is the job's error for an expected failure (None: a crash, logged with its traceback and recorded as
    ``"<kind> failed: <type>: <message>"``).
    """

    job_type: ClassVar[str]  # a core.schema.JobType value: the key run_job() is called with
    kind: ClassVar[str]  # the job in words, in its errors: "training" -> "training exceeded the time limit of ..."
    watch_oom: ClassVar[bool] = False  # record the kernel's OOM-kill count with the claim (worker.oom)
    announces_done: ClassVar[bool] = True  # publish job-done for the web requests waiting on it (/predict)
    stop_errors: ClassVar[tuple[type[BaseException], ...]] = ()

    def time_limit_s(self, settings: Settings) -> float | None:
        """The attempt's time limit (the lease fails the job past it); None: no limit."""
        raise NotImplementedError

    def prepare(self, job_id: str, claim: jobs.Claim) -> Any:
        """What the attempt needs (``claim.job`` is the claimed row, detached), read before the lease opens."""
        raise NotImplementedError

    def run(self, work: Any, lease: Lease) -> None:
        """The job's own work under ``lease``, ending with its results and success written (or a stop error)."""
        raise NotImplementedError

    def failure_message(self, exc: Exception) -> str | None:
        """The job's error for an expected failure (bad data, a vanished model, ...), else None."""
        return None


_handlers: dict[str, JobHandler] = {}


def register(handler: type[JobHandler]) -> type[JobHandler]:
    """Make ``run_job`` run ``handler``'s job type (a class decorator; each job module registers itself)."""
    if handler.job_type in _handlers:
        raise ValueError(f"job type {handler.job_type!r} is registered twice")
    _handlers[handler.job_type] = handler()
    return handler


def handler_for(job_type: str) -> JobHandler:
    """The registered handler of ``job_type`` (importing ``worker.jobs`` registers them all)."""
    try:
        return _handlers[job_type]
    except KeyError:
        raise LookupError(f"no worker handler for job type {job_type!r}: is worker.jobs imported?") from None


def run_job(job_id: str, job_type: str) -> None:
    """Run job ``job_id`` of type ``job_type`` end to end, or drop the message if the job is not claimable.

    Claim (a new attempt), prepare, run under the lease with the type's time limit, then record how it ended:
    stopped (cancelled, taken over, or out of time), failed with the handler's message, or crashed. The handler
    writes its own results and success, conditioned on still holding the lease.
    """
    handler = handler_for(job_type)
    lease = claim = None
    started, outcome = time.monotonic(), "succeeded"
    try:
        claim = _claim(job_id, watch_oom=handler.watch_oom)
        if claim.outcome is not jobs.ClaimOutcome.CLAIMED:
            return
        work = handler.prepare(job_id, claim)
        settings = runtime.settings()
        lease = Lease(job_id, settings.lease_seconds, time_limit_s=handler.time_limit_s(settings), kind=handler.kind)
        with lease:
            handler.run(work, lease)
    except handler.stop_errors:
        outcome = "failed" if lease is not None and lease.timed_out else "stopped"
        _stopped(job_id, lease)
    except artifacts.ArtifactUnavailable as exc:
        # the model store did not answer (or kept handing over corrupt files) for FETCH_RETRY_S: not the job's
        # fault, so it waits for a later attempt instead of failing (bounded by JOB_MAX_ATTEMPTS)
        outcome = "released"
        _release(job_id, f"waiting for the model store: {exc}")
    except Exception as exc:  # noqa: BLE001 - every failure must end up on the job row
        outcome = "failed"
        message = handler.failure_message(exc)
        if message is None:
            log.exception("job %s crashed", job_id)
            message = f"{handler.kind} failed: {type(exc).__name__}: {exc}"
        _fail(job_id, message)
    if claim is not None and claim.outcome is jobs.ClaimOutcome.CLAIMED:
        telemetry.job_finished(claim.job, outcome, time.monotonic() - started)  # the duration metric
    if handler.announces_done:
        _announce(job_id, outcome)


def _claim(job_id: str, *, watch_oom: bool = False) -> jobs.Claim:
    """Claim the job (retrying transient database errors); anything but CLAIMED means: drop the message.

    ``watch_oom`` (training: the job whose memory grows with its parameters): record the kernel's OOM-kill count
    with the lease, and fail instead of re-running a job whose lost attempt the OOM killer took (``worker.oom``).
    """
    settings = runtime.settings()
    owner = start_attempt()
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


def _release(job_id: str, message: str) -> None:
    log.warning("job %s released for a later attempt: %s", job_id, message)
    owner = worker_id()
    db.transact(lambda session: jobs.release(session, job_id, owner, message), what=f"job {job_id}: release")


def _stopped(job_id: str, lease: Lease | None) -> None:
    """The work stopped at ``should_stop()``: cancelled, taken over, or out of time (then the job fails)."""
    if lease is not None and lease.timed_out:
        _fail(job_id, lease.time_limit_message())  # no-op if the keeper recorded it
    else:
        log.info("job %s stopped: cancelled, or taken over by another worker", job_id)


def fail_hard_time_limit(job_id: str, job_type: str, seconds: float) -> None:
    """Celery killed the job's process at its hard time limit (stuck past the cooperative deadline)."""
    message = f"{handler_for(job_type).kind} exceeded the time limit of {seconds:g} s (the worker process was stopped)"

    def fail_if_ours(session) -> bool:
        # Only the attempt that was killed: if a live worker re-claimed the job meanwhile, its attempt stands.
        owner = session.scalar(select(Job.worker_id).where(Job.id == job_id))
        return jobs.owner_is_gone(owner) and jobs.fail(session, job_id, message, worker_id=owner)

    if db.transact(fail_if_ours, what=f"job {job_id}: fail"):
        log.warning("job %s failed: %s", job_id, message)


def _announce(job_id: str, outcome: str) -> None:
    """Tell waiting web requests (``/predict``) that the job ended, with its terminal status when it has one
    (``succeeded`` / ``failed``; ``ended`` for a job stopped or given back). Best effort, and a hint: a waiter
    confirms it in SQL."""
    settings = runtime.settings()
    if settings.celery_eager:
        return  # the caller runs in this very call stack and reads SQL right after
    status = outcome if outcome in (JobStatus.SUCCEEDED.value, JobStatus.FAILED.value) else "ended"
    announce_job_done(settings.redis_url, job_id, status)
