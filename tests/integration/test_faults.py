"""Exactly-once under faults, against real processes: Celery workers started with ``make run``'s commands, the
reconciler process, a private redis-server, PostgreSQL, and tiny models so that every job takes seconds.

1. worker children SIGKILLed mid-training and mid-classification, again and again: every job succeeds once;
2. Redis restarted (empty) with 100 queued classification jobs: the reconciler notices and re-sends them at once;
3. a duplicate message (and a visibility-timeout redelivery) during a job's last allowed attempt: dropped;
4. a poison job that kills its worker on every attempt: failed after JOB_MAX_ATTEMPTS, other jobs unharmed;
5. cancel mid-training: the worker stops within 5 s and leaves no model row and no files;
6. the whole ``make run`` stack SIGKILLed mid-training and started again: the job completes once.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from core import jobs
from core.db import db
from tests.factories import migrate, save_tiny_model

from .faults import REPO_ROOT, Stack, free_port, listening, signal_group, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

LABELS = ["negative", "neutral", "positive"]
TEXTS = ["worst flight ever", "thanks for the upgrade!", "is the flight on time?", "lost my bag again"]


@pytest.fixture(scope="module")
def model_dir(tiny_bert_dir, tokenizer, tmp_path_factory):
    return save_tiny_model("bert", {"sentiment": LABELS}, tiny_bert_dir, tokenizer,
                           tmp_path_factory.mktemp("faults") / "model", seed=5)


@pytest.fixture
def stack_factory(tmp_path, postgres_schema_url):
    migrate(postgres_schema_url)
    made: list[Stack] = []

    def make(**env: str) -> Stack:
        stack = Stack(tmp_path, postgres_schema_url, **env)
        made.append(stack)
        return stack

    yield make
    for stack in made:
        stack.stop()


def _owner_pid(stack: Stack, job_id: str) -> int:
    return int(stack.job(job_id).worker_id.rsplit(":", 1)[1])


def _texts(n: int) -> list[str]:
    return [f"{TEXTS[i % len(TEXTS)]} #{i}" for i in range(n)]


KILLS = 5  # per job type


def test_worker_children_killed_mid_job_again_and_again_every_job_succeeds_once(stack_factory, tiny_bert_dir,
                                                                                 model_dir):
    stack = stack_factory()
    stack.start_redis()
    stack.start_reconciler()
    # classification in a prefork child here, so that there is a child to kill mid-job
    stack.start_worker("train")
    stack.start_worker("classify", pool="prefork", MAX_BATCH_SIZE="4")
    dataset_id, model_id = stack.dataset(120), stack.model(model_dir, LABELS)
    texts = _texts(4000)
    train_ids = [stack.train_job(dataset_id, tiny_bert_dir, epochs=3) for _ in range(2)]
    classify_ids = [stack.classify_job(model_id, texts) for _ in range(2)]
    kills: dict[str, list[tuple[str, int]]] = {"train": [], "classify": []}  # (job, attempt) killed
    deadline = time.monotonic() + 150
    while min(len(k) for k in kills.values()) < KILLS:
        assert time.monotonic() < deadline, f"{kills}\n{stack.logs()}"
        for job_id in train_ids + classify_ids:
            job = stack.job(job_id)
            done = kills[job.type]
            # mid-work: the attempt has written progress (training steps / a stored chunk of predictions)
            if len(done) < KILLS and job.status == "running" and job.progress > 0 and (job_id, job.attempts) not in done:
                os.kill(_owner_pid(stack, job_id), signal.SIGKILL)  # no ack, no cleanup, its lease still fresh
                done.append((job_id, job.attempts))
        time.sleep(0.05)
    for job_id in train_ids + classify_ids:
        job = stack.wait_for(job_id, timeout=120)
        assert job.status == "succeeded", (job.error, stack.logs())
        killed = sum(1 for killed_id, _ in kills[job.type] if killed_id == job_id)
        assert job.attempts == killed + 1  # each kill costs one attempt: taken over at once, never lost or doubled
        if job.type == "train":
            (model,) = stack.models_of(job_id)
            assert model.id == job.model_id
            assert [p.name for p in stack.model_store.glob(f"models/{job_id}-*")] == [f"{job_id}-{job.attempts}"]
        else:
            assert stack.predictions(job_id) == list(range(len(texts)))  # none missing, none twice
    assert not list(stack.model_store.glob("tmp/*"))  # no scratch directory left behind
    assert "claim busy" not in stack.logs(tail=None)  # every redelivered message found its owner gone and took over


def test_redis_restarted_with_100_queued_jobs_all_succeed_exactly_once(stack_factory, model_dir):
    stack = stack_factory()  # REQUEUE_AFTER_S=600: only the Redis-restart detection can re-send them in time
    stack.start_redis()
    stack.start_reconciler()
    broker = stack.redis()
    wait_until(lambda: broker.exists("bertqueue:reconciler:broker-marker"), "reconciler's first pass", 30, stack.logs)
    model_id = stack.model(model_dir, LABELS)
    job_ids = [stack.classify_job(model_id, _texts(1 + i % 5)) for i in range(100)]
    assert broker.llen("classify") == 100  # queued in Redis, no worker yet
    stack.kill_redis()
    stack.start_redis()  # the same port, empty: every message is gone
    assert stack.redis().llen("classify") == 0
    stack.start_worker("classify", concurrency=8)  # make run's classification worker (threads)
    for job_id in job_ids:
        job = stack.wait_for(job_id, timeout=90)
        assert (job.status, job.attempts) == ("succeeded", 1), (job.error, stack.logs())
        assert stack.predictions(job_id) == list(range(job.params["text_count"]))
    with db.session() as session:
        assert {j.sends for j in session.query(jobs.Job).filter(jobs.Job.id.in_(job_ids))} == {2}  # re-sent once


def _count_lines(stack: Stack, needle: str) -> int:
    return stack.logs(tail=None).count(needle)


def test_duplicate_and_redelivered_messages_during_the_last_attempt_are_dropped(stack_factory, tiny_bert_dir):
    # Redis redelivers an unacked message after 2 s: every training here outlives its visibility timeout.
    stack = stack_factory(JOB_MAX_ATTEMPTS="2", BROKER_VISIBILITY_TIMEOUT_S="2")
    stack.start_redis()
    stack.start_worker("train", concurrency=2)  # a free slot to take the copies while the job runs
    job_id = stack.train_job(stack.dataset(120), tiny_bert_dir, epochs=8, send=False)  # ~5 s
    with db.session() as session:  # attempt 1 was lost long ago: the next claim is the last one allowed
        job = session.get(jobs.Job, job_id)
        job.status, job.attempts, job.worker_id = "running", 1, "lost-host:1"
        job.heartbeat_at = jobs.utcnow().replace(year=2000)
    stack.send(job_id)
    wait_until(lambda: stack.job(job_id).progress > 0, "the last attempt training", 60, stack.logs)
    stack.send(job_id)  # a duplicate while the last attempt holds a fresh lease
    job = stack.wait_for(job_id, timeout=90)
    assert (job.status, job.attempts, job.error) == ("succeeded", 2, None), stack.logs()
    assert len(stack.models_of(job_id)) == 1
    # the duplicate and the visibility-timeout copy were both dropped: no retry loop, no attempt, no failure
    assert _count_lines(stack, f"job {job_id}: claim busy (attempt 2)") >= 2, stack.logs()
    assert "Retry in" not in stack.logs(tail=None)


def test_a_poison_job_fails_after_max_attempts_while_other_jobs_run(stack_factory, tiny_bert_dir):
    stack = stack_factory(JOB_MAX_ATTEMPTS="3")
    stack.start_redis()
    stack.start_worker("train", concurrency=2)
    dataset_id = stack.dataset(120)
    healthy = stack.train_job(dataset_id, tiny_bert_dir, epochs=2)
    poison = stack.train_job(dataset_id, tiny_bert_dir, test_fault="exit")  # kills its worker child every time
    job = stack.wait_for(poison, timeout=90)
    assert job.status == "failed", stack.logs()
    assert job.attempts == 3 and job.error == "gave up after 3 attempts (the worker running it was lost)"
    assert _count_lines(stack, f"job {poison}: test fault: killing the worker") == 3
    job = stack.wait_for(healthy, timeout=90)
    assert (job.status, job.attempts) == ("succeeded", 1), stack.logs()  # never disturbed by its neighbour's crashes


def test_cancel_mid_training_stops_within_5_s_and_leaves_nothing(stack_factory, tiny_bert_dir):
    stack = stack_factory()
    stack.start_redis()
    stack.start_worker("train")  # one slot: the next job can start only once the cancelled one let go of it
    dataset_id = stack.dataset(120)
    long_job = stack.train_job(dataset_id, tiny_bert_dir, epochs=100)
    wait_until(lambda: stack.job(long_job).progress > 0, "training under way", 60, stack.logs)
    never = stack.train_job(dataset_id, tiny_bert_dir)  # queued behind it, cancelled before it starts
    following = stack.train_job(dataset_id, tiny_bert_dir)
    with db.session() as session:
        jobs.cancel(session, never)
        jobs.cancel(session, long_job)
    cancelled_at = time.monotonic()
    wait_until(lambda: stack.job(following).status != "queued", "the next job starts", 30, stack.logs)
    assert time.monotonic() - cancelled_at < 5.0, stack.logs()  # the slot was freed within 5 s
    assert f"job {long_job} stopped: cancelled" in stack.logs(tail=None)
    assert stack.wait_for(following).status == "succeeded"
    for job_id in (long_job, never):
        job = stack.job(job_id)
        assert job.status == "cancelled" and job.model_id is None
        assert stack.models_of(job_id) == []
        assert not list(stack.model_store.glob(f"*/{job_id}-*"))  # no model files, no scratch directory
    assert (stack.job(never).attempts, stack.job(never).started_at) == (0, None)  # a queued job never starts


def test_make_run_stack_killed_mid_training_and_restarted_completes_the_job_once(stack_factory, tiny_bert_dir):
    """The launcher's whole process group is SIGKILLed mid-training (its children die with it, the embedded Redis
    loses every message); started again, the reconciler re-sends the job and a worker takes it over at once (its
    old owner's pid is gone), long before its 60 s lease would go stale."""
    stack = stack_factory(LEASE_SECONDS="60")
    web_port, redis_port = free_port(), free_port()
    env = {k: v for k, v in stack.env.items() if k not in ("REDIS_URL", "BERTQUEUE_TEST_FAULTS")}
    env.update(EMBEDDED_REDIS_PORT=str(redis_port), PORT=str(web_port), WEB_WORKERS="1", WEB_THREADS="2",
               CLASSIFY_THREADS="2", BERTQUEUE_ADMIN_TOKEN="faults-test-admin-token-0123456789",
               ADMIN_CREDENTIALS_FILE=str(stack.tmp_path / "admin_credentials"))
    stack.celery.conf.broker_url = f"redis://127.0.0.1:{redis_port}/0"  # the stack's embedded Redis

    def launch(n: int) -> subprocess.Popen:
        with open(stack.tmp_path / f"stack{n}.log", "wb") as log:
            process = subprocess.Popen([sys.executable, "scripts/run_stack.py"], cwd=REPO_ROOT, env=env, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        stack.processes.append(process)
        wait_until(lambda: b"train@" in (stack.tmp_path / f"stack{n}.log").read_bytes() and b" ready." in
                   (stack.tmp_path / f"stack{n}.log").read_bytes() and listening(web_port), "stack ready", 120,
                   stack.logs)
        return process

    first = launch(1)
    job_id = stack.train_job(stack.dataset(120), tiny_bert_dir, epochs=12)
    wait_until(lambda: stack.job(job_id).progress > 0, "training under way", 90, stack.logs)
    descendants = psutil.Process(first.pid).children(recursive=True)
    signal_group(first, signal.SIGKILL)  # only the launcher is in its group: the rest must die with it
    first.wait()
    wait_until(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in descendants),
               "every child of the killed launcher gone", 15, stack.logs)
    assert not listening(redis_port) and not listening(web_port)
    assert stack.job(job_id).status == "running"  # as the crash left it: a fresh-looking lease, no message
    launch(2)
    job = stack.wait_for(job_id, timeout=60)
    assert (job.status, job.attempts) == ("succeeded", 2), (job.error, stack.logs())
    assert len(stack.models_of(job_id)) == 1
    assert [p.name for p in stack.model_store.glob(f"models/{job_id}-*")] == [f"{job_id}-2"]
