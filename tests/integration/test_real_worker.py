"""The platform against a real Celery worker process, the real Redis server and PostgreSQL.

One short training with the real packaged all-MiniLM-L6-v2 encoder, then classification through both the job
API and the waiting predict endpoint; and crash recovery: a worker child killed mid-job is replaced, the job's
message is redelivered, the stale lease is reclaimed and the job still succeeds exactly once.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import redis

from core.config import Settings
from tests.factories import migrate

from .conftest import sample_csv, upload, wait_for_job

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

REPO_ROOT = Path(__file__).resolve().parents[2]
REDIS_DB = 12  # a database of its own on the shared server, flushed before each test


@pytest.fixture
def stack(tmp_path, postgres_schema_url, redis_url):
    """A migrated PostgreSQL schema, a clean Redis database, settings for both, and a worker launcher."""
    broker = redis_url.rsplit("/", 1)[0] + f"/{REDIS_DB}"
    redis.Redis.from_url(broker).flushdb()
    migrate(postgres_schema_url)
    settings = Settings(
        database_url=postgres_schema_url, redis_url=broker, model_store=str(tmp_path / "store"), device="cpu",
        secret_key="test", celery_eager=False, lease_seconds=4, predict_timeout_s=120,
    )
    env = dict(os.environ, DATABASE_URL=settings.database_url, REDIS_URL=broker, MODEL_STORE=settings.model_store,
               DEVICE="cpu", LEASE_SECONDS="4", HF_HUB_OFFLINE="1", CELERY_EAGER="false", PYTHONPATH=str(REPO_ROOT))
    workers: list[subprocess.Popen] = []

    def start_worker() -> subprocess.Popen:
        log = open(tmp_path / f"worker{len(workers)}.log", "wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", "train,classify",
             "--concurrency", "1", "--loglevel", "INFO", "--without-gossip", "--without-mingle",
             "-n", f"test{len(workers)}@%h"],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        workers.append(process)
        return process

    yield settings, start_worker, tmp_path
    for process in workers:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in workers:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def _client(settings: Settings):
    from web import create_app

    return create_app({"TESTING": True, "SETTINGS": settings, "WTF_CSRF_ENABLED": False}).test_client()


def _logs(tmp_path: Path) -> str:
    return "\n".join(p.read_text(errors="replace")[-4000:] for p in sorted(tmp_path.glob("worker*.log")))


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
    deadline = time.monotonic() + 60
    while client.get(f"/api/v1/jobs/{job_id}").get_json()["progress"] <= 0 and time.monotonic() < deadline:
        time.sleep(0.2)
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
