"""Job state machine: transitions, leases, attempt bounds, the reconciler query and transient-error retries."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import timedelta

import pytest
from sqlalchemy import event, update
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from core import db as db_module
from core import jobs
from core.db import db, is_transient
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
    job = _get(job_id)
    assert (job.attempts, job.worker_id, job.status) == (1, "w1", "running")  # a busy answer is not an attempt


def test_duplicate_during_the_last_attempt_with_a_fresh_lease_is_dropped_not_failed(settings):
    job_id = _new_job()
    now = utcnow()
    for attempt in (1, 2):
        now += timedelta(seconds=LEASE + 1)  # the previous attempt's lease went stale
        assert _claim(job_id, f"w{attempt}", now=now, max_attempts=2).outcome is ClaimOutcome.CLAIMED
    duplicate = _claim(job_id, "w9", now=now + timedelta(seconds=1), max_attempts=2)
    assert duplicate.outcome is ClaimOutcome.BUSY
    job = _get(job_id)
    assert (job.status, job.attempts, job.worker_id, job.error) == ("running", 2, "w2", None)
    with db.session() as session:
        assert jobs.succeed(session, job_id, "w2")  # the healthy last attempt still finishes


def test_a_lease_whose_local_owner_process_is_gone_is_claimed_at_once(settings):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid no longer names a process (reaped)
    job_id = _new_job()
    assert _claim(job_id, f"{socket.gethostname()}:{dead.pid}").outcome is ClaimOutcome.CLAIMED
    claim = _claim(job_id, "w2")  # the lease is seconds old, far from stale
    assert (claim.outcome, claim.attempts) == (ClaimOutcome.CLAIMED, 2)
    assert _get(job_id).worker_id == "w2"


def test_a_fresh_lease_of_a_live_or_remote_owner_is_respected():
    assert not jobs.owner_is_gone(f"{socket.gethostname()}:{__import__('os').getpid()}")  # this very process
    assert not jobs.owner_is_gone("some-other-host:1")  # another host: cannot tell, trust the lease
    assert not jobs.owner_is_gone("w1") and not jobs.owner_is_gone(None)


def test_exhausted_attempts_and_a_dead_owner_give_up(settings):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    job_id = _new_job()
    assert _claim(job_id, f"{socket.gethostname()}:{dead.pid}", max_attempts=1).outcome is ClaimOutcome.CLAIMED
    claim = _claim(job_id, "w2", max_attempts=1)
    assert claim.outcome is ClaimOutcome.GAVE_UP
    job = _get(job_id)
    assert job.status == "failed" and "gave up after 1 attempts" in job.error


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


def test_exhausted_attempts_and_a_stale_lease_fail_the_job(settings):
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


def _resend(now, **kwargs):
    with db.session() as session:
        return jobs.lost_jobs(session, requeue_after_s=300, lease_seconds=LEASE, now=now, **kwargs)


def test_reconciler_backs_off_per_job(settings):
    job_id = _new_job()
    created = _get(job_id).enqueued_at
    assert _get(job_id).sends == 1  # the caller sends its first message right after the commit
    t = utcnow()
    assert _resend(t + timedelta(seconds=299)) == []
    resent = []
    for minutes in range(1, 200):  # one pass a minute for more than three hours
        if _resend(t + timedelta(minutes=minutes)):
            resent.append(minutes)
    # waits of 300 s, then 600, 1200, 2400, 4800 s (x2 per message sent, capped at 16 x 300 s)
    assert resent == [5, 16, 37, 78, 159], resent  # strictly later than each wait, passes a minute apart
    job = _get(job_id)
    assert job.sends == 1 + len(resent) and job.enqueued_at > created


def test_reconciler_resends_a_stale_running_job_then_backs_off(settings):
    job_id = _new_job(JobType.TRAIN)
    _claim(job_id)
    t = utcnow()
    assert _resend(t + timedelta(seconds=LEASE - 5)) == []  # lease still fresh
    assert _resend(t + timedelta(seconds=LEASE + 1)) == [(job_id, "train")]
    assert _resend(t + timedelta(seconds=2 * LEASE)) == []  # the next re-send waits 2 x LEASE after this one
    assert _resend(t + timedelta(seconds=3 * LEASE + 2)) == [(job_id, "train")]


def test_broker_lost_resends_every_waiting_job_at_once(settings):
    queued, running, done = _new_job(), _new_job(JobType.TRAIN), _new_job()
    _claim(running)
    _claim(done)
    with db.session() as session:
        jobs.succeed(session, done, "w1")
    assert _resend(utcnow()) == []  # nothing looks lost by age
    assert sorted(_resend(utcnow(), broker_lost=True)) == sorted([(queued, "classify"), (running, "train")])


# ---------------------------------------------------------------- transient database errors


def test_transient_errors_are_told_apart():
    orig = Exception("boom")
    assert is_transient(OperationalError("UPDATE jobs", {}, orig))  # lock, deadlock, connection refused
    assert is_transient(DBAPIError("SELECT 1", {}, orig, connection_invalidated=True))  # dropped connection
    assert not is_transient(DBAPIError("SELECT 1", {}, orig))
    assert not is_transient(IntegrityError("INSERT", {}, orig))


def test_transact_retries_a_locked_database_with_backoff(settings, monkeypatch):
    """A real OperationalError from the driver (SQLite's "database is locked"), raised on the first two UPDATEs: the
    claim is retried in a fresh transaction and succeeds; nothing of the failed tries is left behind."""
    import sqlite3

    sleeps: list[float] = []
    real_sleep = db_module.time.sleep
    monkeypatch.setattr(db_module.time, "sleep", lambda s: (sleeps.append(s), real_sleep(s)))
    job_id = _new_job()
    failures = [2]

    def lock(conn, cursor, statement, *_args):
        if statement.startswith("UPDATE jobs") and failures[0]:
            failures[0] -= 1
            raise sqlite3.OperationalError("database is locked")

    event.listen(db.engine, "before_cursor_execute", lock)
    try:
        claim = db.transact(
            lambda session: jobs.claim(session, job_id, "w1", lease_seconds=LEASE, max_attempts=3), what="claim")
    finally:
        event.remove(db.engine, "before_cursor_execute", lock)
    assert claim.outcome is ClaimOutcome.CLAIMED and claim.attempts == 1
    assert len(sleeps) == 2 and sleeps[0] <= 0.1 < sleeps[1] * 2 + 0.1  # doubling backoff (with jitter)
    assert _get(job_id).attempts == 1


def test_transact_gives_up_after_its_budget_and_never_retries_real_errors(settings):
    calls = []

    def always_locked(_session):
        calls.append(1)
        raise OperationalError("UPDATE jobs", {}, Exception("database is locked"))

    with pytest.raises(OperationalError):
        db.transact(always_locked, what="locked", retry_for_s=0.0)
    assert len(calls) == 1

    def constraint(_session):
        calls.append(1)
        raise IntegrityError("INSERT", {}, Exception("duplicate key"))

    with pytest.raises(IntegrityError):
        db.transact(constraint, what="constraint")
    assert len(calls) == 2  # not retried


def test_a_resend_that_could_not_be_sent_is_unmarked(settings):
    job_id = _new_job()
    t = utcnow()
    assert _resend(t + timedelta(seconds=301)) == [(job_id, "classify")]
    assert _get(job_id).sends == 2
    with db.session() as session:  # the broker refused the message: the mark is taken back
        jobs.unmark_resend(session, [job_id])
    assert (_get(job_id).sends, _get(job_id).enqueued_at) == (1, None)
    assert _resend(t + timedelta(seconds=302)) == [(job_id, "classify")]  # due again at once, same backoff


def test_reconciler_pass_unmarks_what_a_dead_broker_did_not_take(settings, monkeypatch):
    from worker import reconciler

    first, second = _new_job(), _new_job()
    with db.session() as session:
        for job_id in (first, second):
            session.get(Job, job_id).enqueued_at = utcnow() - timedelta(seconds=1000)
    sent = []

    def flaky_send(_app, job_id, _job_type):
        if sent:
            raise ConnectionError("redis went away")
        sent.append(job_id)

    monkeypatch.setattr(reconciler, "enqueue_job", flaky_send)
    with pytest.raises(ConnectionError):
        reconciler.reconcile_once(None, settings.replace(requeue_after_s=300))
    (unsent,) = {first, second} - set(sent)
    assert (_get(sent[0]).sends, _get(unsent).sends, _get(unsent).enqueued_at) == (2, 1, None)


def test_a_dead_attempts_owner_with_a_per_attempt_nonce_is_gone(settings):
    """worker.lease names each attempt "<host>#<nonce>:<pid>": the host and pid still decide."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    assert jobs.owner_is_gone(f"{host}#a1b2c3:{dead.pid}")
    assert not jobs.owner_is_gone(f"{host}#a1b2c3:{os.getpid()}")
    assert not jobs.owner_is_gone(f"other-host#a1b2c3:{dead.pid}")


def test_each_claim_is_an_attempt_of_its_own_even_in_one_process(settings):
    """Two attempts of one job in the same process (a stale lease re-claimed) have different lease owners: the old
    attempt's heartbeat no longer owns the job, so it stops instead of running beside the new one."""
    from worker import skeleton

    job_id = _new_job()
    first = skeleton._claim(job_id)
    old_owner = skeleton.worker_id()
    with db.session() as session:  # the lease goes stale (e.g. a database outage longer than LEASE_SECONDS)
        session.get(Job, job_id).heartbeat_at = utcnow() - timedelta(seconds=settings.lease_seconds + 1)
    second = skeleton._claim(job_id)
    assert (first.outcome, second.outcome, second.attempts) == (ClaimOutcome.CLAIMED, ClaimOutcome.CLAIMED, 2)
    assert skeleton.worker_id() != old_owner and old_owner.endswith(f":{os.getpid()}")
    with db.session() as session:
        assert not jobs.heartbeat(session, job_id, old_owner)
        assert jobs.heartbeat(session, job_id, skeleton.worker_id())


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request, settings):
    """The configured database: the test's SQLite file, or a private PostgreSQL schema."""
    if request.param == "postgresql":
        from core import runtime
        from core.schema import Base

        runtime.configure(settings.replace(database_url=request.getfixturevalue("postgres_schema_url")))
        Base.metadata.create_all(db.engine)
    return request.param


def _owned_job(username: str) -> tuple[int, str]:
    from core import accounts

    with db.session() as session:
        user, _ = accounts.create_user(session, username)
        job = jobs.create_job(session, JobType.CLASSIFY, {"texts": ["x"], "model_id": 1}, owner_id=user.id)
        session.commit()
        return user.id, job.id


def test_claim_refuses_a_job_whose_owner_is_disabled(backend):
    """A message already in flight when its owner was disabled (or a disable that raced the job's creation): the
    worker's claim cancels the job instead of running it."""
    from core.schema import User

    owner_id, job_id = _owned_job("gone")
    _, other_id = _owned_job("still-here")
    with db.session() as session:  # disabled behind the jobs' back: only the claim can stop them now
        session.get(User, owner_id).disabled_at = utcnow()
        session.commit()
    claim = _claim(job_id)
    assert claim.outcome is ClaimOutcome.DONE
    job = _get(job_id)
    assert (job.status, job.error, job.attempts) == ("cancelled", jobs.OWNER_DISABLED, 0)
    assert _claim(other_id).outcome is ClaimOutcome.CLAIMED  # another user's job runs as before


def test_disabling_a_user_cancels_their_queued_and_running_jobs(backend):
    from core import accounts

    owner_id, queued = _owned_job("leaving")
    with db.session() as session:
        running = jobs.create_job(session, JobType.CLASSIFY, {"texts": ["x"], "model_id": 1}, owner_id=owner_id).id
        done = jobs.create_job(session, JobType.CLASSIFY, {"texts": ["x"], "model_id": 1}, owner_id=owner_id).id
        session.commit()
    _, others = _owned_job("staying")
    _claim(running)
    _claim(done)
    with db.session() as session:
        assert jobs.succeed(session, done, "w1")
    with db.session() as session:
        accounts.disable_user(session, owner_id)
        session.commit()
    assert [(_get(j).status, _get(j).error) for j in (queued, running)] == [("cancelled", jobs.OWNER_DISABLED)] * 2
    assert _get(done).status == "succeeded" and _get(others).status == "queued"
    with db.session() as session:
        assert not jobs.heartbeat(session, running, "w1", 0.5)  # the running worker stops at its next step


def test_claim_queued_many_takes_only_queued_jobs_of_active_owners_in_one_transaction(backend):
    """The /predict lane's bulk claim: queued jobs only (not running, finished or cancelled ones, nor a disabled
    owner's), within the attempt bound; nothing is visible until the caller commits."""
    from core import accounts

    queued, running, cancelled, worn = _new_job(), _new_job(), _new_job(), _new_job()
    assert _claim(running).outcome is ClaimOutcome.CLAIMED
    with db.session() as session:
        jobs.cancel(session, cancelled)
        session.execute(update(Job).where(Job.id == worn).values(attempts=3))
        user, _ = accounts.create_user(session, "disabled-owner")
        disabled = jobs.create_job(session, JobType.CLASSIFY, {"texts": ["x"], "model_id": 1}, owner_id=user.id).id
        user.disabled_at = utcnow()
        session.commit()
    ids = [queued, running, cancelled, worn, disabled, "no-such-job"]
    with db.session() as session:
        assert jobs.claim_queued_many(session, ids, "lane#1:1", max_attempts=3) == [queued]
        session.rollback()  # a crash before the commit: the job stays queued
    assert _get(queued).status == "queued"
    with db.session() as session:
        assert jobs.claim_queued_many(session, ids, "lane#1:1", max_attempts=3) == [queued]
        assert jobs.succeed_many(session, "lane#1:1", {queued: {"texts": 1}, running: {"texts": 1}}) == 1
        session.commit()
    job = _get(queued)
    assert (job.status, job.attempts, job.worker_id, job.metrics, job.progress) == (
        "succeeded", 1, "lane#1:1", {"texts": 1}, 1.0)
    assert job.finished_at is not None and job.started_at is not None
    assert _get(running).status == "running"  # another owner's lease: untouched
    with db.session() as session:  # a duplicate batch: nothing left to claim
        assert jobs.claim_queued_many(session, ids, "lane#2:1", max_attempts=3) == []
        assert jobs.claim_queued_many(session, [], "lane#2:1", max_attempts=3) == []
        assert jobs.succeed_many(session, "lane#2:1", {}) == 0
