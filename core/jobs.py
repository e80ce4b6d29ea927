"""Job state transitions. Every status change in the platform goes through this module.

Transitions are conditional UPDATEs, so two processes racing on one job cannot both win:
``queued -> running -> succeeded | failed | cancelled`` and ``queued -> cancelled | failed``.
A running job carries a lease (``worker_id`` + ``heartbeat_at``); a stale lease can be reclaimed by a
redelivered message, up to ``max_attempts`` executions in total.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from .schema import TERMINAL_STATUSES, Job, JobStatus, JobType, as_utc, utcnow

ALLOWED_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED, JobStatus.FAILED}),
    JobStatus.RUNNING: frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


class InvalidTransition(Exception):
    """The job is not in a state that allows the requested change."""


class ClaimOutcome(str, enum.Enum):
    CLAIMED = "claimed"  # this worker now owns the job
    BUSY = "busy"  # another worker holds a fresh lease: try again later
    DONE = "done"  # already finished or cancelled: nothing to do
    GAVE_UP = "gave_up"  # attempts exhausted: the job was marked failed
    MISSING = "missing"  # no such job


@dataclass(frozen=True)
class Claim:
    outcome: ClaimOutcome
    attempts: int = 0
    retry_in: float = 0.0  # seconds until a BUSY lease goes stale
    job: Job | None = field(default=None, compare=False, repr=False)  # the claimed row, loaded in the claim's session


def can_transition(current: JobStatus, target: JobStatus) -> bool:
    return target in ALLOWED_TRANSITIONS[current]


def create_job(
    session: Session,
    job_type: JobType,
    params: dict,
    *,
    dataset_id: int | None = None,
    model_id: int | None = None,
    inputs: list | None = None,
) -> Job:
    """Add a queued job to ``session`` (the caller commits *before* sending its message).

    ``inputs`` holds bulky job input (a classify job's texts), stored apart from ``params``.
    """
    now = utcnow()
    job = Job(
        type=JobType(job_type).value,
        status=JobStatus.QUEUED.value,
        params=params,
        inputs=inputs,
        dataset_id=dataset_id,
        model_id=model_id,
        progress=0.0,
        attempts=0,
        created_at=now,
        enqueued_at=now,
    )
    session.add(job)
    session.flush()
    return job


def claim(
    session: Session,
    job_id: str,
    worker_id: str,
    *,
    lease_seconds: float,
    max_attempts: int,
    now: datetime | None = None,
) -> Claim:
    """Try to take ``job_id`` for ``worker_id``; commits. Safe under duplicate and redelivered messages."""
    now = now or utcnow()
    stale_before = now - timedelta(seconds=lease_seconds)
    claimable = or_(
        Job.status == JobStatus.QUEUED.value,
        and_(Job.status == JobStatus.RUNNING.value, or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < stale_before)),
    )
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.attempts < max_attempts, claimable)
        .values(
            status=JobStatus.RUNNING.value,
            attempts=Job.attempts + 1,
            worker_id=worker_id,
            heartbeat_at=now,
            started_at=now,
            error=None,
        )
        .execution_options(synchronize_session=False)
    )
    session.commit()
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        return Claim(ClaimOutcome.MISSING)
    if result.rowcount == 1:
        return Claim(ClaimOutcome.CLAIMED, attempts=job.attempts, job=job)
    status = JobStatus(job.status)
    if status in TERMINAL_STATUSES:
        return Claim(ClaimOutcome.DONE, attempts=job.attempts)
    if job.attempts >= max_attempts:
        fail(session, job_id, f"gave up after {job.attempts} attempts (the worker running it was lost)")
        return Claim(ClaimOutcome.GAVE_UP, attempts=job.attempts)
    heartbeat = as_utc(job.heartbeat_at) or now
    retry_in = max(1.0, (heartbeat + timedelta(seconds=lease_seconds) - now).total_seconds())
    return Claim(ClaimOutcome.BUSY, attempts=job.attempts, retry_in=retry_in)


def heartbeat(session: Session, job_id: str, worker_id: str, progress: float | None = None) -> bool:
    """Renew the lease (and progress); commits. False means the job is no longer ours (cancelled, reclaimed)."""
    values: dict = {"heartbeat_at": utcnow()}
    if progress is not None:
        values["progress"] = min(1.0, max(0.0, float(progress)))
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.RUNNING.value, Job.worker_id == worker_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return result.rowcount == 1


def succeed(
    session: Session,
    job_id: str,
    worker_id: str,
    *,
    metrics: dict | None = None,
    model_id: int | None = None,
) -> bool:
    """running -> succeeded for the lease holder; commits with whatever else the session holds (atomic)."""
    values: dict = {"status": JobStatus.SUCCEEDED.value, "progress": 1.0, "finished_at": utcnow(), "error": None}
    if metrics is not None:
        values["metrics"] = metrics
    if model_id is not None:
        values["model_id"] = model_id
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.RUNNING.value, Job.worker_id == worker_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        session.rollback()
        return False
    session.commit()
    return True


def fail(session: Session, job_id: str, message: str, *, worker_id: str | None = None) -> bool:
    """queued/running -> failed with a user-facing ``message``; commits. Only the lease holder when given."""
    conditions = [Job.id == job_id, Job.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value])]
    if worker_id is not None:
        conditions.append(Job.worker_id == worker_id)
    result = session.execute(
        update(Job)
        .where(*conditions)
        .values(status=JobStatus.FAILED.value, error=message[:4000], finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return result.rowcount == 1


def cancel(session: Session, job_id: str) -> Job:
    """queued/running -> cancelled; commits. A running worker notices on its next heartbeat and stops."""
    job = session.get(Job, job_id)
    if job is None:
        raise LookupError(job_id)
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]))
        .values(status=JobStatus.CANCELLED.value, finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.commit()
    session.refresh(job)
    if result.rowcount != 1:
        raise InvalidTransition(f"job {job_id} is {job.status} and can no longer be cancelled")
    return job


def lost_jobs(
    session: Session, *, requeue_after_s: float, lease_seconds: float, now: datetime | None = None
) -> list[tuple[str, str]]:
    """(id, type) of jobs whose message may be lost: queued too long, or running with a stale lease.

    Their ``enqueued_at`` is bumped (and committed) so one reconciler pass re-sends each at most once per period.
    """
    now = now or utcnow()
    queued_before = now - timedelta(seconds=requeue_after_s)
    stale_before = now - timedelta(seconds=lease_seconds)
    resend_before = now - timedelta(seconds=max(requeue_after_s, lease_seconds))
    rows = session.execute(
        select(Job.id, Job.type).where(
            or_(
                and_(Job.status == JobStatus.QUEUED.value, or_(Job.enqueued_at.is_(None), Job.enqueued_at < queued_before)),
                and_(
                    Job.status == JobStatus.RUNNING.value,
                    Job.heartbeat_at < stale_before,
                    or_(Job.enqueued_at.is_(None), Job.enqueued_at < resend_before),
                ),
            )
        )
    ).all()
    if rows:
        session.execute(
            update(Job).where(Job.id.in_([job_id for job_id, _ in rows])).values(enqueued_at=now).execution_options(synchronize_session=False)
        )
    session.commit()
    return [(job_id, job_type) for job_id, job_type in rows]
