"""Multiple choice end to end in eager mode (issue 18): a SWAG-style CSV (3 or 4 endings per row, labels as
positions or texts) trains a tiny model through the API, which then answers choice questions (``/predict``), labels
the dataset in a classify job (stored, filtered, exported) and is evaluated (accuracy); bad inputs are 4xx."""
from __future__ import annotations

import csv
import io
import json

import worker.tasks  # noqa: F401  (registers the tasks, so eager sends run them in-process)

from tests.ml.test_mc_training import _examples, _gold, mc_rows

from .api_steps import ApiSteps, swag_csv



def test_train_answer_classify_and_evaluate_a_multiple_choice_model(client, tiny_encoders):
    steps = ApiSteps(client)
    rows = mc_rows()
    dataset_id = steps.upload(swag_csv(rows), "swag.csv")
    body = {"dataset_id": dataset_id, "task_type": "multiple-choice", "encoder": str(tiny_encoders["bert"]),
            "epochs": 15, "batch_size": 8, "max_length": 24, "learning_rate": 3e-3, "validation_split": 0.0,
            "dropout": 0.0, "seed": 0}
    job = steps.run_job("train", body, task_type="multiple-choice")
    model = steps.model(job["model_id"])
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
    labelled = steps.run_job("classify", {"model_id": model["id"], "dataset_id": dataset_id})
    stored = steps.predictions(labelled["id"], "?limit=100")
    assert [p["choice_index"] for p in stored] == gold
    assert [p["text_pair"] for p in stored] == ["Then"] * 16  # the question
    picked_one = steps.predictions(labelled["id"], "?label=1")
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

    evaluated = steps.run_job("evaluate", {"model_id": model["id"], "dataset_id": dataset_id})
    assert evaluated["metrics"]["accuracy"] == 1.0 and evaluated["metrics"]["examples"] == 16

    # bad inputs: texts to a multiple-choice model, one choice, a dataset without choices, a bad label
    texts = client.post("/api/v1/predict", json={"model_id": model["id"], "texts": ["hello"]})
    assert texts.status_code == 422 and texts.get_json()["error"]["code"] == "choice_questions_required"
    one = client.post("/api/v1/predict", json={"model_id": model["id"],
                                               "choice_questions": [{"context": "c", "choices": ["only"]}]})
    assert one.status_code == 422
    plain = steps.upload(b"text,label\nhello,pos\nbye,neg\n", "plain.csv")
    for path in ("classify", "evaluate"):
        refused = client.post(f"/api/v1/jobs/{path}", json={"model_id": model["id"], "dataset_id": plain})
        assert refused.status_code == 422 and refused.get_json()["error"]["code"] == "invalid_columns", path
    one_choice = [dict(r) for r in rows]
    one_choice[3].update(ending1="", ending2="", ending3="")  # found at submission: no job stops half-way on it
    refused = client.post("/api/v1/jobs/classify", json={
        "model_id": model["id"], "dataset_id": steps.upload(swag_csv(one_choice), "one.csv")})
    assert refused.status_code == 422 and refused.get_json()["error"]["code"] == "too_few_choices"
    assert "row 4" in refused.get_json()["error"]["message"]
    bad = [dict(r) for r in rows]
    bad[2]["label"] = "9"
    refused = client.post("/api/v1/jobs/evaluate", json={
        "model_id": model["id"], "dataset_id": steps.upload(swag_csv(bad), "bad.csv")})
    assert refused.status_code == 422 and refused.get_json()["error"]["code"] == "invalid_label"
    train_bad = client.post("/api/v1/jobs/train", json={**body, "dataset_id": plain})
    assert train_bad.status_code == 422 and train_bad.get_json()["error"]["code"] == "unknown_column"
