"""Versions by name and deleting a model, end to end in eager mode with tiny trained models: references pick the
version, a delete is refused while a job uses the model, then removes its files and drops it from the predictor
cache (the worker's remote-control command, lazily on lookup, and through a real Redis broadcast); the worker
refuses a job whose model was deleted; old jobs and predictions stay readable."""
from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path

import pytest

from core import jobs
from core.config import Settings
from core.db import db
from core.evaluation import plan_evaluation
from core.queue import DROP_MODEL_COMMAND, broadcast_model_deleted, make_celery
from core.schema import Job, JobType, TrainedModel
from ml import inference

from .conftest import sample_csv, upload, wait_for_job

import worker.tasks  # noqa: F401  (registers the tasks and the remote-control command)
from celery.worker.control import Panel

TEXTS = ["thanks, the crew was amazing!", "worst flight ever"]


def _train(client, dataset_id: int, encoder: Path) -> dict:
    body = {"dataset_id": dataset_id, "text_column": "text", "label_column": "sentiment", "family": "bert",
            "encoder": str(encoder), "epochs": 1, "batch_size": 8, "max_length": 16, "validation_split": 0.25,
            "seed": 1, "name": "tweets"}
    response = client.post("/api/v1/jobs/train", json=body)
    assert response.status_code == 202, response.get_json()
    job = wait_for_job(client, response.get_json()["id"])
    assert job["status"] == "succeeded", job["error"]
    return client.get(f"/api/v1/models/{job['model_id']}").get_json()


def _classify(client, **model) -> dict:
    response = client.post("/api/v1/jobs/classify", json={**model, "texts": TEXTS})
    assert response.status_code == 202, response.get_json()
    return wait_for_job(client, response.get_json()["id"])


def _artifact_dir(model_id: int) -> str:
    with db.session() as session:
        return session.get(TrainedModel, model_id).artifact_dir


def _cached(model_dir: str) -> bool:
    path = str(Path(model_dir).resolve())
    return any(key[0] == path for key in inference._cache)


@pytest.fixture
def two_versions(client, tiny_encoders):
    """Two trainings under one name: tweets v1 and v2."""
    inference.clear_predictor_cache()
    dataset_id = upload(client, sample_csv(32))
    v1, v2 = _train(client, dataset_id, tiny_encoders["bert"]), _train(client, dataset_id, tiny_encoders["bert"])
    yield v1, v2, dataset_id
    inference.clear_predictor_cache()


def test_versions_references_and_delete(client, two_versions):
    v1, v2, dataset_id = two_versions
    assert (v1["name"], v1["version"], v2["name"], v2["version"]) == ("tweets", 1, "tweets", 2)
    assert [m["id"] for m in client.get("/api/v1/models?name=tweets").get_json()["items"]] == [v2["id"], v1["id"]]
    latest = _classify(client, model="tweets")
    assert latest["status"] == "succeeded" and latest["model_id"] == v2["id"]
    first = _classify(client, model="tweets:1")
    assert first["status"] == "succeeded" and first["model_id"] == v1["id"]
    v2_dir = _artifact_dir(v2["id"])
    assert _cached(v2_dir)

    # a queued job uses v2: refused, nothing changed
    with db.session() as session:
        queued = jobs.create_job(session, JobType.CLASSIFY, {"model_id": v2["id"], "texts": ["x"]},
                                 model_id=v2["id"]).id
    error = client.delete(f"/api/v1/models/{v2['id']}").get_json()["error"]
    assert error["code"] == "model_in_use" and error["job_ids"] == [queued]
    assert Path(v2_dir, "model.safetensors").exists()
    assert client.post(f"/api/v1/jobs/{queued}/cancel").status_code == 200

    response = client.delete(f"/api/v1/models/{v2['id']}")
    assert response.status_code == 200 and response.get_json()["deleted_at"]
    assert not Path(v2_dir).exists() and Path(_artifact_dir(v1["id"])).exists()
    # the old job and its predictions stay readable
    page = client.get(f"/api/v1/jobs/{latest['id']}/predictions").get_json()
    assert [p["text"] for p in page["items"]] == TEXTS and page["job_status"] == "succeeded"
    assert client.get(f"/api/v1/jobs/{latest['id']}/export").status_code == 200
    # it cannot be used any more; the bare name now means v1
    for body in ({"model_id": v2["id"]}, {"model": "tweets:2"}):
        response = client.post("/api/v1/jobs/classify", json={**body, "texts": TEXTS})
        assert response.status_code == 409 and response.get_json()["error"]["code"] == "model_deleted"
        response = client.post("/api/v1/jobs/evaluate", json={**body, "dataset_id": dataset_id})
        assert response.status_code == 409 and response.get_json()["error"]["code"] == "model_deleted"
    assert _classify(client, model="tweets")["model_id"] == v1["id"]

    # eager mode broadcasts nothing: the cached copy goes on its next lookup, its directory being gone
    assert _cached(v2_dir)
    with pytest.raises(ValueError, match="not a saved bertqueue model"):
        inference.get_predictor(v2_dir)
    assert not _cached(v2_dir) and _cached(_artifact_dir(v1["id"]))


def test_worker_refuses_a_job_of_a_deleted_model(client, two_versions):
    _v1, v2, dataset_id = two_versions
    plan = plan_evaluation(v2["family"], v2["tasks"], v2["params"], text_column=None, text_pair_column=None,
                           label_column=None, label_columns=None)
    with db.session() as session:  # jobs that got past the web somehow (e.g. queued before an upgrade)
        classify = jobs.create_job(session, JobType.CLASSIFY, {"model_id": v2["id"], "texts": TEXTS},
                                   model_id=v2["id"]).id
        evaluate = jobs.create_job(session, JobType.EVALUATE, {"model_id": v2["id"], "dataset_id": dataset_id,
                                                               **plan.to_params(), "text_count": 32},
                                   model_id=v2["id"], dataset_id=dataset_id).id
        session.get(TrainedModel, v2["id"]).deleted_at = session.get(Job, classify).created_at
    worker.tasks.classify.apply(args=[classify])
    worker.tasks.evaluate.apply(args=[evaluate])
    for job_id in (classify, evaluate):
        job = client.get(f"/api/v1/jobs/{job_id}").get_json()
        assert job["status"] == "failed" and f"model {v2['id']} (tweets:2) was deleted" in job["error"]


def test_drop_model_command_drops_every_cached_copy(client, two_versions):
    v1, v2, _ = two_versions
    _classify(client, model_id=v1["id"])
    _classify(client, model_id=v2["id"])
    v1_dir, v2_dir = _artifact_dir(v1["id"]), _artifact_dir(v2["id"])
    inference.get_predictor(v2_dir, quantize=True)  # a second copy of v2 (int8)
    assert sum(key[0] == str(Path(v2_dir).resolve()) for key in inference._cache) == 2
    assert Panel.data[DROP_MODEL_COMMAND](None, model_dir=v2_dir) == {"ok": "dropped 2"}
    assert not _cached(v2_dir) and _cached(v1_dir)
    assert inference.drop_predictor(v2_dir) == 0


def test_broadcast_reaches_a_worker_through_redis(client, two_versions, redis_url):
    """The web's broadcast (core.queue) delivered by a real Redis to a worker's mailbox runs the registered command."""
    v1, _v2, _ = two_versions
    _classify(client, model_id=v1["id"])
    v1_dir = _artifact_dir(v1["id"])
    assert _cached(v1_dir)
    # a database of its own, so no other worker on this Redis receives the test's broadcast
    app = make_celery(Settings(redis_url=redis_url.rsplit("/", 1)[0] + "/13", celery_eager=False))
    with app.connection_for_read() as connection:  # the worker's side: its mailbox, as celery's worker makes it
        node = app.control.mailbox(connection).Node(f"test-{uuid.uuid4().hex[:8]}@host", state=None,
                                                    channel=connection.channel(),
                                                    handlers={DROP_MODEL_COMMAND: Panel.data[DROP_MODEL_COMMAND]})
        consumer = node.listen()
        try:
            _drain(connection, 0.5)  # the fanout subscription is made on the first poll: a broadcast reaches
            assert broadcast_model_deleted(app, v1_dir) is True  # the workers listening when it is sent
            deadline = time.monotonic() + 10
            while _cached(v1_dir) and time.monotonic() < deadline:
                _drain(connection, 0.5)
        finally:
            consumer.cancel()
    assert not _cached(v1_dir)


def _drain(connection, seconds: float) -> None:
    try:
        connection.drain_events(timeout=seconds)
    except socket.timeout:
        pass


def test_broadcast_gives_up_on_a_broker_that_does_not_answer():
    app = make_celery(Settings(redis_url="redis://127.0.0.1:1/0", celery_eager=False))
    with pytest.raises(Exception):  # noqa: B017 - kombu's OperationalError; the web logs it and carries on
        broadcast_model_deleted(app, "/nowhere")
    assert broadcast_model_deleted(make_celery(Settings(celery_eager=True)), "/nowhere") is False
