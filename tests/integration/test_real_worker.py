"""The platform against a real Celery worker process, the real Redis server and PostgreSQL.

One short training with the real packaged all-MiniLM-L6-v2 encoder, then classification through both the job
API and the waiting predict endpoint; crash recovery: a worker child killed mid-job is replaced, the job's
message is redelivered, the stale lease is reclaimed and the job still succeeds exactly once; and the queue's
promises with a tiny saved model: a job cancelled while its message waits never starts, a redelivered message
resumes a job whose worker died after the rows it stored, and the reconciler re-sends a job whose message was lost.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest
import redis
from sqlalchemy import select, update

from core import jobs
from core.config import Settings
from core.db import db
from core.queue import QUEUE_FOR_TASK, RECONCILE_TASK, enqueue_job, make_celery
from core.results import insert_predictions
from core.schema import Job, JobType, Prediction, utcnow
from core.specs import ClassifyRequest
from tests.factories import api_client, migrate, save_tiny_model, tiny_model_row

from .conftest import sample_csv, upload, wait_for_job

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

REPO_ROOT = Path(__file__).resolve().parents[2]
REDIS_DB = 12  # a database of its own on the shared server, flushed before each test
SHARED_REDIS_DB = 10  # the worker shared by the tiny-model tests has another: a stack of its own never flushes it
# every queue a task is routed to (the reconciler's included, wherever core.queue routes it)
QUEUES = ",".join(sorted(set(QUEUE_FOR_TASK.values())))
LABELS = ["neg", "pos"]
TEXTS = [f"text number {i}: " + " ".join(["great", "awful", "gate", "lost", "thanks"][: 1 + i % 5]) for i in range(10)]


class _Stack:
    """Settings and worker environment for a migrated PostgreSQL schema and a flushed Redis database, and a
    launcher of real ``celery worker`` processes (prefork, one child, every queue) whose logs go to ``directory``."""

    def __init__(self, database_url: str, redis_url: str, directory: Path, redis_db: int = REDIS_DB) -> None:
        broker = redis_url.rsplit("/", 1)[0] + f"/{redis_db}"
        redis.Redis.from_url(broker).flushdb()
        migrate(database_url)
        self.directory = directory
        self.settings = Settings(
            database_url=database_url, redis_url=broker, model_store=str(directory / "store"), device="cpu",
            secret_key="test", celery_eager=False, lease_seconds=4, predict_timeout_s=120,
            encoder_roots=os.environ["ENCODER_ROOTS"],  # tests/conftest.py: the tiny encoders' folder
        )
        self.env = dict(os.environ, DATABASE_URL=database_url, REDIS_URL=broker, MODEL_STORE=self.settings.model_store,
                        DEVICE="cpu", LEASE_SECONDS="4", HF_HUB_OFFLINE="1", CELERY_EAGER="false",
                        PYTHONPATH=str(REPO_ROOT))
        self.workers: list[subprocess.Popen] = []

    def start_worker(self) -> subprocess.Popen:
        """Start a worker and return once it consumes its queues."""
        log_path = self.directory / f"worker{len(self.workers)}.log"
        with open(log_path, "wb") as log:  # the child keeps its own descriptor
            process = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", QUEUES,
                 "--concurrency", "1", "--loglevel", "INFO", "--without-gossip", "--without-mingle",
                 "-n", f"test{len(self.workers)}@%h"],
                cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )
        self.workers.append(process)
        wait_until(lambda: b" ready." in log_path.read_bytes() or process.poll() is not None, 90,
                   lambda: f"worker not ready after 90 s:\n{_logs(self.directory)}")
        assert process.poll() is None, f"worker exited with {process.returncode}:\n{_logs(self.directory)}"
        return process

    def stop(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.workers:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def stack(tmp_path, postgres_schema_url, redis_url):
    """A stack of its own for one test: ``(settings, start_worker, tmp_path)``."""
    stack = _Stack(postgres_schema_url, redis_url, tmp_path)
    yield stack.settings, stack.start_worker, tmp_path
    stack.stop()


def _client(settings: Settings):
    from web import create_app

    return api_client(create_app({"TESTING": True, "SETTINGS": settings, "WTF_CSRF_ENABLED": False}))


def _logs(tmp_path: Path) -> str:
    return "\n".join(p.read_text(errors="replace")[-4000:] for p in sorted(tmp_path.glob("worker*.log")))


def wait_until(condition, timeout: float, message) -> None:
    """Poll ``condition`` every 0.1 s; fail with ``message()`` (built at the deadline) if it stays false."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(message())
        time.sleep(0.1)


def test_train_and_classify_with_real_worker_redis_postgres_and_minilm(stack):
    settings, start_worker, tmp_path = stack
    start_worker()
    client = _client(settings)
    assert client.get("/readyz").status_code == 200
    dataset_id = upload(client, sample_csv(48))
    response = client.post("/api/v1/jobs/train", json={
        "dataset_id": dataset_id, "text_column": "text", "label_column": "sentiment", "family": "bert",
        "epochs": 1, "batch_size": 16, "max_length": 48, "validation_split": 0.25, "learning_rate": 5e-5,
    })
    assert response.status_code == 202, response.get_json()
    job = wait_for_job(client, response.get_json()["id"], timeout=300)
    assert job["status"] == "succeeded", f"{job['error']}\n{_logs(tmp_path)}"
    assert job["metrics"]["train_examples"] + job["metrics"]["validation_examples"] == 48
    model = client.get(f"/api/v1/models/{job['model_id']}").get_json()
    assert model["family"] == "bert" and "MiniLM" in model["encoder"]
    assert [p.name for p in Path(settings.model_store, "models").glob(f"{job['id']}-*/model.safetensors")] == [
        "model.safetensors"]

    texts = ["@united thanks, the crew was amazing!", "worst flight ever, lost my bag"]
    response = client.post("/api/v1/jobs/classify", json={"model_id": job["model_id"], "texts": texts})
    classify = wait_for_job(client, response.get_json()["id"], timeout=120)
    assert classify["status"] == "succeeded", f"{classify['error']}\n{_logs(tmp_path)}"
    items = client.get(f"/api/v1/jobs/{classify['id']}/predictions").get_json()["items"]
    assert [i["text"] for i in items] == texts
    assert all(i["label"] in model["labels"] for i in items)

    response = client.post("/api/v1/predict", json={"model_id": job["model_id"], "texts": texts, "timeout_s": 60})
    assert response.status_code == 200, response.get_json()
    assert [p["label"] for p in response.get_json()["predictions"]] == [i["label"] for i in items]
    # the waiting call went through the /predict lane (core.predict_lane): a batch run by the worker's drainer
    predicted = client.get(f"/api/v1/jobs/{response.get_json()['job_id']}").get_json()
    assert predicted["metrics"]["batch_jobs"] >= 1 and predicted["attempts"] == 1


def test_killed_worker_child_job_is_redelivered_and_finishes_once(stack, tiny_encoders):
    settings, start_worker, tmp_path = stack
    worker = start_worker()
    client = _client(settings)
    dataset_id = upload(client, sample_csv(200))
    response = client.post("/api/v1/jobs/train", json={
        "dataset_id": dataset_id, "text_column": "text", "label_column": "sentiment",
        "encoder": str(tiny_encoders["bert"]), "epochs": 6, "batch_size": 4, "max_length": 64,
    })
    job_id = response.get_json()["id"]
    running = wait_for_job(client, job_id, timeout=120, statuses=("running", "succeeded", "failed"))
    assert running["status"] == "running", running
    # kill it mid-training, after its first progress report: never before the training loop started
    wait_until(lambda: client.get(f"/api/v1/jobs/{job_id}").get_json()["progress"] > 0, 60,
               lambda: f"no training progress within 60 s: {client.get(f'/api/v1/jobs/{job_id}').get_json()}\n"
                       f"{_logs(tmp_path)}")
    children = psutil.Process(worker.pid).children()
    assert children, "the prefork pool has no child process"
    for child in children:
        child.send_signal(signal.SIGKILL)  # the child dies mid-training: no ack, no cleanup
    job = wait_for_job(client, job_id, timeout=240)
    assert job["status"] == "succeeded", f"{job}\n{_logs(tmp_path)}"
    assert job["attempts"] == 2
    models = client.get("/api/v1/models").get_json()
    items = models["items"] if isinstance(models, dict) else models
    assert [m["training_job_id"] for m in items].count(job_id) == 1



# ---------------------------------------------------------------- cancel, resume, reconcile with a tiny model


@pytest.fixture(scope="module")
def model_dir(tiny_bert_dir, tokenizer, tmp_path_factory):
    return save_tiny_model("bert", {"sentiment": LABELS}, tiny_bert_dir, tokenizer,
                           tmp_path_factory.mktemp("real-worker") / "model", seed=5)


@pytest.fixture(scope="module")
def running(tmp_path_factory, model_dir):
    """One stack with one worker already consuming, shared by the tests below (a worker takes seconds to start
    and stop); each test works on jobs of its own. Yields ``(stack, model_id)``."""
    from tests.conftest import REDIS_URL, _redis_error, postgres_schema, require_service

    require_service("Redis", _redis_error())
    with postgres_schema() as url:
        stack = _Stack(url, REDIS_URL, tmp_path_factory.mktemp("running-worker"), redis_db=SHARED_REDIS_DB)
        try:
            _client(stack.settings)  # points this process at the stack's database
            model_id = tiny_model_row(model_dir, LABELS)
            stack.start_worker()
            yield stack, model_id
        finally:
            stack.stop()
            db.dispose()


@pytest.fixture
def on_running(running):
    """The shared stack, with this process's database pointed at it again (another test may have moved it)."""
    stack, model_id = running
    return stack, _client(stack.settings), model_id


def _classify_row(model_id: int, texts: list[str]) -> str:
    """A queued classify job committed in SQL only: no message is sent for it."""
    params, inputs = ClassifyRequest(model_id=model_id, texts=texts).job_params()
    with db.session() as session:
        return jobs.create_job(session, JobType.CLASSIFY, params, model_id=model_id, inputs=inputs).id


def _stored(job_id: str) -> list[tuple[int, str]]:
    with db.session() as session:
        return [tuple(r) for r in session.execute(select(Prediction.index, Prediction.label)
                                                  .where(Prediction.job_id == job_id).order_by(Prediction.index))]


def _job(job_id: str) -> Job:
    with db.session() as session:
        job = session.get(Job, job_id)
        session.expunge(job)
        return job


def _handled(stack: _Stack) -> int:
    """Messages the worker has finished with (Celery logs one "succeeded" line per task run, dropped ones too)."""
    return (stack.directory / "worker0.log").read_text(errors="replace").count("] succeeded in ")


def test_job_cancelled_while_its_message_waits_never_starts(on_running):
    stack, client, model_id = on_running
    cancelled_id = _classify_row(model_id, TEXTS)
    assert client.post(f"/api/v1/jobs/{cancelled_id}/cancel").get_json()["status"] == "cancelled"
    handled = _handled(stack)
    celery = make_celery(stack.settings)
    enqueue_job(celery, cancelled_id, "classify")  # its message arrives after the cancel
    # a second job queued behind it: the one worker child takes messages in order, so once this one is done the
    # cancelled job's message has been delivered, and dropped
    after = wait_for_job(client, client.post("/api/v1/jobs/classify", json={"model_id": model_id,
                                                                           "texts": TEXTS[:2]}).get_json()["id"])
    assert after["status"] == "succeeded", f"{after}\n{_logs(stack.directory)}"
    wait_until(lambda: _handled(stack) >= handled + 2, 10,
               lambda: f"the worker did not finish with both messages:\n{_logs(stack.directory)}")
    job = _job(cancelled_id)
    assert (job.status, job.attempts, job.started_at, job.worker_id, job.progress) == ("cancelled", 0, None, None, 0.0)
    assert _stored(cancelled_id) == []
    assert redis.Redis.from_url(stack.settings.redis_url).llen("classify") == 0


def test_redelivered_message_resumes_a_dead_workers_job_after_its_stored_rows(on_running):
    stack, client, model_id = on_running
    job_id = _classify_row(model_id, TEXTS)
    earlier = [0, 3, 4]
    with db.session() as session:  # attempt 1 stored three rows, then its worker died: the lease went stale
        session.execute(update(Job).where(Job.id == job_id).values(
            status="running", attempts=1, worker_id="gone-host:4242", started_at=utcnow().replace(year=2000),
            heartbeat_at=utcnow().replace(year=2000)))
        insert_predictions(session, job_id, [{"index": i, "text": TEXTS[i], "label": "from-attempt-1", "score": 1.0,
                                              "scores": {"from-attempt-1": 1.0}} for i in earlier])
    enqueue_job(make_celery(stack.settings), job_id, "classify")  # as the broker redelivers an unacked message
    job = wait_for_job(client, job_id, timeout=120)
    assert (job["status"], job["attempts"]) == ("succeeded", 2), f"{job}\n{_logs(stack.directory)}"
    rows = _stored(job_id)
    assert [i for i, _ in rows] == list(range(len(TEXTS)))  # every index exactly once
    assert [label for i, label in rows if i in earlier] == ["from-attempt-1"] * 3  # kept, not classified again
    assert all(label in LABELS for i, label in rows if i not in earlier)
    assert job["metrics"]["classified"] == len(TEXTS)
    assert job["metrics"]["label_counts"] == dict(Counter(label for _, label in rows))


def test_reconciler_resends_a_job_whose_message_was_lost(on_running):
    stack, client, model_id = on_running
    job_id = _classify_row(model_id, TEXTS[:4])
    with db.session() as session:  # its message was "sent" long ago and lost: Redis has nothing for it
        session.execute(update(Job).where(Job.id == job_id).values(enqueued_at=utcnow().replace(year=2000)))
    broker = redis.Redis.from_url(stack.settings.redis_url)
    assert all(broker.llen(queue) == 0 for queue in QUEUES.split(","))
    time.sleep(1)  # the running worker has no message for it: nothing runs the job without the reconciler
    assert _job(job_id).status == "queued"
    make_celery(stack.settings).send_task(RECONCILE_TASK, queue=QUEUE_FOR_TASK[RECONCILE_TASK])  # one pass
    job = wait_for_job(client, job_id, timeout=120)
    assert (job["status"], job["attempts"]) == ("succeeded", 1), f"{job}\n{_logs(stack.directory)}"
    assert _job(job_id).enqueued_at.year != 2000  # the reconciler recorded its re-send
    assert [i for i, _ in _stored(job_id)] == [0, 1, 2, 3]


def test_predict_calls_a_dead_workers_drainer_had_taken_are_run_by_the_live_worker(on_running):
    """Ids a drainer popped sit on its own list until their batch is done; when its process died (its holder key is
    gone), the live worker's lane keeper gives them back to the lane within one pass (every 5 s) and its drainers run
    them: each job succeeds once, well inside /predict's wait, not after the reconciler's REQUEUE_AFTER_S."""
    from core import predict_lane

    stack, client, model_id = on_running
    ids = [_classify_row(model_id, [text]) for text in TEXTS[:3]]
    broker = redis.Redis.from_url(stack.settings.redis_url)
    dead = predict_lane.taken_key("gone-host:4242", 0)
    broker.rpush(dead, *ids)  # popped by a drainer of a process that was SIGKILLed: no holder key refreshes it
    started = time.monotonic()
    for job_id in ids:
        job = wait_for_job(client, job_id, timeout=60)
        assert (job["status"], job["attempts"]) == ("succeeded", 1), f"{job}\n{_logs(stack.directory)}"
        assert job["metrics"].get("batch_jobs") is not None  # run by the lane, not by a Celery message
        assert [i for i, _ in _stored(job_id)] == [0]
    assert time.monotonic() - started < 25  # a keeper pass is every 5 s; the reconciler would wait 300 s
    assert not broker.exists(dead)
