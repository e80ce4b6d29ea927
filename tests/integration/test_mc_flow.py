"""Multiple choice end to end in eager mode (issue 18): a SWAG-style CSV (3 or 4 endings per row, labels as
positions or texts) trains a tiny model through the API, which then answers choice questions (``/predict``), labels
the dataset in a classify job (stored, filtered, exported) and is evaluated (accuracy); bad inputs are 4xx."""
from __future__ import annotations

import csv
import io
import json

import worker.tasks  # noqa: F401  (registers the tasks, so eager sends run them in-process)

from tests.ml.test_mc_training import _examples, _gold, mc_rows

from .conftest import wait_for_job


def _csv(rows) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def _upload(client, data: bytes, name: str) -> int:
    response = client.post("/api/v1/datasets", data={"file": (io.BytesIO(data), name)},
                           content_type="multipart/form-data")
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def test_train_answer_classify_and_evaluate_a_multiple_choice_model(client, tiny_encoders):
    rows = mc_rows()
    dataset_id = _upload(client, _csv(rows), "swag.csv")
    body = {"dataset_id": dataset_id, "task_type": "multiple-choice", "encoder": str(tiny_encoders["bert"]),
            "epochs": 15, "batch_size": 8, "max_length": 24, "learning_rate": 3e-3, "validation_split": 0.0,
            "dropout": 0.0, "seed": 0}
    response = client.post("/api/v1/jobs/train", json=body)
    assert response.status_code == 202, response.get_json()
    job = wait_for_job(client, response.get_json()["id"])
    assert job["status"] == "succeeded", job.get("error")
    assert job["task_type"] == "multiple-choice"
    model = client.get(f"/api/v1/models/{job['model_id']}").get_json()
    assert model["task_type"] == "multiple-choice" and model["labels"] == ["0", "1", "2", "3"]

    examples, gold = _examples(rows), _gold(rows)
    questions = [{"context": e.context, "question": e.question, "choices": e.choices} for e in examples[:4]]
    answer = client.post("/api/v1/predict", json={"model_id": model["id"], "choice_questions": questions})
    assert answer.status_code == 200, answer.get_json()
    predictions = answer.get_json()["predictions"]
    assert [p["choice_index"] for p in predictions] == gold[:4]
    assert [p["choice"] for p in predictions] == [e.choices[g] for e, g in zip(examples[:4], gold)]
    assert all(len(p["scores"]) == len(p["choices"]) for p in predictions)
    assert predictions[0]["text"] == examples[0].context and predictions[0]["index"] == 0

    # the dataset itself, read with the model's columns (ending0..3, trailing empty cells: 3 choices)
    classify = client.post("/api/v1/jobs/classify", json={"model_id": model["id"], "dataset_id": dataset_id})
    assert classify.status_code == 202, classify.get_json()
    labelled = wait_for_job(client, classify.get_json()["id"])
    assert labelled["status"] == "succeeded", labelled.get("error")
    stored = client.get(f"/api/v1/jobs/{labelled['id']}/predictions?limit=100").get_json()["items"]
    assert [p["choice_index"] for p in stored] == gold
    assert [p["text_pair"] for p in stored] == ["Then"] * 16  # the question
    picked_one = client.get(f"/api/v1/jobs/{labelled['id']}/predictions?label=1").get_json()["items"]
    assert sorted(p["index"] for p in picked_one) == [i for i, g in enumerate(gold) if g == 1]
    exported = list(csv.DictReader(io.StringIO(
        client.get(f"/api/v1/jobs/{labelled['id']}/export?format=csv").get_data(as_text=True).lstrip("\ufeff"))))
    assert [int(r["choice_index"]) for r in exported] == gold
    assert json.loads(exported[1]["choices"]) == examples[1].choices
    lines = client.get(f"/api/v1/jobs/{labelled['id']}/export?format=jsonl").get_data(as_text=True).splitlines()
    assert [json.loads(line)["choice"] for line in lines] == [e.choices[g] for e, g in zip(examples, gold)]

    # the pages of the training job, the model and the classify job render (the results as stored)
    for page in (f"/jobs/{job['id']}", f"/models/{model['id']}", f"/jobs/{labelled['id']}",
                 f"/jobs/{labelled['id']}?label=1"):
        shown = client.get(page)
        assert shown.status_code == 200, page
    assert examples[0].context in client.get(f"/jobs/{labelled['id']}").get_data(as_text=True)

    evaluation = client.post("/api/v1/jobs/evaluate", json={"model_id": model["id"], "dataset_id": dataset_id})
    assert evaluation.status_code == 202, evaluation.get_json()
    evaluated = wait_for_job(client, evaluation.get_json()["id"])
    assert evaluated["status"] == "succeeded", evaluated.get("error")
    assert evaluated["metrics"]["accuracy"] == 1.0 and evaluated["metrics"]["examples"] == 16

    # bad inputs: texts to a multiple-choice model, one choice, a dataset without choices, a bad label
    texts = client.post("/api/v1/predict", json={"model_id": model["id"], "texts": ["hello"]})
    assert texts.status_code == 422 and texts.get_json()["error"]["code"] == "choice_questions_required"
    one = client.post("/api/v1/predict", json={"model_id": model["id"],
                                               "choice_questions": [{"context": "c", "choices": ["only"]}]})
    assert one.status_code == 422
    plain = _upload(client, b"text,label\nhello,pos\nbye,neg\n", "plain.csv")
    for path in ("classify", "evaluate"):
        refused = client.post(f"/api/v1/jobs/{path}", json={"model_id": model["id"], "dataset_id": plain})
        assert refused.status_code == 422 and refused.get_json()["error"]["code"] == "invalid_columns", path
    one_choice = [dict(r) for r in rows]
    one_choice[3].update(ending1="", ending2="", ending3="")  # found at submission: no job stops half-way on it
    refused = client.post("/api/v1/jobs/classify", json={"model_id": model["id"],
                                                         "dataset_id": _upload(client, _csv(one_choice), "one.csv")})
    assert refused.status_code == 422 and refused.get_json()["error"]["code"] == "too_few_choices"
    assert "row 4" in refused.get_json()["error"]["message"]
    bad = [dict(r) for r in rows]
    bad[2]["label"] = "9"
    refused = client.post("/api/v1/jobs/evaluate", json={"model_id": model["id"],
                                                         "dataset_id": _upload(client, _csv(bad), "bad.csv")})
    assert refused.status_code == 422 and refused.get_json()["error"]["code"] == "invalid_label"
    train_bad = client.post("/api/v1/jobs/train", json={**body, "dataset_id": plain})
    assert train_bad.status_code == 422 and train_bad.get_json()["error"]["code"] == "unknown_column"
