"""Evaluation jobs end to end in Celery eager mode: REST upload -> evaluate -> metrics, checked against the same
model's classification of the same rows (no hard-coded numbers)."""
from __future__ import annotations

import csv
import io

import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
from sqlalchemy import update

from core.db import db
from core.schema import TrainedModel
from tests.factories import save_tiny_model, tiny_model_row

from .conftest import sample_csv, upload, wait_for_job

import worker.tasks  # noqa: F401  (registers the tasks, so eager sends run them in-process)

LABELS = ["negative", "neutral", "positive"]


@pytest.fixture(scope="module")
def model_dir(tiny_bert_dir, tokenizer, tmp_path_factory):
    return save_tiny_model("bert", {"sentiment": LABELS}, tiny_bert_dir, tokenizer,
                           tmp_path_factory.mktemp("evaluation") / "model", seed=7)


def _rows(data: bytes) -> list[dict]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"))))


def _evaluate(client, **body) -> dict:
    response = client.post("/api/v1/jobs/evaluate", json=body)
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["type"] == "evaluate"
    return wait_for_job(client, response.get_json()["id"])


def test_evaluation_matches_the_models_own_predictions(client, model_dir):
    data = sample_csv(50)
    dataset_id = upload(client, data)
    model_id = tiny_model_row(model_dir, LABELS)
    job = _evaluate(client, model_id=model_id, dataset_id=dataset_id, text_column="text", label_column="sentiment")
    assert job["status"] == "succeeded", job["error"]
    metrics = job["metrics"]

    rows = [r for r in _rows(data) if r["text"].strip() and r["sentiment"].strip()]
    response = client.post("/api/v1/jobs/classify", json={"model_id": model_id, "texts": [r["text"] for r in rows]})
    classify = wait_for_job(client, response.get_json()["id"])
    predicted = [item["label"] for item in client.get(
        f"/api/v1/jobs/{classify['id']}/predictions?limit=1000").get_json()["items"]]
    truth = [r["sentiment"] for r in rows]

    assert metrics["examples"] == len(rows) == sum(map(sum, metrics["confusion_matrix"]["matrix"]))
    assert metrics["confusion_matrix"] == {"labels": LABELS,
                                           "matrix": confusion_matrix(truth, predicted, labels=LABELS).tolist()}
    assert metrics["accuracy"] == pytest.approx(accuracy_score(truth, predicted), abs=1e-6)
    assert metrics["macro_f1"] == pytest.approx(
        f1_score(truth, predicted, labels=LABELS, average="macro", zero_division=0), abs=1e-6)
    assert {label: m["support"] for label, m in metrics["per_class"].items()} == {
        label: truth.count(label) for label in LABELS}
    assert job["progress"] == 1.0 and job["eta_seconds"] is None and metrics["device"] == "cpu"

    page = client.get(f"/jobs/{job['id']}").get_data(as_text=True)
    assert page.count('class="cell') == len(LABELS) ** 2 and "per-class" in page


def test_unknown_labels_are_refused_before_anything_runs(client, model_dir):
    dataset_id = upload(client, sample_csv(20))
    model_id = tiny_model_row(model_dir, ["negative", "positive"])  # this model never learnt "neutral"
    response = client.post("/api/v1/jobs/evaluate", json={"model_id": model_id, "dataset_id": dataset_id,
                                                          "text_column": "text", "label_column": "sentiment"})
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "unknown_labels"
    assert response.get_json()["error"]["labels"] == ["neutral"]


def test_a_model_gone_from_disk_fails_the_job_with_a_message(client, model_dir, tmp_path):
    dataset_id = upload(client, sample_csv(20))
    model_id = tiny_model_row(model_dir, LABELS)
    with db.session() as session:
        session.execute(update(TrainedModel).where(TrainedModel.id == model_id)
                        .values(artifact_dir=str(tmp_path / "gone")))
    job = _evaluate(client, model_id=model_id, dataset_id=dataset_id, text_column="text", label_column="sentiment")
    assert job["status"] == "failed" and job["error"].startswith("evaluation failed")
