"""Token classification end to end in eager mode (issue 17): a CoNLL upload trains an entity recogniser through the
API, which then tags raw texts (entities with character offsets) and pre-tokenized sentences, and is evaluated."""
from __future__ import annotations

import io

import worker.tasks  # noqa: F401  (registers the tasks, so eager sends run them in-process)

from .conftest import wait_for_job

NAMES, PLACES = ["Alice", "Bob", "Carol", "Dave"], ["Paris", "Berlin", "Lagos", "Lima"]


def _conll() -> bytes:
    lines = []
    for i in range(16):
        name, place = NAMES[i % 4], PLACES[(i // 4) % 4]
        words = [(name, "B-person"), ("Smith", "I-person"), ("flew", "O"), ("to", "O"), (place, "B-location")]
        lines += [f"{w}\t{t}" for w, t in words] + [""]
    return "\n".join(lines).encode()


def test_train_classify_and_evaluate_a_token_model(client, tiny_encoders):
    upload = client.post("/api/v1/datasets", data={"file": (io.BytesIO(_conll()), "ner.conll")},
                         content_type="multipart/form-data")
    assert upload.status_code == 201, upload.get_json()
    dataset_id = upload.get_json()["id"]
    body = {"dataset_id": dataset_id, "task_type": "token-classification", "encoder": str(tiny_encoders["bert"]),
            "epochs": 40, "batch_size": 8, "max_length": 16, "stride": 4, "learning_rate": 3e-3,
            "validation_split": 0.0, "dropout": 0.0, "seed": 1}
    response = client.post("/api/v1/jobs/train", json=body)
    assert response.status_code == 202, response.get_json()
    job = wait_for_job(client, response.get_json()["id"])
    assert job["status"] == "succeeded", job.get("error")
    assert job["task_type"] == "token-classification"
    model = client.get(f"/api/v1/models/{job['model_id']}").get_json()
    assert model["task_type"] == "token-classification"
    assert set(model["labels"]) == {"O", "B-person", "I-person", "B-location"}

    text = "Carol Smith flew to Lima"
    answer = client.post("/api/v1/predict", json={"model_id": model["id"], "texts": [text]})
    assert answer.status_code == 200, answer.get_json()
    entities = answer.get_json()["predictions"][0]["entities"]
    assert [(e["entity_group"], e["word"]) for e in entities] == [("person", "Carol Smith"), ("location", "Lima")]
    assert all(e["word"] == text[e["start"]:e["end"]] for e in entities)

    tagged = client.post("/api/v1/predict", json={"model_id": model["id"], "tokens": [text.split()]})
    assert tagged.status_code == 200, tagged.get_json()
    assert tagged.get_json()["predictions"][0]["tags"] == ["B-person", "I-person", "O", "O", "B-location"]

    evaluation = client.post("/api/v1/jobs/evaluate", json={"model_id": model["id"], "dataset_id": dataset_id})
    assert evaluation.status_code == 202, evaluation.get_json()
    evaluated = wait_for_job(client, evaluation.get_json()["id"])
    assert evaluated["status"] == "succeeded", evaluated.get("error")
    assert evaluated["metrics"]["f1"] == 1.0 and evaluated["metrics"]["examples"] == 16
