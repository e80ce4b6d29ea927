"""POST /api/v1/jobs/train: dataset and column checks, then commit, then enqueue."""
from __future__ import annotations

from sqlalchemy import func, select

from core.db import db
from core.schema import Job
from core.specs import TrainRequest
from web import schemas

from .factories import make_dataset
from .helpers import assert_error


def job_count() -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(Job))


def test_train_job_is_committed_then_enqueued(client, sent):
    dataset_id = make_dataset()
    body = {"dataset_id": dataset_id, "text_column": "text", "label_column": "label", "epochs": 2,
            "family": "bert_lstm", "lstm_hidden": 64, "bidirectional": False, "class_weights": "balanced"}
    response = client.post("/api/v1/jobs/train", json=body)
    assert response.status_code == 202, response.json
    job = response.json
    schemas.Job.model_validate(job)
    assert job["type"] == "train" and job["status"] == "queued" and job["progress"] == 0
    assert job["dataset_id"] == dataset_id and job["attempts"] == 0
    assert response.headers["Location"] == f"/api/v1/jobs/{job['id']}"
    assert sent == [(job["id"], "train")]
    # the worker reads params back as a TrainRequest: they must round-trip exactly
    with db.session() as session:
        params = session.get(Job, job["id"]).params
    assert TrainRequest.model_validate(params).model_dump(mode="json") == params
    assert params["label_columns"] == ["label"] and params["lstm_hidden"] == 64 and params["epochs"] == 2


def test_unknown_column_is_422(client, sent):
    dataset_id = make_dataset()
    body = {"dataset_id": dataset_id, "text_column": "body", "label_column": "label"}
    error = assert_error(client.post("/api/v1/jobs/train", json=body), 422, "unknown_column")
    assert "'body'" in error["message"] and "text, label, topic" in error["message"]
    assert job_count() == 0 and sent == []


def test_one_class_only_is_422(client, sent):
    dataset_id = make_dataset(b"text,label\na,pos\nb,pos\nc,\n")
    body = {"dataset_id": dataset_id, "text_column": "text", "label_column": "label"}
    error = assert_error(client.post("/api/v1/jobs/train", json=body), 422, "too_few_classes")
    assert "at least 2 classes" in error["message"]
    assert job_count() == 0 and sent == []


def test_text_column_as_label_is_422(client):
    dataset_id = make_dataset()
    body = {"dataset_id": dataset_id, "text_column": "label", "label_column": "label"}
    assert_error(client.post("/api/v1/jobs/train", json=body), 422, "invalid_columns")


def test_unknown_dataset_is_404(client, sent):
    body = {"dataset_id": 12345, "text_column": "text", "label_column": "label"}
    assert_error(client.post("/api/v1/jobs/train", json=body), 404, "not_found")
    assert job_count() == 0 and sent == []


def test_multitask_needs_label_columns(client, sent):
    dataset_id = make_dataset()
    body = {"dataset_id": dataset_id, "text_column": "text", "label_column": "label", "family": "multitask"}
    error = assert_error(client.post("/api/v1/jobs/train", json=body), 422, "validation_error")
    assert "label_columns" in error["message"]
    body = {"dataset_id": dataset_id, "text_column": "text", "label_columns": ["label", "topic"], "family": "bert"}
    assert "multitask" in assert_error(client.post("/api/v1/jobs/train", json=body), 422)["message"]
    assert job_count() == 0 and sent == []


def test_multitask_job(client, sent):
    dataset_id = make_dataset()
    body = {"dataset_id": dataset_id, "text_column": "text", "label_columns": ["label", "topic"], "family": "multitask",
            "task_weights": {"label": 1.0, "topic": 0.5}}
    response = client.post("/api/v1/jobs/train", json=body)
    assert response.status_code == 202, response.json
    assert response.json["params"]["label_columns"] == ["label", "topic"]
    assert response.json["params"]["label_column"] == "label"


def test_multitask_checks_every_label_column(client):
    dataset_id = make_dataset(b"text,label,topic\na,pos,x\nb,neg,x\n")
    body = {"dataset_id": dataset_id, "text_column": "text", "label_columns": ["label", "topic"], "family": "multitask"}
    error = assert_error(client.post("/api/v1/jobs/train", json=body), 422, "too_few_classes")
    assert "'topic'" in error["message"]


def test_enqueue_failure_keeps_the_job_queued(client, sent, monkeypatch):
    def broker_down(*args):
        raise ConnectionError("redis is down")

    monkeypatch.setattr("web.services.enqueue_job", broker_down)
    dataset_id = make_dataset()
    response = client.post("/api/v1/jobs/train", json={"dataset_id": dataset_id, "text_column": "text",
                                                        "label_column": "label"})
    assert response.status_code == 202  # safe in SQL: the reconciler re-sends queued jobs
    assert client.get(response.headers["Location"]).json["status"] == "queued"
