"""End to end in Celery eager mode with MODEL_STORE=sql (issue 19 part 2): training publishes into the database,
classification, evaluation and downloads read through this host's cache, an import is stored the same way, and a
delete empties the store and the cache. (tests/integration/test_multi_host.py runs real processes on separate
caches.)"""
from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import select

import worker.tasks  # noqa: F401  (registers the tasks, so eager sends run them in-process)
from core import runtime
from core.db import db
from core.schema import ModelFile, TrainedModel
from tests.web.test_model_import import post

from .conftest import sample_csv, upload, wait_for_job

TEXTS = ["@united thanks, the crew was amazing!", "worst flight ever, lost my bag", "flight 123 lands at 5pm"]


@pytest.fixture
def settings(settings, tmp_path):
    """The shared test settings with the SQL store and a cache of this test's own."""
    return runtime.configure(settings.replace(model_store="sql", model_cache_dir=str(tmp_path / "cache")))


def _stored_keys() -> set[str]:
    with db.session() as session:
        return set(session.scalars(select(ModelFile.artifact_key)))


def _artifact_dir(model_id: int) -> str:
    with db.session() as session:
        return session.get(TrainedModel, model_id).artifact_dir


def _classify(client, model_id: int) -> list[str]:
    response = client.post("/api/v1/jobs/classify", json={"model_id": model_id, "texts": TEXTS})
    assert response.status_code == 202, response.get_json()
    job = wait_for_job(client, response.get_json()["id"])
    assert job["status"] == "succeeded", job["error"]
    return [item["label"] for item in client.get(f"/api/v1/jobs/{job['id']}/predictions").get_json()["items"]]


def test_train_classify_download_import_delete_through_the_sql_store(client, settings, tiny_encoders, tmp_path):
    from ml.inference import clear_predictor_cache

    cache = Path(settings.model_cache_dir)
    dataset_id = upload(client, sample_csv(40))
    response = client.post("/api/v1/jobs/train", json={
        "dataset_id": dataset_id, "text_column": "text", "label_column": "sentiment", "family": "bert",
        "pooling": "pooler", "encoder": str(tiny_encoders["bert"]), "epochs": 1, "batch_size": 8, "max_length": 32,
        "seed": 1, "name": "air"})
    job = wait_for_job(client, response.get_json()["id"])
    assert job["status"] == "succeeded", job["error"]
    artifact_dir = _artifact_dir(job["model_id"])
    assert artifact_dir == f"sql:{job['id']}-1" and _stored_keys() == {f"{job['id']}-1"}
    assert not (tmp_path / "models").exists()  # nothing in a model directory
    assert list((cache / "tmp").iterdir()) == []  # the training's scratch folder is gone

    labels = _classify(client, job["model_id"])  # fetched into the cache, then loaded
    assert (cache / "models" / f"{job['id']}-1" / "model.safetensors").is_file()

    shutil.rmtree(cache)  # another host: an empty cache
    clear_predictor_cache()
    assert _classify(client, job["model_id"]) == labels
    download = client.get(f"/api/v1/models/{job['model_id']}/download")
    assert download.status_code == 200
    data = download.get_data()
    assert "config.json" in zipfile.ZipFile(io.BytesIO(data)).namelist()

    imported = post(client, data, name="air")
    assert imported.status_code == 201, imported.get_json()
    imported_dir = _artifact_dir(imported.get_json()["id"])
    assert imported_dir.startswith("sql:imported-") and len(_stored_keys()) == 2
    assert _classify(client, imported.get_json()["id"]) == labels

    dataset = upload(client, sample_csv(20), name="gold")
    response = client.post("/api/v1/jobs/evaluate", json={"model_id": job["model_id"], "dataset_id": dataset,
                                                          "text_column": "text", "label_column": "sentiment"})
    assert wait_for_job(client, response.get_json()["id"])["status"] == "succeeded"

    assert client.delete(f"/api/v1/models/{job['model_id']}").status_code == 200
    assert _stored_keys() == {imported_dir.removeprefix("sql:")}
    assert not (cache / "models" / f"{job['id']}-1").exists()
    response = client.get(f"/api/v1/models/{job['model_id']}/download")
    assert response.status_code == 410


def test_a_model_whose_stored_files_are_gone_answers_model_files_missing(client, settings):
    from tests.factories import tiny_model_row

    model_id = tiny_model_row("sql:vanished-1", ["a", "b"])  # type: ignore[arg-type]
    response = client.get(f"/api/v1/models/{model_id}/download")
    assert response.status_code == 410 and response.get_json()["error"]["code"] == "model_files_missing"
    response = client.post("/api/v1/jobs/classify", json={"model_id": model_id, "texts": TEXTS})
    job = wait_for_job(client, response.get_json()["id"])
    assert job["status"] == "failed" and "missing from the model store" in job["error"]


def test_an_unreachable_store_answers_503_and_keeps_nothing(client, settings, tmp_path, monkeypatch):
    from sqlalchemy.exc import OperationalError

    from core import artifacts
    from tests.factories import tiny_model_row

    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("bertqueue_config.json", "model.safetensors"):
        (folder / name).write_text("{}")
    model_id = tiny_model_row(artifacts.publish(settings, folder, "job-1"), ["a", "b"])  # type: ignore[arg-type]

    def unreachable(key, target):
        (target / "model.safetensors").write_bytes(b"half")
        raise OperationalError("SELECT", {}, Exception("could not connect to server"))

    monkeypatch.setattr(artifacts, "_download", unreachable)
    monkeypatch.setattr(artifacts, "FETCH_RETRY_S", 0.3)
    response = client.get(f"/api/v1/models/{model_id}/download")
    assert response.status_code == 503 and response.get_json()["error"]["code"] == "model_store_unavailable"
    cache = Path(settings.model_cache_dir)
    assert not (cache / "models" / "job-1").exists() and list((cache / "downloads").iterdir()) == []


def test_a_job_whose_model_store_is_unreachable_waits_and_retries_instead_of_failing(
        client, settings, tmp_path, monkeypatch, tiny_bert_dir, tokenizer):
    """Issue 19: the store unreachable (or every download corrupt) for FETCH_RETRY_S gives the job back for a later
    attempt (the reconciler re-sends it), never a failure for that reason alone, until its attempts run out."""
    from datetime import timedelta

    from sqlalchemy.exc import OperationalError

    from core import artifacts, jobs
    from core.schema import Job, utcnow
    from tests.factories import save_tiny_model, tiny_model_row
    from worker.jobs.classify import run_classification

    folder = save_tiny_model("bert", {"sentiment": ["neg", "pos"]}, tiny_bert_dir, tokenizer, tmp_path / "m", seed=3)
    model_id = tiny_model_row(artifacts.publish(settings, folder, "job-2"), ["neg", "pos"])  # type: ignore[arg-type]
    real = artifacts._download

    def unreachable(key, target):
        raise OperationalError("SELECT", {}, Exception("could not connect to server"))

    monkeypatch.setattr(artifacts, "_download", unreachable)
    monkeypatch.setattr(artifacts, "FETCH_RETRY_S", 0.3)
    job_id = client.post("/api/v1/jobs/classify", json={"model_id": model_id, "texts": TEXTS}).get_json()["id"]
    job = client.get(f"/api/v1/jobs/{job_id}").get_json()
    assert job["status"] == "running" and job["attempts"] == 1
    assert job["error"].startswith("waiting for the model store: could not fetch model")
    with db.session() as session:
        assert session.get(Job, job_id).heartbeat_at is None  # no lease: the next message may take it at once
        later = utcnow() + timedelta(seconds=settings.lease_seconds + 1)
        due = jobs.lost_jobs(session, requeue_after_s=settings.requeue_after_s,
                             lease_seconds=settings.lease_seconds, now=later)
    assert (job_id, "classify") in due  # the reconciler re-sends it once a lease's time has passed

    monkeypatch.setattr(artifacts, "_download", real)  # the store is back
    run_classification(job_id)
    job = client.get(f"/api/v1/jobs/{job_id}").get_json()
    assert (job["status"], job["attempts"], job["error"]) == ("succeeded", 2, None)
    assert len(client.get(f"/api/v1/jobs/{job_id}/predictions").get_json()["items"]) == len(TEXTS)

    # a store that never comes back: the attempts run out, and the failure says why
    monkeypatch.setattr(artifacts, "_download", unreachable)
    shutil.rmtree(Path(settings.model_cache_dir) / "models", ignore_errors=True)
    from ml.inference import clear_predictor_cache

    clear_predictor_cache()
    job_id = client.post("/api/v1/jobs/classify", json={"model_id": model_id, "texts": TEXTS}).get_json()["id"]
    for _ in range(settings.job_max_attempts):
        run_classification(job_id)
    job = client.get(f"/api/v1/jobs/{job_id}").get_json()
    assert job["status"] == "failed" and job["attempts"] == settings.job_max_attempts
    assert job["error"].startswith(f"gave up after {settings.job_max_attempts} attempts (waiting for the model store")
