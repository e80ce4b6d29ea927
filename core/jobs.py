"""Job state transitions. Every status change in the platform goes through this module.

Transitions are conditional UPDATEs, so two processes racing on one job cannot both win:
``queued -> running -> succeeded | failed | cancelled`` and ``queued -> cancelled | failed``.
A running job carries a lease (``worker_id`` + ``heartbeat_at``). Only a queued job, or a running job whose lease is
stale (no heartbeat for ``lease_seconds``, or its owner is a process of this host that no longer exists), can be
claimed, up to ``max_attempts`` executions in total. A duplicate or redelivered message that meets a fresh lease is
answered ``BUSY``: the caller drops it, and it is not an attempt. A training claim records the kernel's OOM-kill
count with its lease (``oom_watch``, ``worker.oom``); re-claimed after its worker was lost with evidence that the
kernel's OOM killer struck meanwhile, the job fails at once (``OOM_KILLED``) instead of being killed again.
"""
from __future__ import annotations

import enum
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, bindparam, case, delete, exists, func, insert, or_, select, update
from sqlalchemy.orm import Session, make_transient_to_detached

from .results import count_for_users
from .schema import TERMINAL_STATUSES, Job, JobStatus, JobType, Prediction, TrainedModel, User, as_utc, utcnow

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
    BUSY = "busy"  # a live worker holds a fresh lease: drop the message (the reconciler re-sends if it goes stale)
    DONE = "done"  # already finished or cancelled: nothing to do
    GAVE_UP = "gave_up"  # claimable, but its attempts are exhausted: the job was marked failed
    OOM_KILLED = "oom_killed"  # its lost attempt was killed by the kernel's OOM killer: the job was marked failed
    MISSING = "missing"  # no such job


@dataclass(frozen=True)
class Claim:
    outcome: ClaimOutcome
    attempts: int = 0
    job: Job | None = field(default=None, compare=False, repr=False)  # the claimed row, loaded in the claim's session


OWNER_DISABLED = "cancelled: its owner's account was disabled"
# A job whose owner was disabled is never started (disabling cancels it too; this covers a message already in flight).
_owner_active = ~exists().where(User.id == Job.owner_id, User.disabled_at.is_not(None))

# How much longer the reconciler waits before each further re-send of one job (x2 per send, at most this factor).
MAX_RESEND_BACKOFF = 16


def owner_is_gone(worker_id: str | None) -> bool:
    """True when ``worker_id`` ("hostname:pid", or "hostname#attempt:pid") names a process of *this* host that no
    longer exists.

    A worker child killed mid-job leaves a lease that looks fresh for up to ``lease_seconds``; its redelivered
    message may take the job over at once instead of waiting. Another host's worker, or a pid that exists (even a
    reused one), counts as alive: the lease then expires the normal way.
    """
    host, _, pid = (worker_id or "").rpartition(":")
    host = host.split("#", 1)[0]  # a per-attempt nonce (worker.lease) follows the host name
    if host != socket.gethostname() or not pid.isdigit() or int(pid) <= 0:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: the process exists under another user
        return False
    return False


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
    owner_id: int | None = None,
    job_id: str | None = None,
) -> Job:
    """Add a queued job to ``session`` (the caller commits *before* sending its message).

    ``inputs`` holds bulky job input (a classify job's texts), stored apart from ``params``. ``job_id``: the id
    to give it (a UUID the caller chose, to watch for the job before sending it); a new UUID by default.
    """
    now = utcnow()
    values = {
        "id": job_id if job_id is not None else str(uuid.uuid4()),
        "type": JobType(job_type).value,
        "owner_id": owner_id,
        "status": JobStatus.QUEUED.value,
        "params": params,
        "inputs": inputs,  # JSON null when None, as the ORM stored it
        "dataset_id": dataset_id,
        "model_id": model_id,
        "progress": 0.0,
        "attempts": 0,
        "created_at": now,
        "enqueued_at": now,  # the caller sends the first message right after committing
        "sends": 1,
        "predictions_stored": 0,
    }
    # One Core INSERT (built once) instead of the ORM's unit of work, which cost a /predict call more CPU than any
    # other statement; the row is then attached to the session as if just read, the columns not written as NULL.
    session.connection().execute(_INSERT_JOB, values)
    job = Job(**values, **dict.fromkeys(_UNWRITTEN))
    make_transient_to_detached(job)
    session.add(job)
    return job


_INSERT_JOB = insert(Job.__table__)
_UNWRITTEN = ("error", "metrics", "worker_id", "heartbeat_at", "eta_at", "oom_watch", "started_at", "finished_at")


def claim(
    session: Session,
    job_id: str,
    worker_id: str,
    *,
    lease_seconds: float,
    max_attempts: int,
    now: datetime | None = None,
    oom_watch: dict | None = None,
    oom_verdict: Callable[[dict | None], str | None] | None = None,
) -> Claim:
    """Try to take ``job_id`` for ``worker_id``; commits. Safe under duplicate and redelivered messages.

    Order of the checks: a finished job is ``DONE``; a job whose owner is disabled is cancelled and ``DONE``; a
    fresh lease held by a live worker is ``BUSY`` (whatever the
    attempt count: a duplicate during the last attempt must not fail a healthy job); only a claimable job (queued,
    or running with a stale lease) is ``CLAIMED``, or ``GAVE_UP`` (marked failed) when its attempts are exhausted.

    ``oom_watch`` is stored with the lease (None clears it). ``oom_verdict(previous oom_watch)``: called when a
    running job whose lost attempt recorded one is claimable; a message means the kernel's OOM killer killed that
    attempt, and the job fails with it (``OOM_KILLED``) instead of being claimed.
    """
    now = now or utcnow()
    stale_before = now - timedelta(seconds=lease_seconds)
    stale = or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < stale_before)
    claimable = or_(Job.status == JobStatus.QUEUED.value, and_(Job.status == JobStatus.RUNNING.value, stale))
    fast = [Job.attempts < max_attempts, claimable]
    if oom_verdict is not None:  # a lost attempt that recorded a watch is judged on the slow path below
        fast.append(or_(Job.status == JobStatus.QUEUED.value, Job.oom_watch.is_(None)))
    # The common case (a queued job, or a stale lease) is one UPDATE and one SELECT.
    if _take(session, job_id, worker_id, now, *fast, _owner_active, oom_watch=oom_watch):
        return _claimed(session, job_id)
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        return Claim(ClaimOutcome.MISSING)
    status = JobStatus(job.status)
    if status in TERMINAL_STATUSES:
        return Claim(ClaimOutcome.DONE, attempts=job.attempts)
    if job.owner_id is not None and session.scalar(select(User.disabled_at).where(User.id == job.owner_id)):
        cancel_owned(session, job.owner_id, now=now)
        session.commit()
        return Claim(ClaimOutcome.DONE, attempts=job.attempts)
    heartbeat_at = as_utc(job.heartbeat_at)
    fresh = status is JobStatus.RUNNING and heartbeat_at is not None and heartbeat_at >= stale_before
    owner_gone = fresh and owner_is_gone(job.worker_id)
    if fresh and not owner_gone:
        return Claim(ClaimOutcome.BUSY, attempts=job.attempts)
    # Claimable. The conditions repeat what was just read, so a concurrent claim, heartbeat or cancel wins the race.
    same = [Job.status == job.status, Job.attempts == job.attempts]
    same.append(Job.worker_id == job.worker_id if owner_gone else claimable)
    oom_message = oom_verdict(job.oom_watch) if oom_verdict is not None and status is JobStatus.RUNNING else None
    if oom_message is not None:
        return _fail_claimable(session, job_id, same, oom_message, now, ClaimOutcome.OOM_KILLED, job.attempts)
    if job.attempts >= max_attempts:
        # the last attempt's reason when it gave the job back (jobs.release), else: its worker was lost
        reason = job.error or "the worker running it was lost"
        message = f"gave up after {job.attempts} attempts ({reason})"
        return _fail_claimable(session, job_id, same, message, now, ClaimOutcome.GAVE_UP, job.attempts)
    if _take(session, job_id, worker_id, now, *same, oom_watch=oom_watch):
        return _claimed(session, job_id)
    return Claim(ClaimOutcome.BUSY, attempts=job.attempts)  # another message took it first


def _fail_claimable(session: Session, job_id: str, same: list, message: str, now: datetime, outcome: ClaimOutcome,
                    attempts: int) -> Claim:
    """Fail a claimable job instead of claiming it (``same``: it is still as it was read); commits. ``outcome``,
    or ``BUSY`` when a concurrent claim, heartbeat or cancel changed it first."""
    result = session.execute(
        update(Job).where(Job.id == job_id, *same)
        .values(status=JobStatus.FAILED.value, error=message, finished_at=now)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return Claim(outcome if result.rowcount == 1 else ClaimOutcome.BUSY, attempts=attempts)


def _take(session: Session, job_id: str, worker_id: str, now: datetime, *conditions,
          oom_watch: dict | None = None) -> bool:
    """The claiming UPDATE under ``conditions``; commits; True when this call won the job."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, *conditions)
        .values(
            status=JobStatus.RUNNING.value,
            attempts=Job.attempts + 1,
            worker_id=worker_id,
            heartbeat_at=now,
            started_at=now,
            progress=0.0,  # this attempt's progress (a resumed classification reports its overall share)
            eta_at=None,
            metrics=None,  # an earlier attempt's live curves are not this attempt's
            error=None,
            oom_watch=oom_watch,
        )
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return result.rowcount == 1


def _claimed(session: Session, job_id: str) -> Claim:
    job = session.get(Job, job_id, populate_existing=True)
    return Claim(ClaimOutcome.CLAIMED, attempts=job.attempts, job=job)


def claim_queued_many(session: Session, job_ids: list[str], worker_id: str, *, max_attempts: int,
                      now: datetime | None = None) -> list[str]:
    """Claim those of ``job_ids`` that are still queued (and whose owner is active) for ``worker_id`` in one UPDATE;
    the ids won. ``now``: when the attempt started (its ``started_at``). Does not commit: the /predict lane
    (``worker.predict_lane``) stores the jobs' predictions and their success in the same transaction, so a job is
    never seen running half-done and a crash leaves it queued."""
    if not job_ids:
        return []
    found = session.connection().execute(_CLAIM_MANY, {"ids": list(job_ids), "now": now or utcnow(),
                                                       "worker": worker_id, "max_attempts": max_attempts})
    return list(found.scalars())


# built once: the /predict lane claims a batch per call of its drainers, and building the statement (an IN list
# coerced id by id, its cache key) cost more CPU than running it
_CLAIM_MANY = (
    update(Job.__table__)  # Core, not the ORM's bulk UPDATE: nothing in the session to synchronise
    .where(Job.__table__.c.id.in_(bindparam("ids", expanding=True)), Job.status == JobStatus.QUEUED.value,
           Job.attempts < bindparam("max_attempts"), _owner_active)
    .values(status=JobStatus.RUNNING.value, attempts=Job.attempts + 1, worker_id=bindparam("worker"),
            heartbeat_at=bindparam("now"), started_at=bindparam("now"), progress=0.0, eta_at=None, metrics=None,
            error=None, oom_watch=None)
    .returning(Job.id)
)


def succeed_many(session: Session, worker_id: str, metrics: dict[str, dict]) -> int:
    """running -> succeeded for each job of ``metrics`` (job id -> its metrics) that ``worker_id`` holds, in one
    executemany; how many (-1: the driver did not say). Does not commit (see :func:`claim_queued_many`)."""
    if not metrics:
        return 0
    now = utcnow()
    rows = [{"job_id": job_id, "worker": worker_id, "done_at": now, "job_metrics": values}
            for job_id, values in metrics.items()]
    result = session.connection().execute(_SUCCEED, rows)
    return result.rowcount  # -1 where the driver does not report an executemany's count


_SUCCEED = (  # built once, as _CLAIM_MANY
    Job.__table__.update()
    .where(Job.__table__.c.id == bindparam("job_id"), Job.__table__.c.status == JobStatus.RUNNING.value,
           Job.__table__.c.worker_id == bindparam("worker"))
    .values(status=JobStatus.SUCCEEDED.value, progress=1.0, finished_at=bindparam("done_at"), error=None,
            metrics=bindparam("job_metrics", type_=Job.__table__.c.metrics.type))
)


def release(session: Session, job_id: str, worker_id: str, message: str, *, now: datetime | None = None) -> bool:
    """Give a running job back for a later attempt (its model's files could not be fetched, say); commits.

    The lease is dropped (``heartbeat_at`` NULL: claimable at once by a message that arrives) and ``message`` is the
    job's error while it waits; ``enqueued_at`` is now, so the reconciler re-sends it ``lease_seconds`` later. Its
    attempts stay counted: past ``max_attempts`` the job fails with the last such message. False when the job is
    no longer ``worker_id``'s."""
    now = now or utcnow()
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.RUNNING.value, Job.worker_id == worker_id)
        .values(heartbeat_at=None, error=message[:4000], enqueued_at=now)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return result.rowcount == 1


def heartbeat(
    session: Session, job_id: str, worker_id: str, progress: float | None = None, *, commit: bool = True,
    eta_at: datetime | None = None, metrics: dict | None = None,
) -> bool:
    """Renew the lease (and progress). False means the job is no longer ours (cancelled, reclaimed, timed out).

    ``eta_at`` (the expected end) and ``metrics`` (a training's curves so far) ride the same UPDATE when given.

    ``commit=False`` leaves the transaction open (on PostgreSQL the row stays locked until the caller commits): a
    worker writes its results after this check in the same transaction, so a cancel lands before or after them,
    never in between.
    """
    values: dict = {"heartbeat_at": utcnow()}
    if progress is not None:
        values["progress"] = min(1.0, max(0.0, float(progress)))
    if eta_at is not None:
        values["eta_at"] = eta_at
    if metrics is not None:
        values["metrics"] = metrics
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.RUNNING.value, Job.worker_id == worker_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if commit:
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


def cancel_owned(session: Session, owner_id: int, *, message: str = OWNER_DISABLED,
                 now: datetime | None = None) -> int:
    """Cancel every queued and running job of ``owner_id`` (its owner was disabled); does not commit, so the
    caller's change (the disable) and the cancels land together. Running workers stop at their next heartbeat.
    Returns how many jobs were cancelled."""
    result = session.execute(
        update(Job)
        .where(Job.owner_id == owner_id, Job.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]))
        .values(status=JobStatus.CANCELLED.value, error=message, finished_at=now or utcnow())
        .execution_options(synchronize_session=False)
    )
    return result.rowcount


def resend_delay_s(base_s: float, sends: int) -> float:
    """How long after its last message a waiting job is re-sent: ``base_s``, doubling with each message sent."""
    return base_s * min(MAX_RESEND_BACKOFF, 2 ** max(0, (sends or 1) - 1))


def lost_jobs(
    session: Session,
    *,
    requeue_after_s: float,
    lease_seconds: float,
    now: datetime | None = None,
    broker_lost: bool = False,
) -> list[tuple[str, str]]:
    """(id, type) of jobs whose message looks lost, marked as re-sent now (``enqueued_at``, ``sends``); commits.

    A queued job is re-sent ``requeue_after_s`` after its last message, a running job once its lease is stale; each
    further re-send of the same job waits twice as long (:func:`resend_delay_s`), so a long queue behind busy
    workers does not fill Redis with copies. ``broker_lost`` (Redis restarted empty): every queued and running job
    is re-sent at once; copies that meet a live worker's lease are dropped by :func:`claim`.
    """
    now = now or utcnow()
    queued = Job.status == JobStatus.QUEUED.value
    running = Job.status == JobStatus.RUNNING.value
    if broker_lost:
        condition = or_(queued, running)
    else:
        # the shortest possible wait in SQL; the per-job backoff is applied below
        condition = or_(
            and_(queued, or_(Job.enqueued_at.is_(None), Job.enqueued_at < now - timedelta(seconds=requeue_after_s))),
            and_(
                running,
                or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < now - timedelta(seconds=lease_seconds)),
                or_(Job.enqueued_at.is_(None), Job.enqueued_at < now - timedelta(seconds=lease_seconds)),
            ),
        )
    rows = session.execute(select(Job.id, Job.type, Job.status, Job.sends, Job.enqueued_at).where(condition)).all()
    due = []
    for row in rows:
        base = requeue_after_s if row.status == JobStatus.QUEUED.value else lease_seconds
        last = as_utc(row.enqueued_at)
        if broker_lost or last is None or last < now - timedelta(seconds=resend_delay_s(base, row.sends)):
            due.append((row.id, row.type))
    if due:
        session.execute(
            update(Job)
            .where(Job.id.in_([job_id for job_id, _ in due]))
            .values(enqueued_at=now, sends=Job.sends + 1)
            .execution_options(synchronize_session=False)
        )
    session.commit()
    return due


def unmark_resend(session: Session, job_ids: list[str]) -> None:
    """Undo :func:`lost_jobs`' marks for jobs whose message could not be sent after all; commits.

    They become due at once (``enqueued_at`` NULL) and their backoff is what it was before the pass.
    """
    if job_ids:
        session.execute(
            update(Job)
            .where(Job.id.in_(job_ids))
            .values(enqueued_at=None, sends=case((Job.sends > 0, Job.sends - 1), else_=0))
            .execution_options(synchronize_session=False)
        )
    session.commit()


class JobNotDeletable(Exception):
    """A job that cannot be deleted (yet): ``code`` ``job_active`` (queued or running: cancel it first) or
    ``job_has_model`` (a training whose model is live: delete the model first; ``model_id`` names it)."""

    def __init__(self, code: str, message: str, model_id: int | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.model_id = code, message, model_id


def delete_finished(session: Session, job_id: str) -> int:
    """Delete a finished (succeeded, failed or cancelled) job and its stored predictions; how many predictions
    went. The caller has checked that the job is the caller's and commits; LookupError when it is gone.

    The job row is locked first (PostgreSQL ``FOR UPDATE``; SQLite: the write lock, taken by a no-op UPDATE), so
    its status is read as it stands: a worker still winding down a cancelled job finds it gone at its next
    heartbeat and writes nothing. A training whose model is live is kept (409 ``job_has_model``): the model's page
    links to it for its training curves; once the model is deleted its job may go too (the model row forgets it).
    Predictions are deleted explicitly, not left to ``ON DELETE CASCADE``: no reliance on SQLite's foreign-key
    PRAGMA, and the count is returned.
    """
    if session.get_bind().dialect.name == "sqlite":
        session.execute(update(Job).where(Job.id == job_id).values(id=Job.id)
                        .execution_options(synchronize_session=False))
    locked = session.execute(select(Job.status, Job.predictions_stored, Job.owner_id).where(Job.id == job_id)
                             .with_for_update()).first()
    if locked is None:
        raise LookupError(job_id)
    status, stored, owner_id = locked
    if not JobStatus(status).terminal:
        raise JobNotDeletable("job_active", f"job {job_id} is {status}: cancel it (or wait for it to finish), "
                              "then delete it")
    model_id = session.scalar(select(TrainedModel.id).where(TrainedModel.training_job_id == job_id,
                                                            TrainedModel.deleted_at.is_(None)).limit(1))
    if model_id is not None:
        raise JobNotDeletable("job_has_model", f"job {job_id} trained model {model_id}, which still exists: delete "
                              "the model first (its page shows this job's training curves)", model_id)
    session.execute(update(TrainedModel).where(TrainedModel.training_job_id == job_id)
                    .values(training_job_id=None).execution_options(synchronize_session=False))
    predictions = session.scalar(select(func.count()).select_from(Prediction).where(Prediction.job_id == job_id))
    # its owner's count of stored predictions (core.results keeps it) loses the job's, in the same transaction
    if owner_id is not None:
        count_for_users(session, {owner_id: -stored})
    session.execute(delete(Prediction).where(Prediction.job_id == job_id).execution_options(synchronize_session=False))
    session.execute(delete(Job).where(Job.id == job_id).execution_options(synchronize_session=False))
    return predictions
