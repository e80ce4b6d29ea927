"""Dataset classification on the real classification worker (threads pool, the command ``make run`` uses), the
reconciler process, the real Redis server and PostgreSQL, with a tiny saved model.

A few thousand rows classify to exactly one prediction per non-empty row (while a ``/predict`` call is served
alongside); and a worker killed mid-job (SIGKILL of its whole process group: no ack, no cleanup) leaves a stale
lease that the next worker's reconciler notices, so the job is re-sent, resumed after the stored rows, and
finishes with every row exactly once on its second attempt.
"""
from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis
from sqlalchemy import func, select

from core.config import Settings
from core.db import db
from core.schema import Job, Prediction
from tests.factories import api_client, migrate, save_tiny_model, tiny_model_row

from .conftest import wait_for_job

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

REPO_ROOT = Path(__file__).resolve().parents[2]
REDIS_DB = 11  # a database of its own on the shared server (test_real_worker uses 12), flushed before each test
# A killed worker's job goes stale quickly, with room to spare for a healthy worker's first heartbeat on a busy
# CI machine (the lease keeper renews from the claim on, through the cold model load).
LEASE_SECONDS = 10
LABELS = ["neg", "pos"]


@pytest.fixture(scope="module")
def model_dir(tiny_bert_dir, tokenizer, tmp_path_factory):
    return save_tiny_model("bert", {"sentiment": LABELS}, tiny_bert_dir, tokenizer,
                           tmp_path_factory.mktemp("real-classify") / "model", seed=21)


@pytest.fixture
def stack(tmp_path, postgres_schema_url, redis_url, model_dir):
    """A migrated PostgreSQL schema, a clean Redis database, the web client, a model row, and a launcher for
    classification workers started with ``scripts/run_stack.celery_worker_commands()["classify"]``."""
    from scripts.run_stack import celery_worker_commands, reconciler_command
    from web import create_app

    broker = redis_url.rsplit("/", 1)[0] + f"/{REDIS_DB}"
    redis.Redis.from_url(broker).flushdb()
    migrate(postgres_schema_url)
    settings = Settings(
        database_url=postgres_schema_url, redis_url=broker, model_store=str(tmp_path / "store"), device="cpu",
        secret_key="test", celery_eager=False, lease_seconds=LEASE_SECONDS, requeue_after_s=LEASE_SECONDS,
        reconcile_every_s=1.0, predict_timeout_s=120,
    )
    env = dict(os.environ, DATABASE_URL=settings.database_url, REDIS_URL=broker, MODEL_STORE=settings.model_store,
               DEVICE="cpu", LEASE_SECONDS=str(LEASE_SECONDS), REQUEUE_AFTER_S=str(LEASE_SECONDS),
               RECONCILE_EVERY_S="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", CELERY_EAGER="false",
               PYTHONPATH=str(REPO_ROOT))
    client = api_client(create_app({"TESTING": True, "SETTINGS": settings, "WTF_CSRF_ENABLED": False}))
    model_id = tiny_model_row(model_dir, LABELS)
    workers: list[subprocess.Popen] = []

    def start_worker(**extra_env: str) -> subprocess.Popen:
        n = len(workers)
        argv = celery_worker_commands(4)["classify"]
        argv = [f"classify{n}@%h" if part == "classify@%h" else part for part in argv]  # a node name of its own
        log_path = tmp_path / f"worker{n}.log"
        with open(log_path, "wb") as log:  # the child keeps its own descriptor
            # its own process group, so a kill takes its pool with it, like a crashed machine
            process = subprocess.Popen(argv, cwd=REPO_ROOT, env={**env, **extra_env}, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        workers.append(process)
        deadline = time.monotonic() + 90
        while b" ready." not in log_path.read_bytes():
            assert process.poll() is None, f"worker exited:\n{_logs(tmp_path)}"
            assert time.monotonic() < deadline, f"worker not ready:\n{_logs(tmp_path)}"
            time.sleep(0.2)
        return process

    with open(tmp_path / "reconciler.log", "wb") as log:  # re-sends the messages of jobs a killed worker held
        workers.append(subprocess.Popen(reconciler_command(), cwd=REPO_ROOT, env=env, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True))
    yield client, model_id, start_worker, tmp_path
    for process in workers:
        if process.poll() is None:
            _signal_group(process, signal.SIGTERM)
    for process in workers:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        _signal_group(process, signal.SIGKILL)  # the group's stragglers, or a worker that hung
        process.wait()


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass


def _logs(tmp_path: Path) -> str:
    return "\n".join(p.read_text(errors="replace")[-4000:] for p in sorted(tmp_path.glob("worker*.log")))


def _dataset(n: int) -> tuple[bytes, list[tuple[int, str, str]]]:
    """n rows of (tweet_id, body); every 50th body empty. Returns the CSV and the (index, id, text) to expect."""
    words = ["flight", "delayed", "crew", "great", "lost", "bag", "seat", "thanks", "never", "again", "refund"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["tweet_id", "body"])
    wanted = []
    for i in range(n):
        text = "" if i % 50 == 7 else f"tweet {i} " + " ".join(words[(i * k) % len(words)] for k in range(i % 9))
        writer.writerow([f"id{i}", text])
        if text:
            wanted.append((i, f"id{i}", text))
    return out.getvalue().encode(), wanted


def _upload(client, data: bytes) -> int:
    response = client.post("/api/v1/datasets", data={"file": (io.BytesIO(data), "tweets.csv")},
                           content_type="multipart/form-data")
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def _stored(job_id: str) -> list[Prediction]:
    with db.session() as session:
        return session.scalars(select(Prediction).where(Prediction.job_id == job_id).order_by(Prediction.index)).all()


def _count(job_id: str) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(Prediction).where(Prediction.job_id == job_id))


def _assert_exact(rows: list[Prediction], wanted: list[tuple[int, str, str]], model_dir: Path) -> None:
    """One row per wanted index (none twice, none missing), with its id and text, and the model's answer."""
    from ml.inference import Predictor

    assert len(rows) == len(wanted)
    assert [(r.index, r.row_id, r.text) for r in rows] == wanted
    expected = Predictor.load(model_dir).predict([text for _, _, text in wanted])
    for row, want in zip(rows, expected):
        assert row.label == want["label"]
        assert row.scores == pytest.approx(want["scores"], abs=1e-5)


def test_dataset_classification_with_the_real_classify_worker(stack, model_dir):
    client, model_id, start_worker, tmp_path = stack
    start_worker()
    data, wanted = _dataset(3000)
    dataset_id = _upload(client, data)
    response = client.post("/api/v1/jobs/classify", json={"model_id": model_id, "dataset_id": dataset_id,
                                                          "text_column": "body", "id_column": "tweet_id"})
    assert response.status_code == 202, response.get_json()
    job_id = response.get_json()["id"]
    # an interactive call on the same model while the dataset job is queued or running
    texts = ["@united thanks, the crew was amazing!", "worst flight ever, lost my bag"]
    answer = client.post("/api/v1/predict", json={"model_id": model_id, "texts": texts, "timeout_s": 120})
    assert answer.status_code == 200, f"{answer.get_json()}\n{_logs(tmp_path)}"
    assert [p["text"] for p in answer.get_json()["predictions"]] == texts

    job = wait_for_job(client, job_id, timeout=180)
    assert job["status"] == "succeeded", f"{job['error']}\n{_logs(tmp_path)}"
    assert (job["attempts"], job["progress"]) == (1, 1.0), _logs(tmp_path)
    assert job["metrics"]["classified"] == len(wanted)
    assert job["metrics"]["skipped_empty"] == 3000 - len(wanted)
    assert sum(job["metrics"]["label_counts"].values()) == len(wanted)
    _assert_exact(_stored(job_id), wanted, model_dir)


def test_killed_classify_worker_job_resumes_on_a_new_worker(stack, model_dir):
    client, model_id, start_worker, tmp_path = stack
    # small batches make the job take several seconds, so the kill lands between two chunks' commits
    first = start_worker(MAX_BATCH_SIZE="4")
    data, wanted = _dataset(4000)
    dataset_id = _upload(client, data)
    response = client.post("/api/v1/jobs/classify", json={"model_id": model_id, "dataset_id": dataset_id,
                                                          "text_column": "body", "id_column": "tweet_id"})
    job_id = response.get_json()["id"]
    deadline = time.monotonic() + 120
    while _count(job_id) == 0:  # the first chunk is committed
        assert time.monotonic() < deadline, f"no predictions stored\n{_logs(tmp_path)}"
        assert first.poll() is None, _logs(tmp_path)
        time.sleep(0.05)
    _signal_group(first, signal.SIGKILL)  # worker and its threads: gone mid-job
    first.wait()
    before = {r.index: r.id for r in _stored(job_id)}
    assert 0 < len(before) < len(wanted), "the job finished before the kill: make it longer"
    job = client.get(f"/api/v1/jobs/{job_id}").get_json()
    assert (job["status"], job["attempts"]) == ("running", 1)

    start_worker()  # the reconciler re-sends the job once its lease is stale (or the dead pid frees it)
    job = wait_for_job(client, job_id, timeout=180)
    assert job["status"] == "succeeded", f"{job}\n{_logs(tmp_path)}"
    assert job["attempts"] == 2
    rows = _stored(job_id)
    _assert_exact(rows, wanted, model_dir)
    assert {r.index: r.id for r in rows if r.index in before} == before  # the first attempt's rows untouched
    assert job["metrics"]["skipped_empty"] == 4000 - len(wanted)
    assert sum(job["metrics"]["label_counts"].values()) == len(wanted)
    with db.session() as session:
        assert session.scalar(select(Job.worker_id).where(Job.id == job_id)).split(":")[-1] != str(first.pid)
