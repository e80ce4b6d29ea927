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

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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
    new_job = {"train": lambda: stack.train_job(dataset_id, tiny_bert_dir, epochs=6),
               "classify": lambda: stack.classify_job(model_id, texts)}
    job_ids = {kind: [make(), make()] for kind, make in new_job.items()}
    kills: dict[str, list[tuple[str, int]]] = {"train": [], "classify": []}  # (job, attempt) killed
    deadline = time.monotonic() + 150
    while min(len(k) for k in kills.values()) < KILLS:
        assert time.monotonic() < deadline, f"{kills}\n{stack.logs()}"
        for kind, ids in job_ids.items():
            done = kills[kind]
            if len(done) >= KILLS:
                continue
            rows = [stack.job(job_id) for job_id in ids]
            for job in rows:
                # mid-work: the attempt has written progress (training steps / a stored chunk of predictions)
                if job.status == "running" and job.progress > 0 and (job.id, job.attempts) not in done:
                    os.kill(_owner_pid(stack, job.id), signal.SIGKILL)  # no ack, no cleanup, its lease still fresh
                    done.append((job.id, job.attempts))
            if all(job.status == "succeeded" for job in rows):  # finished between kills: give the loop more work
                ids.append(new_job[kind]())
        time.sleep(0.05)
    train_ids, classify_ids = job_ids["train"], job_ids["classify"]
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
    stack.start_worker("classify", concurrency=8)  # make run's classification worker (threads)
    for job_id in job_ids:
        job = stack.wait_for(job_id, timeout=90)
        assert (job.status, job.attempts) == ("succeeded", 1), (job.error, stack.logs())
        assert stack.predictions(job_id) == list(range(job.params["text_count"]))
    assert {stack.job(job_id).sends for job_id in job_ids} == {2}  # each re-sent exactly once


def _count_lines(stack: Stack, needle: str) -> int:
    return stack.logs(tail=None).count(needle)


def test_duplicate_and_redelivered_messages_during_the_last_attempt_are_dropped(stack_factory, tiny_bert_dir):
    # Redis redelivers an unacked message after 2 s: every training here outlives its visibility timeout.
    stack = stack_factory(JOB_MAX_ATTEMPTS="2", BROKER_VISIBILITY_TIMEOUT_S="2")
    stack.start_redis()
    stack.start_worker("train", concurrency=2)  # a free slot to take the copies while the job runs
    # ~8-12 s on 2 cores: the duplicate and the 2 s visibility copy both arrive while it runs (8 epochs, ~3 s on a
    # fast machine, let the duplicate arrive after the success)
    job_id = stack.train_job(stack.dataset(120), tiny_bert_dir, epochs=20, send=False)
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


# ---------------------------------------------------------------- in-process: time limits, transient database errors


@pytest.fixture
def eager_rows(settings, tiny_bert_dir, model_dir):
    """A dataset and a model row in the test's SQLite database; jobs run in this process (worker.jobs calls)."""
    from core.datasets import scan_upload
    from core.schema import Dataset, TrainedModel

    from .conftest import sample_csv

    data = sample_csv(120)
    scan = scan_upload(io.BytesIO(data), "t.csv")
    with db.session() as session:
        dataset = Dataset(name="t", filename="t.csv", columns=scan.columns, row_count=scan.row_count,
                          size_bytes=scan.size_bytes, sha256=scan.sha256, format=scan.format, profile=scan.profile,
                          content=data)
        model = TrainedModel(name="tiny", version=1, family="bert", encoder="tiny", labels=LABELS,
                             tasks={"sentiment": LABELS}, metrics={}, params={}, artifact_dir=str(model_dir))
        session.add_all([dataset, model])
        session.flush()
        return dataset.id, model.id


def _eager_job(job_type, params, **kwargs) -> str:
    with db.session() as session:
        return jobs.create_job(session, job_type, params, **kwargs).id


def test_a_training_past_its_time_limit_fails_with_a_clear_message(settings, eager_rows, tiny_bert_dir):
    from core import runtime
    from core.schema import JobType
    from core.specs import TrainRequest
    from worker.jobs import train

    runtime.configure(settings.replace(train_time_limit_s=1.5))
    dataset_id, _ = eager_rows
    params = TrainRequest.model_validate({"dataset_id": dataset_id, "text_column": "text", "label_column":
                                          "sentiment", "encoder": str(tiny_bert_dir), "epochs": 100,
                                          "batch_size": 4, "max_length": 32}).model_dump(mode="json")
    job_id = _eager_job(JobType.TRAIN, params, dataset_id=dataset_id)
    started = time.monotonic()
    train.run_training(job_id)  # returns: the slot is free again
    assert time.monotonic() - started < 10
    with db.session() as session:
        job = session.get(jobs.Job, job_id)
        assert (job.status, job.error) == ("failed", "training exceeded the time limit of 1.5 s")
        assert job.model_id is None
    assert not list(Path(settings.model_store).glob(f"*/{job_id}-*"))


def test_a_classification_past_its_time_limit_fails_and_stops_writing(settings, eager_rows):
    from core import runtime
    from core.schema import JobType
    from worker.jobs import classify

    runtime.configure(settings.replace(classify_time_limit_s=0.5, max_batch_size=1))
    _, model_id = eager_rows
    texts = _texts(20_000)
    job_id = _eager_job(JobType.CLASSIFY, {"model_id": model_id}, model_id=model_id, inputs=texts)
    classify.run_classification(job_id)
    with db.session() as session:
        job = session.get(jobs.Job, job_id)
        assert (job.status, job.error) == ("failed", "classification exceeded the time limit of 0.5 s")
        stored = len(_predictions(session, job_id))
    assert stored < len(texts)
    time.sleep(0.5)
    with db.session() as session:
        assert len(_predictions(session, job_id)) == stored  # nothing written after the stop


def _predictions(session, job_id):
    from sqlalchemy import select

    from core.schema import Prediction

    return session.scalars(select(Prediction.index).where(Prediction.job_id == job_id)).all()


def test_transient_database_errors_in_the_workers_writes_do_not_fail_the_job(settings, eager_rows):
    """SQLite's "database is locked" (a real driver OperationalError) on the first claim, the first prediction
    INSERT and the first success UPDATE: each write is retried with backoff and the job succeeds, rows exactly once."""
    import sqlite3

    from sqlalchemy import event

    from core.schema import JobType
    from worker.jobs import classify

    _, model_id = eager_rows
    texts = _texts(2500)  # three chunks: heartbeat + INSERT, heartbeat + INSERT, INSERT + success
    job_id = _eager_job(JobType.CLASSIFY, {"model_id": model_id}, model_id=model_id, inputs=texts)
    writes = {  # which statement is which write
        "claim": lambda sql: sql.startswith("UPDATE jobs") and "attempts=" in sql,
        "insert": lambda sql: sql.startswith("INSERT INTO predictions"),
        "success": lambda sql: sql.startswith("UPDATE jobs") and "finished_at=" in sql,
    }
    failed = []

    def lock_once(conn, cursor, statement, *_args):
        for name, matches in writes.items():
            if matches(statement) and name not in failed:
                failed.append(name)
                raise sqlite3.OperationalError("database is locked")

    event.listen(db.engine, "before_cursor_execute", lock_once)
    try:
        classify.run_classification(job_id)
    finally:
        event.remove(db.engine, "before_cursor_execute", lock_once)
    assert sorted(failed) == sorted(writes), failed  # every kind of write met its error once
    with db.session() as session:
        job = session.get(jobs.Job, job_id)
        assert (job.status, job.attempts, job.error) == ("succeeded", 1, None)
        assert sorted(_predictions(session, job_id)) == list(range(len(texts)))
