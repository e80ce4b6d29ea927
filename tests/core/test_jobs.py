"""Job state machine: transitions, leases, attempt bounds and the reconciler query."""
from __future__ import annotations

from datetime import timedelta

import pytest

from core import jobs
from core.db import db
from core.jobs import ClaimOutcome, InvalidTransition
from core.schema import Job, JobStatus, JobType, utcnow

LEASE = 60


def _new_job(job_type=JobType.CLASSIFY) -> str:
    with db.session() as session:
        return jobs.create_job(session, job_type, {"texts": ["x"], "model_id": 1}).id


def _get(job_id: str) -> Job:
    with db.session() as session:
        return session.get(Job, job_id)


def _claim(job_id, worker="w1", now=None, max_attempts=3):
    with db.session() as session:
        return jobs.claim(session, job_id, worker, lease_seconds=LEASE, max_attempts=max_attempts, now=now)


def test_create_job_is_queued_with_defaults(settings):
    job = _get(_new_job(JobType.TRAIN))
    assert (job.status, job.type, job.progress, job.attempts) == ("queued", "train", 0.0, 0)
    assert job.created_at is not None and job.enqueued_at is not None
    assert len(job.id) == 36


def test_allowed_transitions_table():
    assert jobs.can_transition(JobStatus.QUEUED, JobStatus.RUNNING)
    assert jobs.can_transition(JobStatus.RUNNING, JobStatus.SUCCEEDED)
    assert not jobs.can_transition(JobStatus.SUCCEEDED, JobStatus.RUNNING)
    assert not jobs.can_transition(JobStatus.QUEUED, JobStatus.SUCCEEDED)
    for terminal in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED):
        assert terminal.terminal and not jobs.ALLOWED_TRANSITIONS[terminal]


def test_claim_then_succeed(settings):
    job_id = _new_job()
    claim = _claim(job_id)
    assert claim.outcome is ClaimOutcome.CLAIMED and claim.attempts == 1
    job = _get(job_id)
    assert job.status == "running" and job.worker_id == "w1" and job.started_at is not None
    with db.session() as session:
        assert jobs.heartbeat(session, job_id, "w1", 0.5)
    assert _get(job_id).progress == 0.5
    with db.session() as session:
        assert jobs.succeed(session, job_id, "w1", metrics={"texts": 1})
    job = _get(job_id)
    assert (job.status, job.progress, job.metrics) == ("succeeded", 1.0, {"texts": 1})
    assert job.finished_at is not None


def test_duplicate_message_sees_fresh_lease_as_busy(settings):
    job_id = _new_job()
    assert _claim(job_id, "w1").outcome is ClaimOutcome.CLAIMED
    second = _claim(job_id, "w2")
    assert second.outcome is ClaimOutcome.BUSY
    assert 0 < second.retry_in <= LEASE
    assert _get(job_id).attempts == 1  # a busy answer is not an attempt


def test_stale_lease_is_reclaimed_and_old_owner_is_locked_out(settings):
    job_id = _new_job()
    _claim(job_id, "w1")
    later = utcnow() + timedelta(seconds=LEASE + 5)
    claim = _claim(job_id, "w2", now=later)
    assert claim.outcome is ClaimOutcome.CLAIMED and claim.attempts == 2
    with db.session() as session:
        assert not jobs.heartbeat(session, job_id, "w1", 0.9)  # the lost worker finds out it lost the job
        assert not jobs.succeed(session, job_id, "w1")
    assert _get(job_id).worker_id == "w2"


def test_attempts_are_bounded(settings):
    job_id = _new_job()
    now = utcnow()
    for attempt in range(1, 3):
        now += timedelta(seconds=LEASE + 1)
        assert _claim(job_id, f"w{attempt}", now=now, max_attempts=2).outcome is ClaimOutcome.CLAIMED
    now += timedelta(seconds=LEASE + 1)
    claim = _claim(job_id, "w9", now=now, max_attempts=2)
    assert claim.outcome is ClaimOutcome.GAVE_UP
    job = _get(job_id)
    assert job.status == "failed" and "gave up after 2 attempts" in job.error


def test_finished_job_is_not_run_again(settings):
    job_id = _new_job()
    _claim(job_id)
    with db.session() as session:
        jobs.succeed(session, job_id, "w1")
    assert _claim(job_id, "w2").outcome is ClaimOutcome.DONE
    assert _claim("no-such-job").outcome is ClaimOutcome.MISSING


def test_cancel_queued_and_running_but_not_finished(settings):
    queued = _new_job()
    with db.session() as session:
        assert jobs.cancel(session, queued).status == "cancelled"
    assert _claim(queued).outcome is ClaimOutcome.DONE

    running = _new_job()
    _claim(running)
    with db.session() as session:
        jobs.cancel(session, running)
        assert not jobs.heartbeat(session, running, "w1", 0.3)  # the worker's next beat tells it to stop
    with db.session() as session, pytest.raises(InvalidTransition):
        jobs.cancel(session, running)
    with db.session() as session, pytest.raises(LookupError):
        jobs.cancel(session, "missing")


def test_fail_records_message(settings):
    job_id = _new_job()
    _claim(job_id)
    with db.session() as session:
        assert not jobs.fail(session, job_id, "nope", worker_id="someone-else")
        assert jobs.fail(session, job_id, "bad labels", worker_id="w1")
    job = _get(job_id)
    assert job.status == "failed" and job.error == "bad labels"


def test_progress_is_clamped(settings):
    job_id = _new_job()
    _claim(job_id)
    with db.session() as session:
        jobs.heartbeat(session, job_id, "w1", 7.0)
    assert _get(job_id).progress == 1.0


def test_lost_jobs_finds_old_queued_and_stale_running_once_per_period(settings):
    fresh, old_queued, stale_running = _new_job(), _new_job(), _new_job(JobType.TRAIN)
    _claim(stale_running)
    now = utcnow() + timedelta(seconds=LEASE + 400)
    with db.session() as session:
        session.get(Job, fresh).enqueued_at = now  # just sent
    with db.session() as session:
        lost = jobs.lost_jobs(session, requeue_after_s=300, lease_seconds=LEASE, now=now)
    assert sorted(lost) == sorted([(old_queued, "classify"), (stale_running, "train")])
    with db.session() as session:  # bumped: not re-sent again in the same period
        assert jobs.lost_jobs(session, requeue_after_s=300, lease_seconds=LEASE, now=now + timedelta(seconds=1)) == []
