"""End to end in Celery eager mode: train -> download -> plain transformers gives the platform's probabilities;
a transformers checkpoint built here -> import -> classify and evaluate through the worker like a trained model."""
from __future__ import annotations

import io
import zipfile

import pytest

import worker.tasks  # noqa: F401  (registers the tasks, so eager sends run them in-process)
from tests.web.test_model_import import LABELS, folder_files, hf_checkpoint, post, zip_bytes

from .conftest import sample_csv, upload, wait_for_job

TEXTS = ["@united thanks, the crew was amazing!", "worst flight ever, lost my bag", "flight 123 lands at 5pm",
         "I love this!"]


def _classify(client, model_id: int, texts=TEXTS) -> list[list[float]]:
    response = client.post("/api/v1/jobs/classify", json={"model_id": model_id, "texts": texts})
    assert response.status_code == 202, response.get_json()
    job = wait_for_job(client, response.get_json()["id"])
    assert job["status"] == "succeeded", job["error"]
    items = client.get(f"/api/v1/jobs/{job['id']}/predictions?limit=100").get_json()["items"]
    return [[item["scores"][label] for label in LABELS] for item in items]


def _hf_probabilities(folder, texts=TEXTS) -> list[list[float]]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(str(folder), local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    with torch.no_grad():
        return model(**tokenizer(texts, truncation=True, padding=True, return_tensors="pt")).logits.softmax(-1).tolist()


def _close(got, expected, tolerance=1e-5) -> None:
    for row_got, row_expected in zip(got, expected, strict=True):
        assert row_got == pytest.approx(row_expected, abs=tolerance)


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_trained_model_downloads_as_transformers_and_imports_back(client, tiny_encoders, family, tmp_path):
    dataset_id = upload(client, sample_csv(40))
    body = {"dataset_id": dataset_id, "text_column": "text", "label_column": "sentiment", "family": family,
            "encoder": str(tiny_encoders[family]), "epochs": 1, "batch_size": 8, "max_length": 32,
            "validation_split": 0.25, "seed": 1, "name": f"air-{family}"}
    if family == "bert":
        body["pooling"] = "pooler"
    response = client.post("/api/v1/jobs/train", json=body)
    assert response.status_code == 202, response.get_json()
    job = wait_for_job(client, response.get_json()["id"])
    assert job["status"] == "succeeded", job["error"]
    platform = _classify(client, job["model_id"])

    download = client.get(f"/api/v1/models/{job['model_id']}/download")
    assert download.status_code == 200
    data = download.get_data()
    zipfile.ZipFile(io.BytesIO(data)).extractall(tmp_path / "hf")
    _close(_hf_probabilities(tmp_path / "hf"), platform)
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "tweets (40 rows: 30 for training, 10 for validation)" in card

    imported = post(client, data, name=f"air-{family}", filename=download.headers["Content-Disposition"]
                    .split('"')[1])
    assert imported.status_code == 201, imported.get_json()
    assert imported.get_json()["version"] == 2  # the same name: the next version
    _close(_classify(client, imported.get_json()["id"]), platform)


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_imported_checkpoint_classifies_and_evaluates(client, family, tmp_path):
    checkpoint = hf_checkpoint(family, tmp_path / "hf", seed=5)
    response = post(client, zip_bytes(folder_files(checkpoint)), name="hub-model")
    assert response.status_code == 201, response.get_json()
    model_id = response.get_json()["id"]
    _close(_classify(client, model_id), _hf_probabilities(checkpoint))

    dataset_id = upload(client, sample_csv(20))
    response = client.post("/api/v1/jobs/evaluate", json={"model_id": model_id, "dataset_id": dataset_id,
                                                          "text_column": "text", "label_column": "sentiment"})
    assert response.status_code == 202, response.get_json()
    job = wait_for_job(client, response.get_json()["id"])
    assert job["status"] == "succeeded", job["error"]
    assert 0.0 <= job["metrics"]["accuracy"] <= 1.0 and "macro_f1" in job["metrics"]
    # the model records no training columns: evaluation asks for them instead of guessing
    response = client.post("/api/v1/jobs/evaluate", json={"model_id": model_id, "dataset_id": dataset_id})
    assert response.status_code == 422 and response.get_json()["error"]["code"] == "missing_column"
